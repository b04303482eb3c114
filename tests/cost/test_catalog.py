"""Price catalogs: our YAML, LiteLLM's JSON, bad entries named by file and entry, staleness."""

from __future__ import annotations

import datetime as dt
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from harness.cost.catalog import (
    CatalogError,
    load_api_catalog,
    load_gpu_catalog,
    lookup_model,
    stale_entries,
)

ROOT = Path(__file__).resolve().parents[2]


def _yaml(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_shipped_catalogs_load_and_are_dated():
    api = load_api_catalog([ROOT / "catalogs" / "api_prices.yaml"])
    gpu = load_gpu_catalog(ROOT / "catalogs" / "gpu_prices.yaml")
    assert api["gpt-4o-mini"].input == Decimal("0.15") and api["gpt-4o-mini"].output == Decimal(
        "0.60"
    )
    assert api["gpt-4o-mini"].batch_input == Decimal("0.075")
    # the harness records OpenAI-compatible usage: cached tokens are inside prompt_tokens,
    # for Claude behind such an endpoint too (billing them on top would charge them twice)
    assert api["claude-sonnet-4"].usage == "includes_cached"
    assert api["gpt-4o"].usage == "includes_cached"
    assert all(e.source for e in api.values()) and all(e.as_of for e in gpu.values())
    assert gpu["h100-80gb-x4"].gpus == 4


def test_litellm_format_reads_per_token_prices(tmp_path):
    doc = {
        "sample_spec": {"input_cost_per_token": 0},
        "my-model": {
            "input_cost_per_token": 1.5e-07, "output_cost_per_token": 6e-07,
            "cache_read_input_token_cost": 7.5e-08, "input_cost_per_token_batches": 7.5e-08,
            "output_cost_per_token_batches": 3e-07, "litellm_provider": "openai", "mode": "chat",
        },
        "claude-x": {"input_cost_per_token": 3e-06, "output_cost_per_token": 1.5e-05,
                     "cache_read_input_token_cost": 3e-07,
                     "cache_creation_input_token_cost": 3.75e-06,
                     "litellm_provider": "anthropic"},
        "dall-e": {"output_cost_per_pixel": 1e-8, "litellm_provider": "openai"},
        "gpt-image-1": {"input_cost_per_token": 5e-06, "litellm_provider": "azure"},
        "broken": {"input_cost_per_token": -1, "output_cost_per_token": 1e-6},
    }  # fmt: skip
    p = tmp_path / "model_prices_and_context_window.json"
    p.write_text(json.dumps(doc), encoding="utf-8")
    os.utime(p, (1_750_000_000, 1_750_000_000))  # 2025-06-15
    cat = load_api_catalog([p])
    m = cat["my-model"]
    assert (m.input, m.output, m.cached_input) == (
        Decimal("0.15"),
        Decimal("0.6"),
        Decimal("0.075"),
    )
    assert (m.batch_input, m.batch_output) == (Decimal("0.075"), Decimal("0.3"))
    assert m.cache_write == m.input  # not given: priced as input
    assert m.as_of == dt.date(2025, 6, 15) and "LiteLLM" in m.source
    assert cat["claude-x"].usage == "includes_cached" and cat["claude-x"].cache_write == Decimal(
        "3.75"
    )
    assert "dall-e" not in cat and "sample_spec" not in cat
    # a real LiteLLM file has entries with one price only: skipped, and named when used
    assert "gpt-image-1" not in cat and "broken" not in cat
    with pytest.raises(CatalogError, match=r"gpt-image-1\.output_cost_per_token: missing price"):
        lookup_model(cat, "gpt-image-1")
    with pytest.raises(CatalogError, match=r"broken\.input_cost_per_token: .*>= 0"):
        lookup_model(cat, "broken")


def test_later_catalogs_override_earlier(tmp_path):
    a = _yaml(
        tmp_path, "models: {m: {input: 1, output: 2, as_of: 2025-01-01, source: a}}", "a.yaml"
    )
    b = _yaml(
        tmp_path, "models: {m: {input: 3, output: 4, as_of: 2025-02-01, source: b}}", "b.yaml"
    )
    assert load_api_catalog([a, b])["m"].input == 3


@pytest.mark.parametrize(
    "entry, match",
    [
        ("{input: 1, as_of: 2025-01-01, source: s}", r"models\.bad\.output: missing price"),
        ("{input: -1, output: 1, as_of: 2025-01-01, source: s}", r"models\.bad\.input: .*>= 0"),
        ("{input: x, output: 1, as_of: 2025-01-01, source: s}", r"models\.bad\.input: expected a number"),
        ("{input: 1, output: 1, source: s}", r"models\.bad: every entry needs as_of"),
        ("{input: 1, output: 1, as_of: soon, source: s}", r"models\.bad\.as_of: expected a date"),
        ("{input: 1, output: 1, as_of: 2025-01-01, source: s, ouput: 2}", r"unknown field\(s\) ouput"),
        ("{input: 1, output: 1, as_of: 2025-01-01, source: s, usage: some}", r"models\.bad\.usage"),
    ],
)  # fmt: skip
def test_bad_api_entries_name_the_file_and_entry(tmp_path, entry, match):
    p = _yaml(tmp_path, f"models:\n  bad: {entry}\n")
    with pytest.raises(CatalogError, match=match) as e:
        load_api_catalog([p])
    assert str(p) in str(e.value)


def test_bad_gpu_entries_and_files(tmp_path):
    p = _yaml(
        tmp_path,
        "instances: {g: {gpus: 0, usd_per_hour: {on_demand: 1}, as_of: 2025-01-01, source: s}}",
    )
    with pytest.raises(CatalogError, match=r"instances\.g\.gpus: expected an integer >= 1"):
        load_gpu_catalog(p)
    p = _yaml(
        tmp_path, "instances: {g: {gpus: 1, usd_per_hour: {spot: 1}, as_of: 2025-01-01, source: s}}"
    )
    with pytest.raises(CatalogError, match=r"needs at least on_demand"):
        load_gpu_catalog(p)
    p = _yaml(
        tmp_path,
        "instances: {g: {gpus: 1, usd_per_hour: {on_demand: 1, lease: 2}, as_of: 2025-01-01, source: s}}",
    )
    with pytest.raises(CatalogError, match=r"unknown purchase mode\(s\) lease"):
        load_gpu_catalog(p)
    with pytest.raises(CatalogError, match="not found"):
        load_gpu_catalog(tmp_path / "missing.yaml")
    p = _yaml(tmp_path, "models: [", "broken.yaml")
    with pytest.raises(CatalogError, match=r"broken\.yaml: not valid"):
        load_api_catalog([p])


def test_sim_models_are_priced_as_what_they_imitate_and_staleness():
    api = load_api_catalog([ROOT / "catalogs" / "api_prices.yaml"])
    assert lookup_model(api, "sim-gpt-4o-mini") is api["gpt-4o-mini"]
    assert lookup_model(api, "sim-unknown") is None
    dates = {"a": dt.date(2025, 1, 1), "b": dt.date(2025, 6, 1)}
    assert stale_entries(dates, dt.date(2025, 7, 1), 100) == ["a"]
    assert stale_entries(dates, dt.date(2025, 7, 1), 181) == []
