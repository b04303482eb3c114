"""Scorers: one pure function per quality measure of a model output against an eval item.

Each scorer function takes the output text (untrusted: any size, any characters) and what it
needs of the item, and returns a float: ``1.0`` / ``0.0`` for a **binary** scorer, a value in
``[0, 1]`` for a **score**, a token count for a **length**; ``None`` when it cannot say
(output length with no token count). Which scorers apply to an item comes from its
``format`` (see :data:`DEFAULT_SCORERS`), its ``regex`` and ``schema`` fields, or its own
``scorers`` list (:func:`scorers_for`). :data:`SCORERS` is the registry: name, kind, which
direction is better, the function.

Scorers (the README's "Scorers" table quotes these definitions):

- ``exact_match``: ``normalize(output) == normalize(reference)`` (:func:`normalize_text`);
  for a JSON item the parsed output equals the parsed reference (:func:`json_equal`).
- ``numeric_match``: the last number in the output is within ``tolerance`` of the reference
  number (:func:`numeric_match`).
- ``token_f1``: SQuAD token F1 between the output and the reference (:func:`token_f1`).
- ``similarity``: rapidfuzz's normalised Indel similarity of the normalised texts
  (:func:`similarity`).
- ``regex_match``: the item's ``regex`` is found in the output (:func:`regex_match`).
- ``json_schema``: a JSON value found in the output is valid against the item's ``schema``
  (:func:`json_schema_valid`).
- ``refusal``: the output refuses (:func:`is_refusal`; lower is better).
- ``format_valid``: the output has exactly the item's ``format`` (:func:`format_valid`).
- ``output_tokens``: the response's ``completion_tokens`` (:func:`output_tokens`).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rapidfuzz.distance import Indel

from harness.workloads.eval import FORMATS, schema_key, schema_validator

KINDS = ("binary", "score", "length")

# ------------------------------------------------------------------ normalisation

#: Markdown emphasis / code marks and HTML tags, removed before comparing.
_MARKUP = re.compile(r"</?[A-Za-z][^<>]{0,200}>|[*`~]+|^#+\s*|^>\s*", re.MULTILINE)
_ARTICLES = re.compile(r"\b(a|an|the)\b")
#: Characters stripped from both ends: ASCII punctuation, typographic quotes, whitespace.
_EDGE = "".join(chr(c) for c in range(33, 127) if not chr(c).isalnum()) + "“”‘’«»„‚…–— \t\r\n"
_SIGNS = "-+."
_DASHES = str.maketrans({"\u2212": "-", "\u2012": "-", "\u2013": "-", "\u2014": "-"})


def _fold(text: str) -> str:
    """NFKD, accents dropped, case-folded, Unicode minus/dashes as ``-``, ``’`` as ``'``."""
    text = unicodedata.normalize("NFKD", text.translate(_DASHES))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return text.casefold().replace("\u2019", "'").replace("\u2018", "'")


def _strip_edges(s: str) -> str:
    s = s.rstrip(_EDGE)
    i = 0
    while i < len(s) and s[i] in _EDGE:
        if s[i] in _SIGNS and i + 1 < len(s) and s[i + 1].isdigit():
            break  # keep the sign of "-5" and the point of ".5"
        i += 1
    return s[i:]


def normalize_text(text: str) -> str:
    """The comparison form of an answer: Unicode NFKD with accents dropped (``Bogotá`` =
    ``Bogota``), case-folded, markup removed (Markdown ``*``, `` ` ``, ``~``, headings,
    quotes, HTML tags), the articles *a, an, the* removed, whitespace collapsed, and
    punctuation and quotes stripped from both ends (a leading sign or decimal point of a
    number is kept: ``-5`` stays ``-5``, ``Paris.`` becomes ``paris``)."""
    s = _MARKUP.sub(" ", _fold(text))
    s = _ARTICLES.sub(" ", s)
    return _strip_edges(" ".join(s.split()))


# ------------------------------------------------------------------ correctness


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two parsed JSON values: objects key by key (order ignored), arrays in
    order, numbers by value (``34 == 34.0``) but never a boolean for a number, strings
    exactly."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _strict_json(text: str) -> tuple[bool, Any]:
    try:
        return True, json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError, 4300-digit integers
        return False, None


def exact_match(output: str, reference: str, fmt: str = "short") -> float:
    """1.0 when ``normalize_text(output) == normalize_text(reference)``, else 0.0. For
    ``fmt == "json"``: 1.0 when the whole output (stripped) parses as JSON and
    :func:`json_equal` to the parsed reference (key order and spacing do not matter; prose
    or a code fence around the JSON fails)."""
    if fmt == "json":
        ok_ref, ref = _strict_json(reference)
        ok_out, out = _strict_json(output.strip())
        if ok_ref and ok_out:
            return float(json_equal(out, ref))
        if ok_ref:
            return 0.0
    return float(normalize_text(output) == normalize_text(reference))


#: A number as written in answers: optional sign, digits with optional thousands commas,
#: optional decimals and exponent. Not inside a word (``x2``) or after a decimal point.
_NUM = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])"
    r"|(?<![\w.])[-+]?\.\d+(?![\w])"
)


def extract_numbers(text: str) -> list[float]:
    """The numbers in ``text`` in order (``1,234.5`` is one number; Unicode minus is a sign;
    a number glued to letters, ``x2`` or ``3rd``, is not one)."""
    out = []
    for m in _NUM.finditer(text.translate(_DASHES)):
        try:
            v = float(m.group().replace(",", ""))
        except ValueError:  # pragma: no cover - the pattern only matches numbers
            continue
        if math.isfinite(v):
            out.append(v)
    return out


def numeric_match(output: str, reference: str, tolerance: float | None = None) -> float:
    """1.0 when the **last** number in the output (:func:`extract_numbers`; the final answer
    of "89 + 58 = 147") differs from the reference number by at most ``tolerance``
    (default: ``1e-9 * max(1, |reference|)``, i.e. equal up to float noise), else 0.0 (also
    when the output has no number). A reference that is not a number scores 0.0."""
    ref = extract_numbers(reference.strip())
    if len(ref) != 1:
        return 0.0
    got = extract_numbers(output)
    if not got:
        return 0.0
    tol = 1e-9 * max(1.0, abs(ref[0])) if tolerance is None else tolerance + 1e-12
    return float(abs(got[-1] - ref[0]) <= tol)


def _squad_tokens(text: str) -> list[str]:
    s = _MARKUP.sub(" ", _fold(text))
    s = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in s)
    return _ARTICLES.sub(" ", s).split()


def token_f1(output: str, reference: str) -> float:
    """SQuAD token F1 (Rajpurkar et al. 2016): both texts lower-cased, accents, punctuation,
    symbols and articles removed, split on whitespace; with ``common`` the size of the
    multiset intersection, ``P = common / len(output tokens)``, ``R = common / len(reference
    tokens)``, ``F1 = 2PR / (P + R)``; 0.0 with no common token; 1.0 when both are empty, 0.0
    when only one is."""
    out, ref = _squad_tokens(output), _squad_tokens(reference)
    if not out or not ref:
        return float(not out and not ref)
    common = sum((Counter(out) & Counter(ref)).values())
    if common == 0:
        return 0.0
    p, r = common / len(out), common / len(ref)
    return 2 * p * r / (p + r)


def similarity(output: str, reference: str) -> float:
    """Normalised Indel similarity of the normalised texts (:func:`normalize_text`), by
    ``rapidfuzz.distance.Indel.normalized_similarity``: ``1 - (insertions + deletions) /
    (len(a) + len(b))``, i.e. ``2 * LCS(a, b) / (len(a) + len(b))`` over characters (what
    ``rapidfuzz.fuzz.ratio`` reports as a percentage). 1.0 when both are empty."""
    a, b = normalize_text(output), normalize_text(reference)
    if not a and not b:
        return 1.0
    return float(Indel.normalized_similarity(a, b))


def regex_match(output: str, pattern: str) -> float:
    """1.0 when ``re.search(pattern, output)`` finds a match, else 0.0. The item's pattern
    carries its own flags (``(?i)``); use ``^...$`` to match the whole output."""
    return float(re.search(pattern, output) is not None)


#: Candidate JSON starts tried at most when searching an output for a JSON value.
JSON_SEARCH_STARTS = 16
_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)


def find_json(output: str) -> tuple[bool, Any]:
    """``(found, value)``: the output itself parsed as JSON; else the first fenced code block
    that parses; else the first JSON object or array that decodes from one of the first
    :data:`JSON_SEARCH_STARTS` ``{`` / ``[`` positions (prose around it is ignored)."""
    text = output.strip()
    ok, value = _strict_json(text)
    if ok:
        return True, value
    for m in _FENCE.finditer(text):
        ok, value = _strict_json(m.group(1).strip())
        if ok:
            return True, value
    decoder = json.JSONDecoder()
    tries = 0
    for m in re.finditer(r"[{\[]", text):
        tries += 1
        if tries > JSON_SEARCH_STARTS:
            break
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except (ValueError, RecursionError):  # JSONDecodeError, 4300-digit integers
            continue
        return True, value
    return False, None


def json_schema_valid(output: str, schema: dict[str, Any]) -> float:
    """1.0 when a JSON value found in the output (:func:`find_json`: prose or a code fence
    around it is tolerated here, not by ``format_valid``) is valid against ``schema``
    (``jsonschema``, the dialect named by ``$schema``, else the latest), else 0.0."""
    found, value = find_json(output)
    if not found:
        return 0.0
    return float(schema_validator(schema_key(schema)).is_valid(value))


# ------------------------------------------------------------------ behaviour

#: A refusal: "I can't / cannot / won't / am unable to / am not able to" followed by help,
#: assist, answer, ..., "I must decline", or "as an AI (language model)", within
#: :data:`REFUSAL_WINDOW` characters of the start.
_REFUSAL = re.compile(
    r"\bi\s*(?:'m|am)?\s*(?:can'?t|cannot|can not|won'?t|will not|unable to|not able to|"
    r"must decline|do not feel comfortable|don'?t feel comfortable)\b"
    r"(?:\s+\w+){0,2}?\s*(?:help|assist|answer|provide|comply|do|share|support|fulfil|"
    r"fulfill|respond|discuss|complete|engage|that|this)\b"
    r"|\bi\s*(?:'m|am)?\s*must decline\b|\bas an ai\b(?:\s+language model)?"
)
REFUSAL_WINDOW = 300


def is_refusal(output: str) -> float:
    """1.0 when the output opens with a refusal, else 0.0: within its first
    :data:`REFUSAL_WINDOW` characters (case-folded, typographic apostrophes as ``'``) it says
    "I can't / cannot / won't / am unable to / am not able to <help, assist, answer,
    provide, comply, do that, ...>", "I must decline", "I don't feel comfortable ..." or "as
    an AI". A wrong answer is not a refusal; an answer that mentions "can't" later is not."""
    return float(_REFUSAL.search(_fold(output[: REFUSAL_WINDOW * 2])[:REFUSAL_WINDOW]) is not None)


_WHOLE_NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+")


def short_limit(reference: str) -> int:
    """Words a ``short`` answer may have: ``max(4, 2 * words of the reference)``."""
    return max(4, 2 * len(reference.split()))


def format_valid(output: str, fmt: str, reference: str = "") -> float:
    """1.0 when the whole output (stripped) has the item's format, else 0.0:

    - ``number``: one number and nothing else (a trailing ``.`` allowed);
    - ``yesno``: ``yes`` or ``no`` (case, markup and end punctuation ignored);
    - ``short``: one non-empty line of at most :func:`short_limit` words;
    - ``json``: the whole output parses as JSON (no prose, no code fence);
    - ``text``: not empty.
    """
    s = output.strip()
    if fmt == "number":
        s = s.translate(_DASHES)
        return float(_WHOLE_NUMBER.fullmatch(s[:-1] if s.endswith(".") else s) is not None)
    if fmt == "yesno":
        return float(normalize_text(s) in ("yes", "no"))
    if fmt == "short":
        return float(bool(s) and "\n" not in s and len(s.split()) <= short_limit(reference))
    if fmt == "json":
        return float(_strict_json(s)[0])
    if fmt == "text":
        return float(bool(s))
    raise ValueError(f"format_valid: unknown format {fmt!r}; expected one of {FORMATS}")


def output_tokens(completion_tokens: float | None) -> float | None:
    """The response's output length in tokens: ``completion_tokens`` as recorded (the
    server's usage, else the client's count: ``tokens_source``); None when unknown."""
    if completion_tokens is None:
        return None
    v = float(completion_tokens)
    return v if math.isfinite(v) and v >= 0 else None


# ------------------------------------------------------------------ registry


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """What the scorers know about an eval item (from the eval file, else from the row)."""

    sample_id: str
    category: str
    reference: str
    format: str = "short"
    schema: dict[str, Any] | None = None
    regex: str | None = None
    tolerance: float | None = None
    scorers: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Scorer:
    """One registered scorer: ``score(output_text, item, completion_tokens)``."""

    name: str
    kind: str  # binary | score | length
    better: str | None  # higher | lower | None (a change either way is a drift)
    score: Callable[[str, ItemSpec, float | None], float | None]
    needs: str | None = None  # the item field it needs: regex | schema | numeric


def _needs_ok(needs: str | None, item: ItemSpec) -> bool:
    if needs == "regex":
        return item.regex is not None
    if needs == "schema":
        return item.schema is not None
    if needs == "numeric":
        return len(extract_numbers(item.reference.strip())) == 1
    return True


SCORERS: dict[str, Scorer] = {
    s.name: s
    for s in (
        Scorer("exact_match", "binary", "higher",
               lambda o, it, _: exact_match(o, it.reference, it.format)),
        Scorer("numeric_match", "binary", "higher",
               lambda o, it, _: numeric_match(o, it.reference, it.tolerance), "numeric"),
        Scorer("token_f1", "score", "higher", lambda o, it, _: token_f1(o, it.reference)),
        Scorer("similarity", "score", "higher", lambda o, it, _: similarity(o, it.reference)),
        Scorer("regex_match", "binary", "higher",
               lambda o, it, _: regex_match(o, it.regex or ""), "regex"),
        Scorer("json_schema", "binary", "higher",
               lambda o, it, _: json_schema_valid(o, it.schema or {}), "schema"),
        Scorer("refusal", "binary", "lower", lambda o, it, _: is_refusal(o)),
        Scorer("format_valid", "binary", "higher",
               lambda o, it, _: format_valid(o, it.format, it.reference)),
        Scorer("output_tokens", "length", None, lambda o, it, n: output_tokens(n)),
    )
}  # fmt: skip
SCORER_NAMES = tuple(SCORERS)

#: Scorers by item format (``regex_match`` and ``json_schema`` join when the item has a
#: ``regex`` / ``schema``).
DEFAULT_SCORERS: dict[str, tuple[str, ...]] = {
    "number": ("exact_match", "numeric_match"),
    "yesno": ("exact_match",),
    "short": ("exact_match", "token_f1", "similarity"),
    "json": ("exact_match", "similarity"),
    "text": ("token_f1", "similarity"),
}
#: Behaviour scorers applied to every item.
BEHAVIOUR_SCORERS = ("refusal", "format_valid", "output_tokens")


def unknown_scorers(names: tuple[str, ...]) -> list[str]:
    """The names in ``names`` that are not registered scorers."""
    return [n for n in names if n not in SCORERS]


def scorers_for(item: ItemSpec) -> list[Scorer]:
    """The scorers that apply to ``item``: its own ``scorers`` list when given (each must be
    registered; one whose field is missing is skipped), else the format's defaults, plus
    ``regex_match`` / ``json_schema`` when it has a regex / schema, plus the behaviour
    scorers."""
    if item.scorers is not None:
        bad = unknown_scorers(item.scorers)
        if bad:
            raise ValueError(
                f"item {item.sample_id!r}: unknown scorer(s) {bad}; known: {', '.join(SCORERS)}"
            )
        names: list[str] = list(dict.fromkeys(item.scorers))
    else:
        names = list(DEFAULT_SCORERS.get(item.format, ()))
        if item.regex is not None:
            names.append("regex_match")
        if item.schema is not None:
            names.append("json_schema")
        names += BEHAVIOUR_SCORERS
    return [SCORERS[n] for n in names if _needs_ok(SCORERS[n].needs, item)]


def score_output(
    output: str, item: ItemSpec, completion_tokens: float | None = None
) -> dict[str, float]:
    """``{scorer: value}`` for one output; scorers that return None are left out."""
    out = {}
    for s in scorers_for(item):
        v = s.score(output, item, completion_tokens)
        if v is not None:
            out[s.name] = float(v)
    return out
