"""Prometheus text exposition with vLLM's metric names (``GET /metrics``).

Counters and histograms are plain Python objects updated inline by the server (no client
library); gauges are read from the engine when scraped. Names and buckets follow vLLM V1:
``vllm:num_requests_running``, ``vllm:num_requests_waiting``, ``vllm:kv_cache_usage_perc``,
``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
``vllm:time_to_first_token_seconds``, ``vllm:inter_token_latency_seconds``,
``vllm:e2e_request_latency_seconds``, ``vllm:request_success_total{finished_reason}``,
``vllm:num_preemptions_total``, ``vllm:prefix_cache_queries_total`` / ``_hits_total``; each
with a ``model_name`` label.
"""

from __future__ import annotations

from bisect import bisect_left

TTFT_BUCKETS = (
    0.001,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
    640.0,
    2560.0,
)
ITL_BUCKETS = (
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.4,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
)
E2E_BUCKETS = (
    0.3,
    0.5,
    0.8,
    1.0,
    1.5,
    2.0,
    2.5,
    5.0,
    10.0,
    15.0,
    20.0,
    30.0,
    40.0,
    50.0,
    60.0,
    120.0,
    240.0,
    480.0,
    960.0,
    1920.0,
    7680.0,
)


class Histogram:
    """Cumulative-bucket histogram; ``observe(v, n)`` adds ``n`` observations of ``v``."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, n: int = 1) -> None:
        self.counts[bisect_left(self.buckets, value)] += n
        self.sum += value * n
        self.count += n

    def render(self, name: str, labels: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        acc = 0
        for le, c in zip(self.buckets, self.counts, strict=False):
            acc += c
            lines.append(f'{name}_bucket{{{labels},le="{le}"}} {acc}')
        lines.append(f'{name}_bucket{{{labels},le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum{{{labels}}} {self.sum}")
        lines.append(f"{name}_count{{{labels}}} {self.count}")
        return lines


class Metrics:
    """The simulator's counters and histograms (gauges are passed to :meth:`render`)."""

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.success: dict[str, int] = {"stop": 0, "length": 0, "abort": 0}
        self.http_errors: dict[int, int] = {}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)
        self.e2e = Histogram(E2E_BUCKETS)

    def render(self, model: str, gauges: dict[str, float], counters: dict[str, float]) -> bytes:
        """The exposition text. ``gauges`` / ``counters`` carry engine-side values by name."""
        lab = f'model_name="{model}"'
        out: list[str] = []
        for name, value in gauges.items():
            out += [f"# TYPE {name} gauge", f"{name}{{{lab}}} {value}"]
        base = {
            "vllm:prompt_tokens_total": self.prompt_tokens,
            "vllm:generation_tokens_total": self.generation_tokens,
        }
        for name, value in {**base, **counters}.items():
            out += [f"# TYPE {name} counter", f"{name}{{{lab}}} {value}"]
        out.append("# TYPE vllm:request_success_total counter")
        for reason, n in self.success.items():
            out.append(f'vllm:request_success_total{{{lab},finished_reason="{reason}"}} {n}')
        out.append("# TYPE harness_sim:http_errors_total counter")
        for status, n in sorted(self.http_errors.items()):
            out.append(f'harness_sim:http_errors_total{{{lab},status="{status}"}} {n}')
        out += self.ttft.render("vllm:time_to_first_token_seconds", lab)
        out += self.itl.render("vllm:inter_token_latency_seconds", lab)
        out += self.e2e.render("vllm:e2e_request_latency_seconds", lab)
        return ("\n".join(out) + "\n").encode()
