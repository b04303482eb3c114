"""Keeping secrets off disk and off the console: one module, one function family.

Secrets come in two kinds:

* **Known values**, registered once per process with :func:`register` (usually through
  :func:`register_targets` / :func:`register_tree` / :func:`register_environment`): the value of
  every arm's ``api_key_env`` variable, well-known secret environment variables, the value of
  ``--api-key`` (and other secret flags) in ``launch.args``, secret-named ``launch.env``
  entries, the user-info and secret query parameters of a ``base_url``, config values under
  secret-looking keys. Every registered value is replaced by :data:`MASK` wherever text is
  written: records (``output_text``, ``error_message``), logs, the manifest, the console.
* **Shapes**: text that looks like a secret whatever its value (``Bearer ...``, ``sk-...``,
  URL user-info, ``?key=`` / ``&token=`` query parameters, ``--api-key VALUE``).

The family, from cheapest to most thorough:

* :func:`redact_values` - known values only; the hot path (the Parquet writer's text columns).
  Identity (one attribute check) while no secret is registered.
* :func:`redact_url` - a URL with its user-info and secret query parameters masked
  (``api-version`` and other harmless parameters are kept).
* :func:`redact_argv` - command-line words: ``--api-key X``, ``--api-key=X``,
  ``a.b.api_key=X`` (Hydra overrides) and secret shapes.
* :func:`redact_tree` - a copy of a config tree: values under secret-looking keys replaced by
  :data:`REDACTED`, lists of words treated as argv, strings scrubbed of known values and
  secret shapes (``api_key_env`` is kept: it names a variable, it is not the key).
* :func:`redact_text` - free text (error messages, log lines, console output, a server's log):
  known values and every secret shape, including partially masked provider keys.

This module imports only the standard library: ``python -m harness.redaction --tee LOG``
(a line filter between ``vllm serve`` and its log file) starts fast.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

#: What a secret inside a text becomes.
MASK = "***"
#: What a config value under a secret-looking key becomes (the manifest's config and argv).
REDACTED = "***redacted***"
#: Shortest value registered as a secret (shorter ones would mask ordinary words).
MIN_SECRET_LEN = 4
#: Shortest value taken from a secret-named environment variable found by its name alone.
MIN_ENV_SECRET_LEN = 8
#: Environment variable through which the launcher hands its secrets to the ``--tee`` filter.
TEE_SECRETS_ENV = "HARNESS_REDACT_SECRETS"

#: Config keys (and flag names, Hydra override keys) whose values are secrets.
SECRET_KEY = re.compile(
    r"(key|secret|token|password|passwd|authorization|credentials?)$", re.IGNORECASE
)
#: Well-known environment variables holding secrets, redacted whether or not an arm names them.
WELL_KNOWN_SECRET_ENV = (
    "OPENAI_API_KEY",
    "AZURE_OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "MISTRAL_API_KEY",
    "TOGETHER_API_KEY",
    "GROQ_API_KEY",
    "DEEPSEEK_API_KEY",
    "OPENROUTER_API_KEY",
    "FIREWORKS_API_KEY",
    "VLLM_API_KEY",
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HUGGINGFACE_HUB_TOKEN",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
)
_ENV_SECRET_NAME = re.compile(
    r"(?:^|_)(?:API_?KEY|ACCESS_KEY|SECRET(?:_KEY)?|TOKEN|PASSWORD|PASSWD)$", re.IGNORECASE
)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: Query parameters whose values are secrets (exact names, any case).
SECRET_PARAMS = (
    "key",
    "apikey",
    "api_key",
    "api-key",
    "x-api-key",
    "token",
    "access_token",
    "access-token",
    "auth_token",
    "id_token",
    "refresh_token",
    "sig",
    "signature",
    "password",
    "passwd",
    "pwd",
    "secret",
    "client_secret",
)
_PARAM_ALT = "|".join(re.escape(p) for p in sorted(SECRET_PARAMS, key=len, reverse=True))


def _is_secret_param(name: str) -> bool:
    return name.lower() in SECRET_PARAMS


def is_secret_key(name: str) -> bool:
    """A config key, flag name or Hydra override key whose value is a secret."""
    return bool(SECRET_KEY.search(name.lstrip("-+~").rsplit(".", 1)[-1]))


#: A Hydra override's key (``+arms.cloud.api_key``), as opposed to any word holding a "=".
_OVERRIDE_KEY = re.compile(r"^[+~]{0,2}[A-Za-z_][\w.\-/@]*$")
#: A URL inside a longer text (a Hydra dict override, a log line).
_URL_IN_TEXT = re.compile(r"(?i)\b[a-z][a-z0-9+.\-]*://[^\s'\",\]}<>]+")


def _is_secret_flag(word: str) -> bool:
    return word.startswith("-") and len(word.lstrip("-")) > 1 and is_secret_key(word)


# -- known values ----------------------------------------------------------------------------


class SecretSet:
    """A set of secret values with one precompiled alternation (longest first)."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        # (alternation, values longest first), swapped as one: readers never see half an update
        self._state: tuple[re.Pattern[str], tuple[str, ...]] | None = None
        self._lock = threading.Lock()

    def add(self, *values: str | None, min_len: int = MIN_SECRET_LEN) -> None:
        new = {
            v for v in values if isinstance(v, str) and len(v.strip()) >= min_len and v != "EMPTY"
        }
        with self._lock:
            if new <= self._values:
                return
            self._values |= new
            ordered = tuple(sorted(self._values, key=len, reverse=True))
            self._state = (re.compile("|".join(re.escape(v) for v in ordered)), ordered)

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
            self._state = None

    def sub(self, text: str) -> str:
        # A substring test per value (memchr-fast) finds the rare text that needs the regex.
        state = self._state
        if state is None:
            return text
        pattern, ordered = state
        for value in ordered:
            if value in text:
                return pattern.sub(MASK, text)
        return text

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self._values)

    def __bool__(self) -> bool:
        return self._state is not None


_SECRETS = SecretSet()


def register(*values: str | None, min_len: int = MIN_SECRET_LEN) -> None:
    """Add secret values for this process (``None``, the dummy key and short values are skipped)."""
    _SECRETS.add(*values, min_len=min_len)


def registered() -> tuple[str, ...]:
    """The secret values registered in this process."""
    return _SECRETS.values


def active() -> bool:
    """True once any secret value is registered (callers may skip redaction before that)."""
    return bool(_SECRETS)


def clear() -> None:
    """Forget every registered value (tests)."""
    _SECRETS.clear()


def redact_values(text: str) -> str:
    """``text`` with every registered secret value replaced by :data:`MASK` (hot path)."""
    return _SECRETS.sub(text)


def _extra(text: str, extra: Iterable[str]) -> str:
    for s in extra:
        if s and len(s) >= MIN_SECRET_LEN and s != "EMPTY":
            text = text.replace(s, MASK)
    return text


# -- secret shapes ---------------------------------------------------------------------------

# URL user-info: scheme://user:password@host -> scheme://***@host
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^\s/?#@\"'<>]+@")
# ?key=... &token=... ;sig=...
_QUERY = re.compile(rf"(?i)([?&;](?:{_PARAM_ALT})=)[^&#;\s\"'<>]+")
# Authorization headers and bearer tokens
_AUTH = re.compile(
    r"(?i)\b(authorization[\"']?\s*[:=]\s*[\"']?(?:basic\s+|bearer\s+|token\s+)?)[^\s\"',;]+"
)
_BEARER = re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9\-._~+/*]{6,}=*")
# well-known key formats
_KEY_SHAPES = re.compile(
    r"()(?:\b(?:sk|pk|rk)-[A-Za-z0-9_\-]{12,}"
    r"|\bhf_[A-Za-z0-9]{16,}"
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"
    r"|\bxox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|\bAKIA[0-9A-Z]{16}\b)"
)
# a secret flag and its value inside one text: "--api-key X", "--api-key=X", "[--api-key,X]"
_FLAG_IN_TEXT = re.compile(
    r"(?i)(--[\w-]*?(?:api[-_]?key|token|secret|password|passwd)(?:=|,\s*|\s+))(?!-)"
    r"[^\s\"',\]\)]+"
)
# assignments in logs and dumps: api_key='X', "token": "X", api_key=['X']
_ASSIGN = re.compile(
    r"(?i)([\"']?\b(?:api[-_]?key|\w*[-_]token|token|secret|password|passwd)[\"']?"
    r"\s*[:=]\s*\[?\s*[\"']?)(?!None\b|null\b|\*\*\*)[^\s\"',\]\)}]+"
)
# partially masked provider keys and key-ish words ("Incorrect API key provided: sk-ab****yz")
_LOOSE_KEY = re.compile(r"(?i)()\b(?:sk|pk|rk|key|api[-_]?key)[-_][A-Za-z0-9*_\-.]{4,}")

_MASKED = r"\g<1>" + MASK
_STRONG = (
    (_USERINFO, _MASKED + "@"),
    (_QUERY, _MASKED),
    (_AUTH, _MASKED),
    (_BEARER, _MASKED),
    (_KEY_SHAPES, _MASKED),
    (_FLAG_IN_TEXT, _MASKED),
)
_LOOSE = ((_ASSIGN, _MASKED), (_LOOSE_KEY, _MASKED))


def _strong(text: str) -> str:
    for pattern, repl in _STRONG:
        text = pattern.sub(repl, text)
    return text


def redact_text(text: str, extra: Iterable[str] = ()) -> str:
    """Free text with known values, ``extra`` values and every secret shape masked.

    For error messages, log lines, console output and server logs, where losing a key-shaped
    word is better than keeping a key. Never for recorded output text (see
    :func:`redact_values`).
    """
    if not text:
        return text
    text = _SECRETS.sub(_extra(str(text), extra))
    text = _strong(text)
    for pattern, repl in _LOOSE:
        text = pattern.sub(repl, text)
    return text


def redact_url(url: str) -> str:
    """``url`` with user-info and secret query parameters masked; other parameters kept."""
    if not url:
        return url
    text = _SECRETS.sub(str(url))
    try:
        u = urlsplit(text)
    except ValueError:
        return _strong(text)
    if not u.scheme or not u.netloc:
        return _strong(text)
    netloc = u.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    query = u.query
    if query:
        parts = []
        for part in query.split("&"):
            name, eq, _value = part.partition("=")
            parts.append(f"{name}={MASK}" if eq and _is_secret_param(name) else part)
        query = "&".join(parts)
    return _strong(urlunsplit((u.scheme, netloc, u.path, query, u.fragment)))


def _scan_argv(argv: Iterable[Any]) -> Iterator[tuple[str, str | None, str]]:
    """Classify command-line words once, for :func:`redact_argv` and :func:`argv_secrets`:
    ``(word, kind, secret)`` with kind ``flag`` (a secret flag; its value is the next word),
    ``value`` (that next word), ``eq`` (``--api-key=X``), ``override`` (``a.api_key=X``) or
    None (an ordinary word); ``secret`` is the secret value ("" when none)."""
    after_flag = False
    for raw in argv:
        word = str(raw)
        if after_flag:
            after_flag = False
            if not word.startswith("-"):
                yield word, "value", word
                continue
        key, eq, value = word.partition("=")
        if _is_secret_flag(word):
            after_flag = True
            yield word, "flag", ""
        elif eq and value and _is_secret_flag(key):
            yield word, "eq", value
        elif eq and value and _OVERRIDE_KEY.match(key) and is_secret_key(key):
            yield word, "override", value
        else:
            yield word, None, ""


def redact_argv(argv: Iterable[Any]) -> list[str]:
    """Command-line words with secrets hidden.

    ``--api-key X`` -> ``--api-key ***``; ``--api-key=X`` -> ``--api-key=***`` (any flag whose
    name ends like a secret: ``--hf-token``, ``--password``...); ``a.b.api_key=X`` (a Hydra
    override of a secret-looking key) -> ``a.b.api_key=***redacted***``; every word is also
    scrubbed of known values and secret shapes (URLs with user-info, ``sk-...``).
    """
    out: list[str] = []
    for word, kind, _ in _scan_argv(argv):
        if kind == "flag":
            out.append(word)
        elif kind == "value":
            out.append(MASK)
        elif kind == "eq":
            out.append(f"{word.partition('=')[0]}={MASK}")
        elif kind == "override":
            out.append(f"{word.partition('=')[0]}={REDACTED}")
        else:
            out.append(_strong(_SECRETS.sub(word)))
    return out


def redact_tree(obj: Any) -> Any:
    """A copy of a config tree (dicts, lists, scalars) with its secrets hidden.

    Values under secret-looking keys become :data:`REDACTED` (``api_key_env`` is kept: it is
    a variable's name); lists of strings are redacted as argv (``launch.args``); other strings
    lose known values and secret shapes (URL user-info and query keys, bearer tokens).
    """
    if isinstance(obj, Mapping):
        out = {}
        for k, v in obj.items():
            if isinstance(k, str) and is_secret_key(k) and v is not None:
                out[k] = REDACTED
            else:
                out[k] = redact_tree(v)
        return out
    if isinstance(obj, list | tuple):
        if obj and all(isinstance(v, str) for v in obj):
            return redact_argv(obj)
        return [redact_tree(v) for v in obj]
    if isinstance(obj, str):
        return _strong(_SECRETS.sub(obj))
    return obj


# -- finding the secrets ---------------------------------------------------------------------


def argv_secrets(argv: Iterable[Any]) -> list[str]:
    """The values of secret flags in command-line words (``--api-key X``, ``--api-key=X``)."""
    return [secret for _, kind, secret in _scan_argv(argv) if kind not in (None, "flag")]


def url_secrets(url: str | None) -> list[str]:
    """A URL's password (or a long user name: a token) and secret query parameter values."""
    if not url:
        return []
    try:
        u = urlsplit(str(url))
    except ValueError:
        return []
    found: list[str] = []
    if u.password:
        found.append(u.password)
    elif u.username and len(u.username) >= MIN_ENV_SECRET_LEN:  # a token as the user name
        found.append(u.username)
    for part in u.query.split("&"):
        name, eq, value = part.partition("=")
        if eq and value and _is_secret_param(name):
            found.append(value)
    return found


def tree_secrets(obj: Any) -> list[str]:
    """Secret values in a config tree: under secret-looking keys, after secret flags, in URLs."""
    found: list[str] = []
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if isinstance(k, str) and k != "api_key_env" and is_secret_key(k):
                if isinstance(v, str):
                    found.append(v)
                elif isinstance(v, Mapping | list | tuple):
                    found += [x for x in _leaves(v) if isinstance(x, str)]
            else:
                found += tree_secrets(v)
    elif isinstance(obj, list | tuple):
        if obj and all(isinstance(v, str) for v in obj):
            found += argv_secrets(obj)
        for v in obj:
            found += tree_secrets(v)
    elif isinstance(obj, str) and "://" in obj:
        for url in _URL_IN_TEXT.findall(obj):
            found += url_secrets(url)
    return found


def _leaves(obj: Any) -> list[Any]:
    if isinstance(obj, Mapping):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, list | tuple):
        return [x for v in obj for x in _leaves(v)]
    return [obj]


def looks_like_env_name(name: str) -> bool:
    """True for a plausible environment variable name, False for something key-shaped.

    A valid name is ``[A-Za-z_][A-Za-z0-9_]*``; a long mixed string of letters and digits
    without an underscore (``AbC123...``) is taken for a pasted key too.
    """
    if not _ENV_NAME.match(name):
        return False
    if "_" not in name and len(name) >= 20 and re.search(r"\d", name) and re.search("[a-z]", name):
        return False
    return True


def env_secrets(environ: Mapping[str, str] | None = None) -> list[str]:
    """Values of well-known and secret-named environment variables."""
    environ = os.environ if environ is None else environ
    found = []
    for name, value in environ.items():
        if not value or any(c.isspace() for c in value.strip()):
            continue
        if name in WELL_KNOWN_SECRET_ENV or (
            _ENV_SECRET_NAME.search(name) and len(value) >= MIN_ENV_SECRET_LEN
        ):
            found.append(value)
    return found


def target_secrets(target: Any, environ: Mapping[str, str] | None = None) -> list[str]:
    """Every secret one target config carries or points at (a ``TargetConfig``)."""
    environ = os.environ if environ is None else environ
    found: list[str] = []
    env_name = getattr(target, "api_key_env", None)
    if env_name and looks_like_env_name(str(env_name)):
        found.append(environ.get(str(env_name), ""))
    elif env_name:
        found.append(str(env_name))  # a key pasted where a name belongs
    found += url_secrets(getattr(target, "base_url", None))
    launch = getattr(target, "launch", None)
    if launch is not None:
        found += argv_secrets(getattr(launch, "args", None) or [])
        for name, value in dict(getattr(launch, "env", None) or {}).items():
            if is_secret_key(str(name)) or _ENV_SECRET_NAME.search(str(name)):
                found.append(str(value))
    found += tree_secrets(dict(getattr(target, "extra_body", None) or {}))
    return [v for v in found if v]


def register_targets(arms: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> None:
    """Register every arm's secrets and the well-known secret environment variables."""
    for target in arms.values():
        register(*target_secrets(target, environ))
    register_environment(environ)


_MAP_ITEM = re.compile(r"([\w.-]+)['\"]?\s*:\s*['\"]?([^,\]}\s'\"]+)")


def argv_word_secrets(argv: Iterable[Any]) -> list[str]:
    """Secrets in command-line words, Hydra overrides included.

    ``a.api_key=X``, ``--api-key X``, URLs with credentials (``a.base_url=https://u:X@h``),
    secret flags inside a list value (``a.launch.args=[--api-key,X]``) and a key given as
    ``a.api_key_env=VALUE`` where VALUE is no variable name.
    """
    words = [str(w) for w in argv]
    found = argv_secrets(words)
    for word in words:
        key, eq, value = word.partition("=")
        if not eq or not value:
            continue
        for url in _URL_IN_TEXT.findall(value):
            found += url_secrets(url)
        tokens = [t for t in re.split(r"[\[\]{},'\"\s]+", value) if t]
        if len(tokens) > 1:
            found += argv_secrets(tokens)
        for m in _MAP_ITEM.finditer(value):  # {HF_TOKEN: X} inside a value
            if is_secret_key(m.group(1)) and not m.group(2).startswith("//"):
                found.append(m.group(2))
        if key.endswith("api_key_env") and not looks_like_env_name(value.strip("'\"")):
            found.append(value)
    return found


def register_argv(argv: Iterable[Any]) -> None:
    """Register the secrets of command-line words (before anything parses or prints them)."""
    register(*argv_word_secrets(argv))


def register_tree(obj: Any) -> None:
    """Register the secrets of a (resolved) config tree."""
    register(*tree_secrets(obj))


def register_environment(environ: Mapping[str, str] | None = None) -> None:
    """Register well-known and secret-named environment variables' values."""
    register(*env_secrets(environ))


# -- console and logs ------------------------------------------------------------------------


class RedactingStream:
    """A text stream wrapper that redacts everything written (stdout/stderr of the CLI)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        self._stream.write(redact_text(text) if text else text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    @property
    def wrapped(self) -> Any:
        return self._stream

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def install_console_redaction() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` so nothing printed shows a secret (idempotent).

    Covers prints, log records, tracebacks and what libraries (Hydra's "Error executing job
    with overrides") write; subprocesses keep their own file descriptors.
    """
    if not isinstance(sys.stdout, RedactingStream):
        sys.stdout = RedactingStream(sys.stdout)
    if not isinstance(sys.stderr, RedactingStream):
        sys.stderr = RedactingStream(sys.stderr)


# -- the log filter for a subprocess ---------------------------------------------------------


def tee(fd_in: int, path: str, secrets: Iterable[str] = (), max_line: int = 65536) -> None:
    """Copy ``fd_in`` to the file ``path`` (appending), one redacted line at a time, until EOF."""
    register(*secrets)
    register_environment()
    out = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    pending = b""

    def emit(data: bytes) -> None:
        text = data.decode("utf-8", "surrogateescape")
        os.write(out, redact_text(text).encode("utf-8", "surrogateescape"))

    try:
        while True:
            chunk = os.read(fd_in, 65536)
            if not chunk:
                break
            pending += chunk
            cut = pending.rfind(b"\n") + 1
            if cut:
                emit(pending[:cut])
                pending = pending[cut:]
            elif len(pending) > max_line:
                emit(pending)
                pending = b""
        if pending:
            emit(pending)
    finally:
        os.close(out)


def _main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--tee":
        print("usage: python -m harness.redaction --tee LOG_FILE  (reads stdin)", file=sys.stderr)
        return 2
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's own shutdown ends the stream
    secrets = json.loads(os.environ.pop(TEE_SECRETS_ENV, "[]") or "[]")
    tee(0, argv[1], secrets)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
