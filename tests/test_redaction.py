"""harness.redaction: one function family for config trees, argv, URLs and free text."""

from __future__ import annotations

import io
import os
import sys

import pyarrow.parquet as pq
import pytest

from harness import redaction
from harness.config import TargetConfig
from harness.record.schema import RequestRecord
from harness.record.writer import RequestWriter
from harness.redaction import (
    MASK,
    REDACTED,
    redact_argv,
    redact_text,
    redact_tree,
    redact_url,
    redact_values,
)
from harness.targets.client import resolve_api_key
from harness.targets.errors import TargetError

KEY = "S3NTINEL-unit-0123456789"


@pytest.fixture(autouse=True)
def _fresh_registry():
    redaction.clear()
    yield
    redaction.clear()


# -- config trees ----------------------------------------------------------------------------


def test_tree_hides_secret_keys_flags_urls_and_known_values():
    redaction.register(KEY)
    cfg = {
        "arms": {
            "cloud": {
                "api_key_env": "OPENAI_API_KEY",  # a name: kept
                "base_url": "https://user:pw-secret-1@api.example.com/v1?api-version=2024&key=q1",
                "extra_body": {"api_key": "sk-live-123", "top_k": 5},
            },
            "selfhosted": {
                "launch": {
                    "args": ["--max-num-seqs", "256", "--api-key", "a1b2c3d4", "--hf-token=t9"],
                    "env": {"HF_TOKEN": "hf_abc", "CUDA_VISIBLE_DEVICES": "0"},
                }
            },
        },
        "note": f"the key {KEY} was pasted here",
        "retry_on": ["rate_limited", "timeout"],
        "sizes": [1, 2, 3],
        "password": None,
    }
    out = redact_tree(cfg)
    cloud, launch = out["arms"]["cloud"], out["arms"]["selfhosted"]["launch"]
    assert cloud["api_key_env"] == "OPENAI_API_KEY"
    assert cloud["base_url"] == "https://***@api.example.com/v1?api-version=2024&key=***"
    assert cloud["extra_body"] == {"api_key": REDACTED, "top_k": 5}
    assert launch["args"] == ["--max-num-seqs", "256", "--api-key", MASK, "--hf-token=***"]
    assert launch["env"] == {"HF_TOKEN": REDACTED, "CUDA_VISIBLE_DEVICES": "0"}
    assert out["note"] == "the key *** was pasted here"
    assert out["retry_on"] == ["rate_limited", "timeout"] and out["sizes"] == [1, 2, 3]
    assert out["password"] is None
    assert cfg["arms"]["cloud"]["extra_body"]["api_key"] == "sk-live-123"  # a copy


def test_tree_secrets_are_found():
    cfg = {
        "a": {"api_key": "tree-key-1", "api_key_env": "NAME_ONLY"},
        "b": {"base_url": "http://u:tree-pw-2@h/v1?token=tree-tok-3&api-version=1"},
        "c": ["--api-key", "tree-arg-4", "--port", "1"],
    }
    assert set(redaction.tree_secrets(cfg)) == {
        "tree-key-1",
        "tree-pw-2",
        "tree-tok-3",
        "tree-arg-4",
    }


# -- argv ------------------------------------------------------------------------------------


def test_argv_flags_overrides_and_urls():
    argv = [
        "vllm",
        "serve",
        "--api-key",
        "k-space-1",
        "--api-key=k-equals-2",
        "--hf-token",  # vLLM's optional-value flag: the next word is a flag, kept
        "--max-num-batched-tokens",
        "8192",
        "+arms.cloud.api_key=sk-1",
        "x.token=t",
        "load.rate=2",
        "arms.c.base_url=http://u:pw-url-3@h:1/v1?key=qk-4&api-version=2",
        "+arms.s.launch.args=[--api-key,k-list-5]",
    ]
    assert redact_argv(argv) == [
        "vllm",
        "serve",
        "--api-key",
        MASK,
        "--api-key=***",
        "--hf-token",
        "--max-num-batched-tokens",
        "8192",
        f"+arms.cloud.api_key={REDACTED}",
        f"x.token={REDACTED}",
        "load.rate=2",
        "arms.c.base_url=http://***@h:1/v1?key=***&api-version=2",
        "+arms.s.launch.args=[--api-key,***]",
    ]
    found = redaction.argv_word_secrets(argv)
    for value in ("k-space-1", "k-equals-2", "pw-url-3", "qk-4", "k-list-5", "sk-1"):
        assert value in found
    assert "8192" not in found and "2" not in found


def test_argv_hydra_dict_override_secrets():
    word = "+arms.s.launch.env={HF_TOKEN: hf-dict-value-1,OTHER:x}"
    assert redaction.argv_word_secrets([word]) == ["hf-dict-value-1"]
    word = "+arms.r={target:openai,base_url:'http://u:pw-dict-2@h/v1?key=qk-dict-3&api-version=1'}"
    assert redaction.argv_word_secrets([word]) == ["pw-dict-2", "qk-dict-3"]


# -- URLs ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url,shown",
    [
        ("https://user:pw@h.example.com/v1", "https://***@h.example.com/v1"),
        ("https://tok3n-as-user@h/v1", "https://***@h/v1"),
        (
            "https://h/openai?api-version=2024-06-01&api-key=a&key=b&token=c&sig=d",
            "https://h/openai?api-version=2024-06-01&api-key=***&key=***&token=***&sig=***",
        ),
        (
            "https://h/x?access_token=a&signature=b&password=c&secret=d&api_key=e&keep=1#frag",
            "https://h/x?access_token=***&signature=***&password=***&secret=***&api_key=***"
            "&keep=1#frag",
        ),
        ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
        ("https://h/v1?api-version=2024-06-01", "https://h/v1?api-version=2024-06-01"),
    ],
)
def test_urls(url, shown):
    assert redact_url(url) == shown


def test_url_secrets_skip_short_user_names_when_a_password_is_there():
    assert redaction.url_secrets("http://user:pw-1234@h/v1?key=k-5678&api-version=1") == [
        "pw-1234",
        "k-5678",
    ]


# -- free text -------------------------------------------------------------------------------


def test_free_text():
    redaction.register(KEY)
    cases = {
        f"upstream said: invalid key {KEY}!": "upstream said: invalid key ***!",
        "Authorization: Bearer abcdef123456": "Authorization: Bearer ***",
        "Authorization: Basic dXNlcjpwYXNz": "Authorization: Basic ***",
        "Incorrect API key provided: sk-abc1********-xyz.": "Incorrect API key provided: ***",
        "using sk-proj-abcdefghijklmnop1234": "using ***",
        "GET http://u:p@h/v1/models?key=zz failed": "GET http://***@h/v1/models?key=*** failed",
        "vllm serve m --api-key s3 --port 1": "vllm serve m --api-key *** --port 1",
        "args: {'api_key': ['s3cr3t'], 'hf_token': None}": "args: {'api_key': ['***'], 'hf_token': None}",
        "api_key=abc123 max_tokens=5": "api_key=*** max_tokens=5",
        "--max-num-batched-tokens 8192 --max-tokens 5": "--max-num-batched-tokens 8192 --max-tokens 5",
        "the bearer of bad news": "the bearer of bad news",
        "plain text stays": "plain text stays",
    }
    for text, shown in cases.items():
        assert redact_text(text) == shown, text
    assert redact_text("extra value xyz-987", ("xyz-987",)) == "extra value ***"
    assert redact_text("") == ""


def test_values_only_on_the_hot_path():
    assert not redaction.active()
    text = "Bearer abcdef123456 and sk-proj-abcdefghijklmnop"  # shapes: untouched here
    assert redact_values(text) is text  # identity while nothing is registered
    redaction.register(KEY, "second-secret-value", None, "", "abc", "EMPTY")
    assert redaction.active()
    assert set(redaction.registered()) == {KEY, "second-secret-value"}  # short / dummy skipped
    assert redact_values(f"a {KEY} b second-secret-value c") == "a *** b *** c"
    assert redact_values(text) == text
    redaction.register(KEY + "-longer")  # longest first: no partial leftovers
    assert redact_values(f"x {KEY}-longer y") == "x *** y"


# -- finding the secrets ---------------------------------------------------------------------


def test_target_secrets(monkeypatch):
    monkeypatch.setenv("HARNESS_T_KEY", "env-key-value-1")
    t = TargetConfig(kind="vllm", model="m", api_key_env="HARNESS_T_KEY")
    t.base_url = "http://user:url-pw-2@h:1/v1?key=url-qk-3&api-version=1"
    t.launch.args = ["--api-key", "arg-key-4", "--max-num-seqs", "256"]
    t.launch.env = {"HF_TOKEN": "launch-env-5", "VLLM_LOGGING_LEVEL": "DEBUG"}
    t.extra_body = {"api_key": "body-key-6"}
    found = redaction.target_secrets(t)
    assert set(found) == {f"{p}" for p in (
        "env-key-value-1", "url-pw-2", "url-qk-3", "arg-key-4", "launch-env-5", "body-key-6"
    )}  # fmt: skip
    redaction.register_targets({"a": t}, environ={"HARNESS_T_KEY": "env-key-value-1"})
    assert "DEBUG" not in redaction.registered()


def test_environment_secrets():
    env = {
        "OPENAI_API_KEY": "sk-from-env-1",
        "MY_SERVICE_TOKEN": "tok-from-env-2",
        "SHORT_TOKEN": "abc",  # too short to be found by its name alone
        "PATH": "/usr/bin",
        "HF_HUB_DISABLE_TOKEN": "1",
        "WEIRD_SECRET": "has a space",
    }
    assert set(redaction.env_secrets(env)) == {"sk-from-env-1", "tok-from-env-2"}


def test_env_names_and_pasted_keys():
    for ok in ("OPENAI_API_KEY", "my_key", "K"):
        assert redaction.looks_like_env_name(ok)
    for bad in ("sk-proj-abc123", "S3NT-pasted", "abcDEF1234567890ghijKL", "1ABC", "a b"):
        assert not redaction.looks_like_env_name(bad)


def test_a_key_in_api_key_env_is_not_shown():
    t = TargetConfig(kind="openai", model="m", base_url="https://h/v1", api_key_env=KEY)
    with pytest.raises(TargetError) as info:
        resolve_api_key("cloud", t)
    assert "arms.cloud.api_key_env" in str(info.value) and KEY not in str(info.value)
    assert KEY in redaction.registered()  # anything printing it next masks it


# -- where it is applied ---------------------------------------------------------------------


def test_request_writer_masks_text_columns(tmp_path):
    w = RequestWriter(tmp_path)
    base = dict(run_id="r", experiment="e", arm="a", target_kind="sim_vllm", attempt=0)
    w.add_record(RequestRecord(request_id="0", status="ok", output_text=f"echo {KEY}", **base))
    redaction.register(KEY)
    w.add_record(
        RequestRecord(
            request_id="1",
            status="error",
            error_message=f"HTTP 400: you sent Bearer {KEY}",
            output_text=None,
            **base,
        )
    )
    w.flush()
    rows = pq.read_table(tmp_path / "requests").to_pylist()
    assert [r["output_text"] for r in rows] == ["echo ***", None]
    assert rows[1]["error_message"] == "HTTP 400: you sent Bearer ***"
    assert rows[0]["request_id"] == "0"


def test_console_stream_and_logging(monkeypatch):
    redaction.register(KEY)
    buf = io.StringIO()
    monkeypatch.setattr(sys, "stdout", buf)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    redaction.install_console_redaction()
    redaction.install_console_redaction()  # idempotent: one wrapper
    assert isinstance(sys.stdout, redaction.RedactingStream)
    assert sys.stdout.wrapped is buf
    print(f"arm cloud -> http://u:pw@h/v1 key {KEY}")
    sys.stdout.writelines([f"{KEY}\n"])
    sys.stdout.flush()
    assert buf.getvalue() == "arm cloud -> http://***@h/v1 key ***\n***\n"


def test_tee_filters_a_stream_into_a_log(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("$ header\n")
    r, w = os.pipe()
    os.write(w, f"non-default args: {{'api_key': '{KEY}'}}\npartial {KEY}".encode())
    os.close(w)
    redaction.tee(r, str(log), [KEY])
    os.close(r)
    assert log.read_text() == "$ header\nnon-default args: {'api_key': '***'}\npartial ***"


def test_preflight_error_masks_url_credentials():
    from harness.targets.preflight import preflight

    t = TargetConfig(kind="vllm", model="m", base_url="http://user:pw-preflight-1@127.0.0.1:9/v1")
    with pytest.raises(TargetError) as info:
        preflight("selfhosted", t, timeout_s=1)
    assert "pw-preflight-1" not in str(info.value) and "***@127.0.0.1" in str(info.value)
