"""Simulator throughput: sustained streamed chunks/s with thousands of concurrent streams.

Starts the simulator in a subprocess and drives it from a separate load process (an asyncio
raw-socket client on uvloop) holding N keep-alive connections, each streaming completions back
to back. Reports, over a measuring window after a warm-up:

- chunks/s received by the client (SSE events: one per token, plus 1-2 per request for the
  finish chunk and ``[DONE]``) and tokens/s;
- the simulator's CPU seconds in the window (from /proc), hence CPU microseconds per chunk and
  chunks/s per core (= 1e6 / us per chunk): the figure that does not depend on how much of the
  2-core box the load client took.

Two settings: the cloud profile at fixed latency (one timer per stream) and the vllm profile
with a 20 ms step and max_num_seqs above the stream count (one engine step writes a chunk to
every stream). Run with ``python -m bench sim``; about 40 s.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

from harness.sim.process import SimProcess

STREAMS = 2000
TOKENS = 200  # per request
WARMUP_S = 4.0
MEASURE_S = 8.0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid``."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load client (runs in its own process) ----------------------------------------------------
class _Stream(asyncio.Protocol):
    def __init__(self, stats: dict, request: bytes) -> None:
        self.stats = stats
        self.request = request

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.write(self.request)
        self.stats["open"] += 1

    def data_received(self, data: bytes) -> None:
        self.stats["events"] += data.count(b"data: ")
        if data.endswith(b"0\r\n\r\n"):
            self.stats["requests"] += 1
            if not self.stats["stop"]:
                self.transport.write(self.request)

    def connection_lost(self, exc) -> None:
        self.stats["open"] -= 1
        self.stats["lost"] += 1


async def _client(host: str, port: int, streams: int, model: str) -> dict:
    body = json.dumps(
        {
            "model": model,
            "prompt": "bench " * 20,
            "max_tokens": TOKENS,
            "stream": True,
            "ignore_eos": True,
        }
    ).encode()
    request = (
        b"POST /v1/completions HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json"
        b"\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    stats = {"events": 0, "requests": 0, "open": 0, "lost": 0, "stop": False}
    loop = asyncio.get_running_loop()
    for i in range(streams):
        await loop.create_connection(lambda: _Stream(stats, request), host, port)
        if i % 200 == 199:
            await asyncio.sleep(0.05)
    await asyncio.sleep(WARMUP_S)
    e0, r0, t0 = stats["events"], stats["requests"], time.perf_counter()
    print(json.dumps({"mark": "start"}), flush=True)
    await asyncio.sleep(MEASURE_S)
    e1, r1, t1 = stats["events"], stats["requests"], time.perf_counter()
    print(json.dumps({"mark": "end"}), flush=True)
    stats["stop"] = True
    return {
        "events": e1 - e0,
        "requests": r1 - r0,
        "seconds": t1 - t0,
        "open": stats["open"],
        "lost": stats["lost"],
    }


def _client_main(args: list[str]) -> None:
    host, port, streams, model = args[0], int(args[1]), int(args[2]), args[3]
    try:
        import uvloop

        result = uvloop.run(_client(host, port, streams, model))
    except ImportError:
        result = asyncio.run(_client(host, port, streams, model))
    print(json.dumps(result), flush=True)


# -- driver -----------------------------------------------------------------------------------
def _run(label: str, profile: str, params: dict, model: str, per_request_events: int) -> dict:
    with SimProcess(profile, params=params) as sim:
        host, port = sim.url.removeprefix("http://").rsplit(":", 1)
        pid = sim.proc.pid
        client = subprocess.Popen(
            [sys.executable, "-m", "bench.bench_sim", "--client", host, port, str(STREAMS), model],
            stdout=subprocess.PIPE,
            text=True,
        )
        cpu0 = cpu1 = 0.0
        result = {}
        for line in client.stdout:
            msg = json.loads(line)
            if msg.get("mark") == "start":
                cpu0 = _cpu_s(pid)
            elif msg.get("mark") == "end":
                cpu1 = _cpu_s(pid)
            else:
                result = msg
        client.wait()
    secs = result["seconds"]
    events = result["events"]
    tokens = events - per_request_events * result["requests"]
    cpu = cpu1 - cpu0
    us_per_chunk = cpu / events * 1e6 if events else float("nan")
    row = {
        "setting": label,
        "streams": STREAMS,
        "open_at_end": result["open"],
        "chunks_per_s": events / secs,
        "tokens_per_s": tokens / secs,
        "sim_cpu_share": cpu / secs,
        "sim_us_per_chunk": us_per_chunk,
        "chunks_per_s_per_core": 1e6 / us_per_chunk if events else 0.0,
    }
    print(
        f"{label:<34} streams={STREAMS} open={result['open']:>5}  "
        f"chunks/s={row['chunks_per_s']:>8.0f}  tokens/s={row['tokens_per_s']:>8.0f}  "
        f"sim CPU={row['sim_cpu_share']:.2f} cores  {us_per_chunk:.1f} us/chunk  "
        f"=> {row['chunks_per_s_per_core']:.0f} chunks/s per core",
        flush=True,
    )
    return row


def main() -> None:
    """Print the simulator's sustained chunks/s for both profiles at 2,000 streams."""
    print(
        f"{os.cpu_count()} CPUs; the load client runs in its own process on the same box; "
        f"{WARMUP_S:.0f} s warm-up, {MEASURE_S:.0f} s measured",
        flush=True,
    )
    _run(
        "cloud, fixed ttft 0 / itl 20 ms",
        "cloud",
        {"ttft_ms": 0, "itl_ms": 20, "itl_jitter": 0, "reference_answers": False},
        "sim-cloud-mini",
        per_request_events=2,
    )
    _run(
        "vllm engine, 20 ms steps",
        "vllm",
        {
            "max_num_seqs": 4096,
            "step_base_ms": 20,
            "decode_per_seq_ms": 0,
            "prefill_per_token_ms": 0,
            "attn_per_ctx_token_ms": 0,
            "step_jitter": 0,
            "api_overhead_ms": 0,
            "reference_answers": False,
        },
        "sim-llama-3.1-8b-instruct",
        per_request_events=1,
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _client_main(sys.argv[2:])
    else:
        main()
