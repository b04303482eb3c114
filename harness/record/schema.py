"""The per-request Parquet schema: the contract between the load stage and analysis.

One row per request *attempt* (retries are rows of their own, because providers bill
attempts). Column names are part of the contract in ``shared/DESIGN.md``: add columns
freely, never rename. ``SCHEMA_VERSION`` is written into every Parquet file's metadata;
readers upgrade older versions through :func:`harness.record.reader.read_requests`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = 5
# 2: t_arrival; 3: will_retry; 4: streamed, forced_length, prompt_tokens_source;
# 5: response_model, system_fingerprint, route, route_reason, escalated
# (readers fill nulls for older files)

#: Closed set of error types (``error_type`` column). ``None`` when ``status == "ok"``.
ERROR_TYPES = (
    "rate_limited",  # HTTP 429
    "server_error",  # HTTP 5xx
    "client_error",  # HTTP 4xx other than 429 (bad request, auth, context length, unknown model)
    "timeout",  # connect, first-token or total timeout
    "connection",  # refused, reset, DNS, TLS, closed mid-stream without a clean end
    "bad_response",  # unparseable body, malformed SSE/JSON, protocol violation
    "empty",  # 2xx but no content tokens
    "truncated",  # content began, then the stream ended without a finish_reason ([DONE] or not)
    "cancelled",  # the run stopped while the request was in flight
    "rejected",  # a router arm refused the request (its API budget spent, on_exhausted=reject)
)

#: ``tokens_source`` values: who counted ``completion_tokens``.
TOKEN_SOURCES = ("usage", "tokenizer", "chunks")

#: ``prompt_tokens_source`` values: who counted ``prompt_tokens``. ``usage`` the server's usage
#: block; ``tokenize`` the server's own tokenizer endpoint (vLLM ``/tokenize``, chat template
#: applied); ``tokenizer`` a local estimate without the server's chat template.
PROMPT_TOKEN_SOURCES = ("usage", "tokenize", "tokenizer")

#: ``phase`` values: warmup and cooldown rows are excluded from analysis by default.
PHASES = ("warmup", "main", "cooldown")

_TS = pa.timestamp("ns", tz="UTC")

REQUEST_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("experiment", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("target_kind", pa.string(), nullable=False),
        pa.field("model", pa.string()),
        pa.field("client", pa.string()),  # "lean" or "sdk"
        pa.field("worker", pa.int32()),  # locust worker index (0 for a local run)
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int32(), nullable=False),
        pa.field("pair_id", pa.string()),
        pa.field("sample_id", pa.string()),
        pa.field("workload", pa.string()),  # workload name
        pa.field("slice", pa.string()),  # workload slice (e.g. "short", "long", "eval:arith")
        pa.field("conversation_id", pa.string()),
        pa.field("turn", pa.int32()),
        pa.field("phase", pa.string()),  # warmup | main | cooldown
        pa.field("t_scheduled", _TS),
        pa.field("t_sent", _TS),
        pa.field("t_first_token", _TS),
        pa.field("t_end", _TS),
        pa.field("t_virtual", _TS),
        pa.field("t_arrival", _TS),  # the logical request's original t_scheduled (all attempts)
        pa.field("queue_delay_s", pa.float64()),  # t_sent - t_scheduled
        pa.field("ttft_s", pa.float64()),  # t_first_token - t_sent
        pa.field("e2e_s", pa.float64()),  # t_end - t_sent
        pa.field("ttft_sched_s", pa.float64()),  # t_first_token - t_scheduled
        pa.field("e2e_sched_s", pa.float64()),  # t_end - t_scheduled
        # tpot_s = (t_last_token - t_first_token) / (completion_tokens - 1)
        pa.field("tpot_s", pa.float64()),
        pa.field("itl_s", pa.list_(pa.float64())),  # gaps between content chunks
        pa.field("prompt_tokens", pa.int64()),
        pa.field("completion_tokens", pa.int64()),
        pa.field("cached_tokens", pa.int64()),
        pa.field("tokens_source", pa.string()),
        pa.field("prompt_tokens_source", pa.string()),  # PROMPT_TOKEN_SOURCES or null
        pa.field("requested_max_tokens", pa.int64()),
        # the request forced its output length (ignore_eos + min_tokens = max_tokens): an ok row
        # with fewer completion tokens than requested came back short
        pa.field("forced_length", pa.bool_()),
        # the response was streamed (SSE); False: one JSON body, so t_first_token = t_end and
        # TTFT equals E2E (not a time to first token)
        pa.field("streamed", pa.bool_()),
        pa.field("status", pa.string(), nullable=False),  # ok | error
        pa.field("http_status", pa.int32()),
        pa.field("error_type", pa.string()),
        pa.field("error_message", pa.string()),
        pa.field("retry_after_s", pa.float64()),
        # the client retries this failed attempt (a later row of the request follows unless the
        # run stopped during the backoff); False for ok rows and final failures
        pa.field("will_retry", pa.bool_()),
        pa.field("server_request_id", pa.string()),  # x-request-id response header
        pa.field("finish_reason", pa.string()),
        pa.field("output_text", pa.string()),  # kept, sha256-hashed or None per config
        pa.field("reference_answer", pa.string()),  # eval workloads: the expected answer
        # what the server said served it: the response's `model` string and its
        # `system_fingerprint` (when returned), so a silent provider update is visible
        pa.field("response_model", pa.string()),
        pa.field("system_fingerprint", pa.string()),
        # router (hybrid) arms: the underlying arm this attempt went to, why, and whether it is
        # an escalation/failover after an earlier attempt of the same request (null elsewhere)
        pa.field("route", pa.string()),
        pa.field("route_reason", pa.string()),
        pa.field("escalated", pa.bool_()),
    ],
    metadata={b"harness.schema_version": str(SCHEMA_VERSION).encode()},
)

#: Server-side metrics scraped from ``/metrics`` (long format: one row per sample).
METRICS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("arm", pa.string(), nullable=False),
        pa.field("t", _TS, nullable=False),
        pa.field("name", pa.string(), nullable=False),  # e.g. vllm:num_requests_waiting
        pa.field("labels", pa.string()),  # Prometheus labels as k=v,k=v (sorted), may be ""
        pa.field("value", pa.float64()),
    ],
    metadata={b"harness.schema_version": str(SCHEMA_VERSION).encode()},
)


@dataclass(slots=True)
class RequestRecord:
    """One request attempt, as recorded. Timestamps are UTC nanoseconds since the epoch."""

    run_id: str
    experiment: str
    arm: str
    target_kind: str
    request_id: str
    attempt: int
    status: str
    model: str | None = None
    client: str | None = None
    worker: int | None = 0
    pair_id: str | None = None
    sample_id: str | None = None
    workload: str | None = None
    slice: str | None = None
    conversation_id: str | None = None
    turn: int | None = None
    phase: str | None = "main"
    t_scheduled: int | None = None
    t_sent: int | None = None
    t_first_token: int | None = None
    t_end: int | None = None
    t_virtual: int | None = None
    t_arrival: int | None = None
    queue_delay_s: float | None = None
    ttft_s: float | None = None
    e2e_s: float | None = None
    ttft_sched_s: float | None = None
    e2e_sched_s: float | None = None
    tpot_s: float | None = None
    itl_s: list[float] | None = field(default=None)
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cached_tokens: int | None = None
    tokens_source: str | None = None
    prompt_tokens_source: str | None = None
    requested_max_tokens: int | None = None
    forced_length: bool | None = None
    streamed: bool | None = None
    http_status: int | None = None
    error_type: str | None = None
    error_message: str | None = None
    retry_after_s: float | None = None
    will_retry: bool | None = None
    server_request_id: str | None = None
    finish_reason: str | None = None
    output_text: str | None = None
    reference_answer: str | None = None
    response_model: str | None = None
    system_fingerprint: str | None = None
    route: str | None = None
    route_reason: str | None = None
    escalated: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


REQUEST_COLUMNS = tuple(REQUEST_SCHEMA.names)
assert set(REQUEST_COLUMNS) == {f.name for f in fields(RequestRecord)}, "schema/record drift"


def records_to_table(records: list[RequestRecord]) -> pa.Table:
    """Build an Arrow table with :data:`REQUEST_SCHEMA` from records."""
    cols: dict[str, list[Any]] = {name: [] for name in REQUEST_COLUMNS}
    for r in records:
        for name in REQUEST_COLUMNS:
            cols[name].append(getattr(r, name))
    return pa.Table.from_pydict(cols, schema=REQUEST_SCHEMA)
