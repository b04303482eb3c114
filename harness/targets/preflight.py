"""Preflight: before any traffic, check that each arm's endpoint answers and serves the model.

``GET {base_url}/models`` must answer 200 and list ``target.model``. Servers without
``/models`` (404/405/501) get a one-token, non-streaming completion instead. Anything else is a
:class:`TargetError` naming the arm, the URL and the cause (connection refused, 401, the model
missing with the ids that are available); when ``base_url``'s path does not end in ``/v1``
and the endpoints were not found, the message says that it usually should. Uses ``urllib`` so
it works with or without gevent monkey-patching. API keys are sent, never shown.

vLLM's ``/tokenize`` is not probed here: each load process's client finds out on its first
response without usage (:class:`harness.targets.tokens.ServerTokenizer`), which needs no state
passed to remote workers and costs nothing when the server sends usage.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness.config import TargetConfig
from harness.targets.client import DUMMY_API_KEY, endpoint_path, resolve_api_key
from harness.targets.errors import TargetError, redact

_UNSUPPORTED = (404, 405, 501)
# Direct connections, like the lean client (environment proxy settings are not applied).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def join_url(base_url: str, path: str) -> str:
    """``path`` appended to ``base_url``'s path, its query string kept after it.

    ``https://h/openai/deployments/d?api-version=v`` + ``/models`` is
    ``https://h/openai/deployments/d/models?api-version=v`` (as the lean client builds its
    request line), never ``...d?api-version=v/models``.
    """
    u = urlsplit(base_url)
    return urlunsplit((u.scheme, u.netloc, u.path.rstrip("/") + path, u.query, ""))


def _request(
    url: str, key: str, *, body: dict[str, Any] | None = None, timeout_s: float
) -> tuple[int, bytes]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    req.add_header("Authorization", f"Bearer {key}")
    if data:
        req.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(req, timeout=timeout_s) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _message(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    try:
        obj = json.loads(text)
        err = obj.get("error", obj) if isinstance(obj, dict) else obj
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    except ValueError:
        pass
    return text.strip()[:300]


def v1_hint(base_url: str) -> str:
    """``"; base_url should usually end in /v1 (e.g. http://host:8000/v1)"`` when its path does
    not end in ``/v1`` (the example uses the URL's own scheme, host and port, no user info);
    else ``""``."""
    u = urlsplit(base_url)
    if u.path.rstrip("/").endswith("/v1"):
        return ""
    host = u.hostname or "host"
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    try:
        port = u.port
    except ValueError:
        port = None
    netloc = host + (f":{port}" if port else "")
    example = urlunsplit((u.scheme or "http", netloc, u.path.rstrip("/") + "/v1", "", ""))
    return f"; base_url should usually end in /v1 (e.g. {example})"


def preflight(
    arm: str, target: TargetConfig, *, api_key: str | None = None, timeout_s: float = 10.0
) -> list[str]:
    """Check one arm; returns the model ids the endpoint lists (empty after the fallback).

    Raises :class:`TargetError` with an actionable message when the check fails.
    """
    base = target.base_url or ""
    if not base:
        raise TargetError(f"arms.{arm}: no base_url to check")
    key = api_key if api_key is not None else resolve_api_key(arm, target)
    secrets = (key,) if key != DUMMY_API_KEY else ()
    url = join_url(base, "/models")

    def fail(what: str) -> TargetError:
        return TargetError(redact(f"arms.{arm}: preflight {url}: {what}", secrets))

    try:
        status, body = _request(url, key, timeout_s=timeout_s)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise fail(f"cannot connect ({reason}); is the server running?") from None
    if status in (401, 403):
        hint = (
            f"check the key in ${target.api_key_env}" if target.api_key_env else "set api_key_env"
        )
        raise fail(f"authentication failed (HTTP {status}: {_message(body)}); {hint}")
    if status in _UNSUPPORTED:
        _one_token(arm, target, key, base, timeout_s, secrets)
        return []
    if status != 200:
        raise fail(f"HTTP {status}: {_message(body)}")
    try:
        ids = [str(m["id"]) for m in json.loads(body)["data"]]
    except (ValueError, KeyError, TypeError):
        raise fail(f"unexpected /models body: {body[:200]!r}{v1_hint(base)}") from None
    if target.model not in ids:
        shown = ", ".join(ids[:30]) + (f" (+{len(ids) - 30} more)" if len(ids) > 30 else "")
        raise fail(f"model {target.model!r} is not served; available: {shown or '(none)'}")
    return ids


def _one_token(
    arm: str, target: TargetConfig, key: str, base: str, timeout_s: float, secrets: tuple[str, ...]
) -> None:
    """Fallback when ``/models`` is unsupported: a 1-token non-streaming request."""
    url = join_url(base, endpoint_path(target))
    body: dict[str, Any] = {"model": target.model, "max_tokens": 1}
    if target.api == "chat":
        body["messages"] = [{"role": "user", "content": "ping"}]
    else:
        body["prompt"] = "ping"
    try:
        status, resp = _request(url, key, body=body, timeout_s=timeout_s)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TargetError(f"arms.{arm}: preflight {url}: cannot connect ({reason})") from None
    if status != 200:
        hint = v1_hint(base) if status in _UNSUPPORTED else ""
        if hint:  # neither endpoint exists there: most likely the /v1 suffix is missing
            what = "/models and the 1-token request not found"
        else:
            what = "/models unsupported, 1-token request"
        msg = f"arms.{arm}: preflight {url} ({what}): HTTP {status}: {_message(resp)}{hint}"
        raise TargetError(redact(msg, secrets))


def preflight_all(arms: dict[str, TargetConfig], *, timeout_s: float = 10.0) -> None:
    """Check every arm with ``preflight`` enabled; one error listing every failing arm."""
    problems = []
    for name, target in arms.items():
        if not target.preflight:
            continue
        try:
            preflight(name, target, timeout_s=timeout_s)
        except TargetError as exc:
            problems.append(str(exc))
    if problems:
        raise TargetError("preflight failed:\n  " + "\n  ".join(problems))
