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

import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any

import orjson

from harness.config import TargetConfig
from harness.record.schema import RequestRecord
from harness.redaction import looks_like_env_name, register
from harness.targets import clock
from harness.targets.attempt import Attempt, RecordContext, build_record
from harness.targets.errors import AttemptError, TargetError
from harness.targets.retry import backoff_s, should_retry
from harness.targets.tokens import server_tokenizer
from harness.workloads.base import WorkItem

#: Key sent to targets that need none (simulators, vLLM without ``--api-key``).
DUMMY_API_KEY = "EMPTY"

#: The implementation ``client: auto`` selects (lowest measured overhead; see module docstring).
AUTO_CLIENT = "lean"

_SIM_KINDS = ("sim_vllm", "sim_cloud")

#: Under gevent, a client reading data that is already there (a recv that returns at once
#: never switches greenlets) pauses after about this many bytes, so timers (deadlines), other
#: arms' streams and signal handlers run between its slices of work.
YIELD_BYTES = 65536


def cooperative_pause() -> Callable[[], None] | None:
    """A function that lets the gevent hub run a full loop iteration (I/O polled, timers
    fired) and then resumes the caller, when ``socket`` is monkey-patched; else None.

    ``gevent.sleep(0)`` is not enough: it runs the caller again from the same round of
    callbacks, before any I/O is polled (another greenlet's ready socket waits up to the
    5 ms switch interval, or longer); a timer, however short, waits for the next poll.
    """
    try:
        from gevent import monkey

        if not monkey.is_module_patched("socket"):
            return None
        import gevent
    except ImportError:
        return None
    sleep = gevent.sleep

    def pause() -> None:
        sleep(1e-6)

    return pause


def resolve_api_key(arm: str, target: TargetConfig) -> str:
    """The API key for ``arm``, read from the env var named by ``target.api_key_env``.

    Simulators need none (a dummy is sent). A ``vllm`` target without ``api_key_env`` gets the
    dummy too. Raises :class:`TargetError` naming the arm and the variable when it is unset.
    """
    env = target.api_key_env
    if env and not looks_like_env_name(env):  # a key pasted where its variable's name belongs
        register(env)  # never shown, whatever prints it next
        raise TargetError(
            f"arms.{arm}.api_key_env: expected the NAME of an environment variable (like "
            "OPENAI_API_KEY), but the value is not a variable name; it may be the key itself "
            "(not shown). Export the key in a variable and name that variable here"
        )
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


def derived_request_seed(seed: int, key: str) -> int:
    """A deterministic sampling seed for one logical request: (run seed, key) -> [0, 2**31)."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFF


def forces_length(target: TargetConfig, item: WorkItem) -> bool:
    """True when the request asks for exactly ``max_tokens`` (vLLM ``ignore_eos`` +
    ``min_tokens``; the simulators honour them, a hosted API is never sent them)."""
    return bool(target.force_output_length and item.force_length and target.kind != "openai")


def build_body(
    target: TargetConfig, item: WorkItem, *, request_seed: int | None = None
) -> dict[str, Any]:
    """The JSON request body for one item (streaming with usage requested, unless
    ``target.stream`` is false: then one JSON body, which carries usage anyway)."""
    body: dict[str, Any] = {"model": target.model}
    if target.api == "chat":
        body["messages"] = item.chat_messages()
    else:
        body["prompt"] = item.prompt_text()
    body["max_tokens"] = item.max_tokens
    body["stream"] = bool(target.stream)
    if target.stream:
        body["stream_options"] = {"include_usage": True}
    if target.temperature is not None:
        body["temperature"] = target.temperature
    if request_seed is not None:
        body["seed"] = request_seed
    if forces_length(target, item):
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
            force_output_length=bool(target.force_output_length and target.kind != "openai"),
            streamed=bool(target.stream),
            # prompt counts when the server sends no usage: vLLM's /tokenize (None otherwise)
            server_counts=server_tokenizer(target, self._key, f"arms.{arm}"),
        )
        self._chat = target.api == "chat"
        self._path = endpoint_path(target)
        self._cancelled = False
        self._wake = threading.Event()
        # Connection slots (``max_connections``): taken before ``t_sent`` is stamped, so a wait
        # for one is client lag (queue_delay_s), never target latency. cancel() wakes waiters.
        self._slot_cond = threading.Condition(threading.Lock())
        self._slots_free = max(1, target.max_connections)
        to = target.timeouts
        self._slot_wait_s = to.total_s
        self._ft_ns = int(min(to.first_token_s, to.total_s) * 1e9)  # first-token deadline
        self._total_ns = int(to.total_s * 1e9)
        self._streamed = bool(target.stream)
        if not self._streamed:  # no token is seen before the whole body: total_s bounds it
            self._ft_ns = self._total_ns
        self._max_event = target.max_event_bytes

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
        on_row: Callable[[RequestRecord], Any] | None = None,
        time_scale: float = 1.0,
    ) -> list[RequestRecord]:
        """Send ``item`` (retrying per ``target.retry``); one record per attempt, in order.

        ``t_scheduled_ns`` is when the schedule wanted the request sent (UTC ns, ideally from
        :func:`harness.targets.clock.now_ns`); default now. It is every attempt's
        ``t_arrival``; a retry's ``t_scheduled`` is when its backoff ended. ``on_row``, when
        given, gets each attempt's row as soon as that attempt ends (before any backoff
        sleep), so a caller that kills this call during a backoff has the earlier rows
        already. Never raises for request failures: they are error rows. ``t_virtual_ns`` is
        the first attempt's experiment-clock time; a retry's is that plus its wall-clock delay
        times ``time_scale`` (the experiment clock's rate).
        """
        t_sched0 = t_scheduled_ns if t_scheduled_ns is not None else clock.now_ns()
        t_sched = t_sched0
        body = build_body(self.target, item, request_seed=self._request_seed(request_id, pair_id))
        payload = self._prepare(body)
        retry = self.target.retry
        rows: list[RequestRecord] = []
        attempt = 0
        while True:
            att = Attempt(t_sched)
            tv = None
            if t_virtual_ns is not None:
                tv = t_virtual_ns + int(round((t_sched - t_sched0) * time_scale))
            if self._cancelled:
                if attempt == 0:
                    att.fail("cancelled", "run stopped before the request was sent")
                    rec = self._record(att, item, request_id, 0, pair_id, phase, tv, t_sched0)
                    rows.append(rec)
                    if on_row is not None:
                        on_row(rec)
                break
            retryable = True
            try:
                self._acquire_slot(att)
                try:
                    att.t_sent = clock.perf_ns()
                    self._attempt(payload, att)
                finally:
                    self._release_slot()
                att.check_complete(self._streamed)
            except AttemptError as exc:
                retryable = exc.retryable
                self._fail(att, exc.error_type, exc.message, exc.http_status)
            except Exception as exc:  # a bug or an unexpected library error: keep the row
                etype = "connection" if isinstance(exc, OSError) else "bad_response"
                self._fail(att, etype, f"{type(exc).__name__}: {exc}", None)
            except BaseException:  # killed (GreenletExit) while this attempt was in flight
                att.fail("cancelled", "the run stopped before the request finished")
                rec = self._record(att, item, request_id, attempt, pair_id, phase, tv, t_sched0)
                rec.will_retry = False
                rows.append(rec)
                if on_row is not None:
                    on_row(rec)
                raise
            rec = self._record(att, item, request_id, attempt, pair_id, phase, tv, t_sched0)
            again = (
                retryable and should_retry(retry, att.error_type, attempt) and not self._cancelled
            )
            rec.will_retry = bool(again) if rec.status != "ok" else False
            rows.append(rec)
            if on_row is not None:
                on_row(rec)
            if not again:
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
        t_sched = t_scheduled_ns if t_scheduled_ns is not None else clock.now_ns()
        att = Attempt(t_sched)
        att.fail(error_type, message)
        return self._record(att, item, request_id, 0, pair_id, phase, t_virtual_ns, t_sched)

    def cancel(self) -> None:
        """Stop: in-flight attempts end as ``cancelled``, pending retries and requests waiting
        for a connection slot are dropped."""
        self._stop()
        self._abort_inflight()

    def close(self) -> None:
        """Release connections. The client is unusable afterwards."""
        self._stop()

    def _stop(self) -> None:
        self._cancelled = True
        self._wake.set()
        if self._ctx.server_counts is not None:  # no /tokenize call may outlive the run
            self._ctx.server_counts.stop()
        with self._slot_cond:
            self._slot_cond.notify_all()

    # -- for subclasses -----------------------------------------------------------------

    def _prepare(self, body: dict[str, Any]) -> Any:
        """Encode the body once per logical request (reused by retries)."""
        return orjson.dumps(body)

    def _attempt(self, payload: Any, att: Attempt) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _abort_inflight(self) -> None:
        """Interrupt in-flight I/O (called by :meth:`cancel`)."""

    # -- helpers ------------------------------------------------------------------------

    def _request_seed(self, request_id: str, pair_id: str | None) -> int | None:
        """The ``seed`` sent with a request: ``request_seed`` when configured; else, for vLLM
        and the simulators when sampling (temperature != 0), one derived from the run seed and
        the pair id (mirrored arms sample alike) or request id; else none. A hosted API gets
        ``seed`` only through ``extra_body``."""
        if self.request_seed is not None:
            return self.request_seed
        t = self.target
        if t.kind == "openai" or t.temperature == 0:
            return None
        return derived_request_seed(self.seed, pair_id or request_id)

    def _acquire_slot(self, att: Attempt) -> None:
        """Take a connection slot (``max_connections``), waiting at most ``total_s``.

        Raises ``cancelled`` when the client is stopped (before or while waiting) and a
        non-retried ``connection`` error when no slot frees up in time: the client's own pool
        is exhausted, which says nothing about the target.
        """
        cond = self._slot_cond
        with cond:
            if self._slots_free <= 0 and not self._cancelled:
                att.slot_wait = True
                deadline = clock.perf_ns() + int(self._slot_wait_s * 1e9)
                while self._slots_free <= 0 and not self._cancelled:
                    remaining = (deadline - clock.perf_ns()) / 1e9
                    if remaining <= 0:
                        raise AttemptError(
                            "connection",
                            "client connection pool exhausted: no free connection slot within "
                            f"{self._slot_wait_s:g} s ({self.target.max_connections} slot(s) in "
                            f"this process, its share of arms.{self.arm}.max_connections; "
                            "raise it)",
                            retryable=False,
                        )
                    cond.wait(remaining)
            if self._cancelled:
                raise AttemptError("cancelled", "run stopped before the request was sent")
            self._slots_free -= 1

    def _release_slot(self) -> None:
        with self._slot_cond:
            self._slots_free += 1
            self._slot_cond.notify()

    def _timeout_error(self, att: Attempt) -> AttemptError:
        """The first-token or total timeout, whichever applies to ``att`` now."""
        if not self._streamed:
            return AttemptError(
                "timeout",
                f"no complete response within the total timeout of {self._total_ns / 1e9:g} s",
                att.http_status,
            )
        if not att.times:
            return AttemptError(
                "timeout", f"no first token within {self._ft_ns / 1e9:g} s", att.http_status
            )
        return AttemptError(
            "timeout",
            f"stream exceeded the total timeout of {self._total_ns / 1e9:g} s",
            att.http_status,
        )

    def _closed(self, att: Attempt, message: str) -> AttemptError:
        """A connection that ended early: cancelled, truncated (content began) or connection."""
        if self._cancelled:
            return AttemptError("cancelled", "run stopped while in flight", att.http_status)
        if att.times:
            return AttemptError("truncated", message, att.http_status)
        return AttemptError("connection", message, att.http_status)

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
        t_arrival: int | None,
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
            t_arrival=t_arrival,
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
    if key != DUMMY_API_KEY:
        register(key)  # whatever this process records or prints hides it
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
