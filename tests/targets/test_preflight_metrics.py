"""Preflight checks and the /metrics scraper against the scripted server."""

from __future__ import annotations

import socket
import time

import pyarrow as pa
import pytest

from harness.record.schema import METRICS_SCHEMA
from harness.targets.errors import TargetError
from harness.targets.metrics import MetricsScraper, metrics_url, parse_prometheus
from harness.targets.preflight import join_url, preflight, preflight_all
from tests.targets.scripted_server import make_target


def test_preflight_ok(server):
    server.models = ["other", "test-model"]
    assert preflight("selfhosted", make_target(server.base_url)) == ["other", "test-model"]
    assert server.requests[-1]["path"] == "/v1/models"


def test_preflight_model_missing_lists_ids(server):
    server.models = ["llama-a", "llama-b"]
    with pytest.raises(TargetError) as e:
        preflight("selfhosted", make_target(server.base_url))
    msg = str(e.value)
    assert "arms.selfhosted" in msg and server.base_url + "/models" in msg
    assert "'test-model' is not served" in msg and "llama-a, llama-b" in msg


def test_preflight_connection_refused():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(
        TargetError,
        match=rf"arms\.cloud: preflight http://127.0.0.1:{port}/v1/models: cannot connect",
    ):
        preflight("cloud", make_target(f"http://127.0.0.1:{port}/v1"))


def test_preflight_unauthorized_hides_key(server, monkeypatch):
    key = "sk-live-PREFLIGHTSECRET-42"
    monkeypatch.setenv("HARNESS_PF_KEY", key)
    server.models_status = 401
    t = make_target(server.base_url, kind="openai", api_key_env="HARNESS_PF_KEY")
    with pytest.raises(TargetError) as e:
        preflight("cloud", t)
    msg = str(e.value)
    assert "authentication failed (HTTP 401" in msg and "$HARNESS_PF_KEY" in msg
    assert key not in msg
    assert server.requests[-1]["headers"]["authorization"] == f"Bearer {key}"


def test_preflight_falls_back_to_one_token(server):
    server.models_status = 404
    t = make_target(server.base_url)
    assert preflight("selfhosted", t) == []
    last = server.requests[-1]
    assert last["path"] == "/v1/chat/completions" and last["body"]["max_tokens"] == 1


def test_join_url_keeps_query_after_path():
    base = "https://x.openai.azure.com/openai/deployments/d?api-version=2024-06-01"
    assert join_url(base, "/models") == (
        "https://x.openai.azure.com/openai/deployments/d/models?api-version=2024-06-01"
    )
    assert join_url("http://h:8000/v1/", "/models") == "http://h:8000/v1/models"
    assert join_url("http://h:8000/v1", "/chat/completions") == "http://h:8000/v1/chat/completions"


def test_preflight_base_url_with_query_string(server):
    """An Azure-style base_url: /models goes on the path, the api-version query is kept."""
    base = server.base_url + "?api-version=2024-06-01"
    assert preflight("cloud", make_target(base)) == ["test-model"]
    assert server.requests[-1]["path"] == "/v1/models?api-version=2024-06-01"
    server.models_status = 404  # the one-token fallback joins the same way
    assert preflight("cloud", make_target(base)) == []
    assert server.requests[-1]["path"] == "/v1/chat/completions?api-version=2024-06-01"


def test_preflight_all_names_every_failing_arm(server):
    server.models = ["x"]
    arms = {"a": make_target(server.base_url), "b": make_target(server.base_url)}
    arms["b"].preflight = False
    with pytest.raises(TargetError) as e:
        preflight_all(arms)
    assert "arms.a" in str(e.value) and "arms.b" not in str(e.value)


PROM = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m",engine="0"} 3.0
vllm:num_requests_waiting{model_name="m"} 1
vllm:kv_cache_usage_perc{model_name="m"} 0.25
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{model_name="m"} 1234 1700000000000
vllm:prompt_tokens_created{model_name="m"} 1.7e9
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"} 5
vllm:time_to_first_token_seconds_bucket{le="+Inf",model_name="m"} 7
vllm:time_to_first_token_seconds_sum{model_name="m"} 0.9
vllm:time_to_first_token_seconds_count{model_name="m"} 7
vllm:weird{path="a\\"b,c\\\\d",model_name="m"} NaN
vllm:no_labels 2
python_gc_objects_collected_total{generation="0"} 42
garbage line without value
"""


def test_parse_prometheus():
    rows = parse_prometheus(PROM)
    got = {(n, lab): v for n, lab, v in rows}
    assert got[("vllm:num_requests_running", "engine=0,model_name=m")] == 3.0
    assert got[("vllm:num_requests_waiting", "model_name=m")] == 1
    assert got[("vllm:kv_cache_usage_perc", "model_name=m")] == 0.25
    assert got[("vllm:prompt_tokens_total", "model_name=m")] == 1234
    assert got[("vllm:time_to_first_token_seconds_sum", "model_name=m")] == 0.9
    assert got[("vllm:time_to_first_token_seconds_count", "model_name=m")] == 7
    assert got[("vllm:no_labels", "")] == 2
    weird = got[("vllm:weird", 'model_name=m,path=a"b,c\\d')]
    assert weird != weird  # NaN kept
    assert not any(n.endswith(("_bucket", "_created")) for n, _, _ in rows)
    assert not any(n.startswith("python_") for n, _, _ in rows)
    assert len(rows) == 8
    assert len(parse_prometheus(PROM, prefixes=())) == 9


def test_metrics_url():
    assert metrics_url("http://h:8000/v1") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert metrics_url("https://h/prefix/v1") == "https://h/prefix/metrics"


def test_scraper_thread(server):
    server.metrics_text = PROM
    batches = []
    t = make_target(server.base_url)
    s = MetricsScraper("selfhosted", t, run_id="run1", interval_s=0.05, on_rows=batches.append)
    with s:
        time.sleep(0.3)
    assert len(batches) >= 4 and s.errors == 0
    rows = [r for b in batches for r in b]
    assert {r["arm"] for r in rows} == {"selfhosted"} and {r["run_id"] for r in rows} == {"run1"}
    ts = sorted({r["t"] for r in rows})
    assert len(ts) == len(batches) and abs(ts[-1] / 1e9 - time.time()) < 5
    table = pa.Table.from_pylist(rows, schema=METRICS_SCHEMA)  # fits the schema
    assert table.num_rows == len(rows)


def test_scraper_survives_a_dead_endpoint():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    t = make_target(f"http://127.0.0.1:{port}/v1")
    s = MetricsScraper("a", t, run_id="r", interval_s=0.02, on_rows=lambda rows: None)
    s.start()
    time.sleep(0.15)
    s.stop()
    assert s.errors >= 2 and s.scrapes == 0
