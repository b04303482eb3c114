"""Target errors and the classification of failed attempts into ``schema.ERROR_TYPES``.

:class:`TargetError` is the user-facing error for a misconfigured or unreachable target
(before traffic); :class:`AttemptError` is raised inside a client to end an attempt with one
error type from the closed set. :func:`redact` scrubs secrets from any text that may end up in a
record, a log line or an exception message.
"""

from __future__ import annotations

import orjson

from harness.record.schema import ERROR_TYPES
from harness.redaction import redact_text

#: Longest ``error_message`` kept in a record.
MAX_ERROR_MESSAGE = 500

#: Largest response head (status line and headers) either client accepts: httpcore's limit
#: (``MAX_INCOMPLETE_EVENT_SIZE``), so the SDK and lean clients agree.
MAX_HEAD_BYTES = 100 * 1024


class TargetError(RuntimeError):
    """A target problem a user can act on (names the arm, the URL or env var, and the cause)."""


class AttemptError(Exception):
    """Ends one request attempt with ``error_type`` (one of ``schema.ERROR_TYPES``).

    ``retryable=False`` vetoes a retry even when ``retry_on`` lists the type (a client-side
    problem such as an exhausted connection pool, which a retry would only repeat).
    """

    def __init__(
        self,
        error_type: str,
        message: str,
        http_status: int | None = None,
        *,
        retryable: bool = True,
    ):
        assert error_type in ERROR_TYPES, error_type
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.http_status = http_status
        self.retryable = retryable


def classify_status(status: int) -> str:
    """Error type for a non-2xx HTTP status: 429 rate_limited, 5xx server_error, else client_error."""
    if status == 429:
        return "rate_limited"
    if status >= 500:
        return "server_error"
    return "client_error"


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """Remove ``secrets``, every registered secret and anything key-shaped from ``text``.

    See :func:`harness.redaction.redact_text`.
    """
    return redact_text(text, secrets)


def clip_message(text: str, secrets: tuple[str, ...] = ()) -> str:
    """A record-ready error message: redacted, one line, at most ``MAX_ERROR_MESSAGE`` chars."""
    text = redact(" ".join(str(text).split()), secrets)
    if len(text) > MAX_ERROR_MESSAGE:
        text = text[: MAX_ERROR_MESSAGE - 3] + "..."
    return text


def with_detail(message: str, detail: str) -> str:
    """``message`` plus a client-specific detail (library error text, raw bytes) in brackets
    at its end. Both clients word ``message`` alike for the same fault; only the detail may
    differ (the parity tests compare messages with it stripped)."""
    return f"{message} [{detail}]"


def headers_too_large() -> AttemptError:
    return AttemptError("bad_response", f"response headers exceed {MAX_HEAD_BYTES // 1024} KiB")


def size_text(n: int) -> str:
    """``n`` bytes for a message: ``16 MiB`` when a whole number of a unit, else ``4000 bytes``."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


def event_too_large(arm: str, limit: int, what: str = "SSE event") -> AttemptError:
    """An SSE event (or a non-streamed body, ``what``) over ``target.max_event_bytes``: the
    same wording in both clients. Not retried: the limit is the client's own setting."""
    return AttemptError(
        "bad_response",
        f"{what} larger than {size_text(limit)} (arms.{arm}.max_event_bytes={limit}); "
        "raise the limit if the server's events are legitimately this large",
        retryable=False,
    )


def error_text(text: str) -> str:
    """The message of an OpenAI-style error body, else the body itself."""
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError:
        return text.strip()
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict):
            msg = err.get("message") or err.get("detail") or err.get("msg")
            if msg:
                return str(msg)
        elif isinstance(err, str):
            return err
        if "detail" in obj:
            return str(obj["detail"])
    return text.strip()
