"""Secrets on disk: a real short experiment with a sentinel key passed every way a user might,
then every file of the run directory and the console are searched for it (slow: processes).

Three arms, mirrored:

* ``cloud``: the embedded simulator, its key from the variable named by ``api_key_env``;
* ``selfhosted``: a managed ``vllm serve`` (the stand-in ``tests/targets/fake_vllm.py``) with
  ``--api-key`` in ``launch.args`` and ``HF_TOKEN`` in ``launch.env``, both given as Hydra
  overrides (so they are in ``sys.argv`` too); the stand-in prints both at startup, as vLLM
  prints its arguments, and echoes the request's ``Authorization`` header and path in every
  answer (and in an HTTP 400 error body every 4th request);
* ``remote``: an ``openai`` target whose ``base_url`` carries user-info and ``?key=`` (next to
  a harmless ``api-version``), pointed at the same stand-in, ``/metrics`` scraping on (the
  failing scrape of a user-info URL is logged).

Each channel has its own sentinel value, so one registration cannot hide a gap in another.
Run once with the load in the main process and once in a locust worker process (which
registers the secrets itself, from the spec's arms and its own environment).
"""

from __future__ import annotations

import json
import secrets
import socket
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.load.e2e import ROOT, manifest, only_run_dir, read_rows, run_harness, smoke_args

pytestmark = pytest.mark.slow

MARK = "S3NTINEL"
FAKE = ROOT / "tests" / "targets" / "fake_vllm.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sentinel(channel: str) -> str:
    return f"{MARK}{channel}{secrets.token_hex(6)}"


def _hits(run_root: Path, values: list[str]) -> list[str]:
    """Every place under ``run_root`` where a sentinel (or the common marker) appears."""
    needles = [v.encode() for v in values] + [MARK.encode()]
    found = []
    for path in sorted(run_root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        found += [f"{path}: bytes" for n in needles if n in data]
        if path.suffix == ".parquet":  # compressed: look at the decoded strings too
            table = pq.read_table(path)
            for name in table.column_names:
                if not pa.types.is_string(table.schema.field(name).type):
                    continue
                for v in table.column(name).to_pylist():
                    if v and any(n.decode() in v for n in needles):
                        found.append(f"{path}: column {name}: {v[:200]!r}")
    return found


@pytest.mark.parametrize("workers", [0, 1], ids=["local", "worker-process"])
def test_no_secret_reaches_the_run_directory_or_the_console(reports, workers):
    port = _free_port()
    s = {c: _sentinel(c) for c in ("sim", "self", "remote", "arg", "lenv", "pw", "qk")}
    env = {
        "HARNESS_E2E_SIM_KEY": s["sim"],
        "HARNESS_E2E_SELF_KEY": s["self"],
        "HARNESS_E2E_REMOTE_KEY": s["remote"],
    }
    url = f"http://user:{s['pw']}@127.0.0.1:{port}/v1?key={s['qk']}&api-version=2024-06-01"
    launch = (
        f"{{enabled:true,command:['{sys.executable}','{FAKE}'],port:{port},"
        f"startup_timeout_s:30,args:[--api-key,'{s['arg']}',--echo,--print-env,HF_TOKEN],"
        f"env:{{HF_TOKEN:'{s['lenv']}'}}}}"
    )
    args = smoke_args(
        reports,
        "load.arrival=constant",
        "load.rate=4",
        "load.duration_s=3",
        "workload.output_tokens.mean=8",
        f"load.workers={workers}",  # 1: rows are written by a separate locust worker process
        "+arms.cloud.api_key_env=HARNESS_E2E_SIM_KEY",
        "arms.selfhosted.target=vllm",
        "+arms.selfhosted.api_key_env=HARNESS_E2E_SELF_KEY",
        f"+arms.selfhosted.launch={launch}",
        f"+arms.remote={{target:openai,client:lean,base_url:'{url}',"
        "api_key_env:HARNESS_E2E_REMOTE_KEY,preflight:false,scrape_metrics:true}",
    )
    res = run_harness(args, env=env)
    console = res.stdout + res.stderr
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    run_dir = only_run_dir(reports)

    # zero hits, everywhere
    assert MARK not in console, [line for line in console.splitlines() if MARK in line]
    assert _hits(reports, list(s.values())) == []

    # ... and not because nothing was written: each channel reached the disk, masked
    m = manifest(run_dir)
    assert m["status"] == "completed"
    assert m["arms"]["remote"]["base_url"] == (
        f"http://***@127.0.0.1:{port}/v1?key=***&api-version=2024-06-01"
    )
    assert m["arms"]["remote"]["api_key_env"] == "HARNESS_E2E_REMOTE_KEY"
    launch_cfg = m["config"]["arms"]["selfhosted"]["launch"]
    assert launch_cfg["args"][:2] == ["--api-key", "***"]
    assert launch_cfg["env"]["HF_TOKEN"] == "***redacted***"
    argv = " ".join(m["argv"])
    assert "--api-key" in argv and "HF_TOKEN" in argv and "api-version=2024-06-01" in argv
    log = (run_dir / "vllm-selfhosted.log").read_text()
    assert "--api-key ***" in log  # the launcher's command line
    assert "'api_key': '***'" in log and "env HF_TOKEN=***" in log  # the server's own output
    df = read_rows(run_dir)
    assert set(df.arm) == {"cloud", "selfhosted", "remote"}
    remote_ok = df[(df.arm == "remote") & (df.status == "ok")]
    assert len(remote_ok) > 0
    assert (
        remote_ok.output_text
        == "you sent Bearer *** to /v1/chat/completions?key=***&api-version=2024-06-01"
    ).all()
    self_ok = df[(df.arm == "selfhosted") & (df.status == "ok")]
    assert (self_ok.output_text == "you sent Bearer *** to /v1/chat/completions").all()
    errors = df[df.error_message.fillna("").str.contains("bad request: you sent")]
    assert len(errors) > 0 and (errors.http_status == 400).all()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["arms"]) >= {"cloud", "selfhosted", "remote"}
    assert (run_dir / "report.html").is_file() and (run_dir / "memo.md").is_file()
    assert "scraping http://***@127.0.0.1" in console  # the failing scrape was logged, masked


def test_a_key_pasted_into_api_key_env_is_never_printed(reports):
    pasted = f"{MARK}-pasted-{secrets.token_hex(8)}"
    res = run_harness(
        [
            "experiment",
            "experiment=smoke",
            f"record.reports_dir={reports}",
            f"+arms.cloud.api_key_env={pasted}",
        ],
        timeout=60,
    )
    console = res.stdout + res.stderr
    assert res.returncode == 2, console[-3000:]
    assert "arms.cloud.api_key_env" in res.stderr and "NAME of an environment variable" in console
    assert MARK not in console and pasted not in console
    assert _hits(reports, [pasted]) == []
