"""The arm client: one per arm per process. Sends a work item, retries, returns every attempt.

:func:`make_arm_client` is the entry point; it returns a :class:`ArmClient` backed by the lean
socket client (``lean``, the default for ``client: auto`` because its measured overhead is
lower, see ``bench/bench_client.py``) or by the official ``openai`` SDK (``sdk``). Both share
request building, retries, error classification and record building; only ``_attempt`` (one
HTTP exchange) differs.

Both are blocking and cooperative under gevent monkey-patching (the locust load process) and
also work from plain threads.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import orjson

from harness.config import TargetConfig
from harness.record.schema import RequestRecord
from harness.targets import clock
from harness.targets.attempt import Attempt, RecordContext, build_record
from harness.targets.errors import AttemptError, TargetError
from harness.targets.retry import backoff_s, should_retry
from harness.workloads.base import WorkItem

#: Key sent to targets that need none (simulators, vLLM without ``--api-key``).
DUMMY_API_KEY = "EMPTY"

#: The implementation ``client: auto`` selects (lowest measured overhead; see module docstring).
AUTO_CLIENT = "lean"

_SIM_KINDS = ("sim_vllm", "sim_cloud")
_VLLM_LIKE = ("vllm", "sim_vllm", "sim_cloud")


def resolve_api_key(arm: str, target: TargetConfig) -> str:
    """The API key for ``arm``, read from the env var named by ``target.api_key_env``.

    Simulators need none (a dummy is sent). A ``vllm`` target without ``api_key_env`` gets the
    dummy too. Raises :class:`TargetError` naming the arm and the variable when it is unset.
    """
    env = target.api_key_env
    if not env:
        if target.kind == "openai":
            raise TargetError(
                f"arms.{arm}: target kind 'openai' needs api_key_env (the name of the "
                "environment variable holding the API key)"
            )
        return DUMMY_API_KEY
    value = os.environ.get(env)
    if not value:
        if target.kind in _SIM_KINDS:
            return DUMMY_API_KEY
        raise TargetError(
            f"arms.{arm}: environment variable {env} (api_key_env) is not set or empty; "
            f"export it with the API key for {target.base_url or target.kind}"
        )
    return value


def endpoint_path(target: TargetConfig) -> str:
    """Path below ``base_url``: ``/chat/completions`` or ``/completions``."""
    return "/chat/completions" if target.api == "chat" else "/completions"


def build_body(
    target: TargetConfig, item: WorkItem, *, request_seed: int | None = None
) -> dict[str, Any]:
    """The JSON request body for one item (streaming, usage requested)."""
    body: dict[str, Any] = {"model": target.model}
    if target.api == "chat":
        body["messages"] = item.chat_messages()
    else:
        body["prompt"] = item.prompt_text()
    body["max_tokens"] = item.max_tokens
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    if target.temperature is not None:
        body["temperature"] = target.temperature
    if request_seed is not None:
        body["seed"] = request_seed
    if target.force_output_length and item.force_length and target.kind != "openai":
        # vLLM sampling extras (the simulator honours them too); never sent to a hosted API.
        body["ignore_eos"] = True
        body["min_tokens"] = item.max_tokens
    if target.extra_body:
        body.update(dict(target.extra_body))
        if "max_completion_tokens" in target.extra_body:
            body.pop("max_tokens", None)
    return body


class ArmClient:
    """Sends work items to one arm's target; see :meth:`execute`.

    Subclasses implement :meth:`_attempt` (one HTTP exchange that fills an :class:`Attempt`
    or raises :class:`AttemptError`).
    """

    name = "base"

    def __init__(
        self,
        arm: str,
        target: TargetConfig,
        *,
        run_id: str,
        experiment: str,
        output_text: str = "keep",
        seed: int = 0,
        worker: int = 0,
        api_key: str | None = None,
        request_seed: int | None = None,
        count_fallback: str = "tokenizer",
    ) -> None:
        if not target.base_url:
            raise TargetError(f"arms.{arm}: no base_url (simulators fill it in when started)")
        self.arm = arm
        self.target = target
        self.seed = seed
        self.request_seed = request_seed
        self._key = api_key if api_key is not None else resolve_api_key(arm, target)
        secrets = (self._key,) if self._key != DUMMY_API_KEY else ()
        self._ctx = RecordContext(
            run_id=run_id,
            experiment=experiment,
            arm=arm,
            target_kind=target.kind,
            model=target.model,
            client=self.name,
            worker=worker,
            output_text=output_text,
            secrets=secrets,
            count_fallback=count_fallback,
        )
        self._chat = target.api == "chat"
        self._path = endpoint_path(target)
        self._cancelled = False
        self._wake = threading.Event()

    # -- public -------------------------------------------------------------------------

    def execute(
        self,
        item: WorkItem,
        *,
        request_id: str,
        pair_id: str | None = None,
        t_scheduled_ns: int | None = None,
        phase: str = "main",
        t_virtual_ns: int | None = None,
    ) -> list[RequestRecord]:
        """Send ``item`` (retrying per ``target.retry``); one record per attempt, in order.

        ``t_scheduled_ns`` is when the schedule wanted the request sent (UTC ns, ideally from
        :func:`harness.targets.clock.now_ns`); default now. A retry's ``t_scheduled`` is when
        its backoff ended. Never raises for request failures: they are error rows.
        """
        t_sched0 = t_scheduled_ns if t_scheduled_ns is not None else clock.now_ns()
        t_sched = t_sched0
        body = build_body(self.target, item, request_seed=self.request_seed)
        payload = self._prepare(body)
        retry = self.target.retry
        rows: list[RequestRecord] = []
        attempt = 0
        while True:
            att = Attempt(t_sched)
            if self._cancelled:
                if attempt == 0:
                    att.fail("cancelled", "run stopped before the request was sent")
                    rows.append(self._record(att, item, request_id, 0, pair_id, phase, None))
                break
            att.t_sent = clock.perf_ns()
            try:
                self._attempt(payload, att)
                att.check_complete()
            except AttemptError as exc:
                self._fail(att, exc.error_type, exc.message, exc.http_status)
            except Exception as exc:  # a bug or an unexpected library error: keep the row
                etype = "connection" if isinstance(exc, OSError) else "bad_response"
                self._fail(att, etype, f"{type(exc).__name__}: {exc}", None)
            tv = None
            if t_virtual_ns is not None:
                tv = t_virtual_ns + (t_sched - t_sched0)
            rows.append(self._record(att, item, request_id, attempt, pair_id, phase, tv))
            if not should_retry(retry, att.error_type, attempt) or self._cancelled:
                break
            attempt += 1
            delay = backoff_s(
                retry,
                attempt,
                retry_after_s=att.retry_after_s,
                seed=self.seed,
                key=f"{self.arm}:{request_id}",
                cap_s=self.target.timeouts.total_s,
            )
            start = clock.perf_ns()
            if delay > 0:
                self._wake.wait(delay)
            t_sched = clock.wall_ns(start + int(delay * 1e9))
        return rows

    def failure_record(
        self,
        item: WorkItem,
        *,
        request_id: str,
        error_type: str,
        message: str,
        pair_id: str | None = None,
        t_scheduled_ns: int | None = None,
        phase: str = "main",
        t_virtual_ns: int | None = None,
    ) -> RequestRecord:
        """A row for a request that ended outside :meth:`execute` (e.g. its greenlet was
        killed at shutdown), with the same identity columns as every other row."""
        att = Attempt(t_scheduled_ns if t_scheduled_ns is not None else clock.now_ns())
        att.fail(error_type, message)
        return self._record(att, item, request_id, 0, pair_id, phase, t_virtual_ns)

    def cancel(self) -> None:
        """Stop: in-flight attempts end as ``cancelled``, pending retries are dropped."""
        self._cancelled = True
        self._wake.set()
        self._abort_inflight()

    def close(self) -> None:
        """Release connections. The client is unusable afterwards."""
        self._cancelled = True
        self._wake.set()

    # -- for subclasses -----------------------------------------------------------------

    def _prepare(self, body: dict[str, Any]) -> Any:
        """Encode the body once per logical request (reused by retries)."""
        return orjson.dumps(body)

    def _attempt(self, payload: Any, att: Attempt) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _abort_inflight(self) -> None:
        """Interrupt in-flight I/O (called by :meth:`cancel`)."""

    # -- helpers ------------------------------------------------------------------------

    def _fail(self, att: Attempt, etype: str, message: str, status: int | None) -> None:
        if self._cancelled and etype != "cancelled":
            etype, message = "cancelled", f"run stopped while in flight ({message})"
        att.fail(etype, message, status)

    def _record(
        self,
        att: Attempt,
        item: WorkItem,
        request_id: str,
        attempt: int,
        pair_id: str | None,
        phase: str,
        t_virtual: int | None,
    ) -> RequestRecord:
        return build_record(
            self._ctx,
            att,
            item,
            request_id=request_id,
            attempt=attempt,
            pair_id=pair_id,
            phase=phase,
            t_virtual=t_virtual,
        )


def make_arm_client(
    arm: str,
    target: TargetConfig,
    *,
    run_id: str,
    experiment: str,
    output_text: str = "keep",
    seed: int = 0,
    worker: int = 0,
    api_key: str | None = None,
    request_seed: int | None = None,
    count_fallback: str = "tokenizer",
) -> ArmClient:
    """The client for ``target.client`` (``auto`` -> :data:`AUTO_CLIENT`). Resolves the API key
    first, so a missing environment variable fails here, before any traffic."""
    kind = AUTO_CLIENT if target.client == "auto" else target.client
    key = api_key if api_key is not None else resolve_api_key(arm, target)
    kwargs: dict[str, Any] = dict(
        run_id=run_id,
        experiment=experiment,
        output_text=output_text,
        seed=seed,
        worker=worker,
        api_key=key,
        request_seed=request_seed,
        count_fallback=count_fallback,
    )
    if kind == "lean":
        from harness.targets.lean import LeanClient

        return LeanClient(arm, target, **kwargs)
    if kind == "sdk":
        from harness.targets.sdk import SdkClient

        return SdkClient(arm, target, **kwargs)
    raise TargetError(f"arms.{arm}.client: {target.client!r} is not auto, lean or sdk")
