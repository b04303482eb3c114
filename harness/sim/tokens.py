"""Token counting and output text for the simulator, cheap by design.

Prompt tokens are whitespace-separated words. Chat prompts add a fixed overhead like OpenAI's
counting recipe (:func:`chat_prompt_tokens`, the one place the rule lives):
``CHAT_TOKENS_PER_MESSAGE`` (3) per message and ``CHAT_REPLY_PRIMING`` (3) for the assistant
reply, so a chat prompt of one user message with N words is N + 6 tokens and a
completions prompt of N words is N tokens. A workload generator that wants N prompt tokens
writes N - 6 words (chat) or N words (completions).

Output tokens are words from :data:`VOCAB`, common English words that are single tokens in
cl100k with a leading space (" the", " of", " time", ...). One streamed content chunk carries
exactly one token, so chunk count == ``completion_tokens`` and a cl100k count of the text is
close to it (the first word has no leading space).
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Any

import orjson

# Per message: <|role|>, its words, then _MESSAGE_END; after the messages: _REPLY_PRIMING.
_MESSAGE_END = ("<|end|>", "<|sep|>")
_REPLY_PRIMING = ("<|assistant|>", "<|start|>", "<|sep|>")
CHAT_TOKENS_PER_MESSAGE = 1 + len(_MESSAGE_END)
CHAT_REPLY_PRIMING = len(_REPLY_PRIMING)

VOCAB: tuple[str, ...] = tuple(
    dict.fromkeys(
        """the of and to in is that for it as was with be by on not he this are or his from at
    which but have an had they you were their one all we can her has there been if more when
    will would who so no time people year way day man thing world life hand part child eye
    woman place work week case point number group problem fact about after also any back
    because before between both each even first get good great here how into just know last
    like long made make many may much must new now old only other our out over own same see
    should since some still such take than then these those through under up very well what
    where while why work year years most made could them some new just way use used using
    water house city state country family school system program question government company
    side area night home room mother father money story power report line end member law
    car market name team minute idea body information back parent face level office door
    health person art war history party result change morning reason research girl guy moment
    air teacher force education foot boy age policy process music book student word business
    issue kind head friend month lot right study game job food land data light sense service
    table form order price rate plan model value field test cost risk quality speed""".split()
    )
)
# The same words, with a leading space, JSON-escaped and UTF-8 encoded, ready to splice.
VOCAB_PIECES = tuple(orjson.dumps(" " + w)[1:-1] for w in VOCAB)
_VOCAB_FIRST = tuple(orjson.dumps(w)[1:-1] for w in VOCAB)
# A fixed pseudo-random walk over the vocabulary; an output is a window into it: token i of
# an output with offset o is VOCAB[WALK[(o + i) & WALK_MASK]].
WALK_MASK = (1 << 16) - 1
_walk_rng = random.Random(20261101)
WALK: tuple[int, ...] = tuple(_walk_rng.randrange(len(VOCAB)) for _ in range(WALK_MASK + 1))


def message_text(content: Any) -> str:
    """The text of a chat message's ``content`` (a string, or a list of text parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        if isinstance(part, dict) and isinstance(part.get("text"), str):
            parts.append(part["text"])
    return " ".join(parts)


def chat_prompt_tokens(
    messages: list[dict[str, Any]],
    *,
    generation_prompt: bool = True,
    continue_final: bool = False,
) -> list[str]:
    """The chat prompt as a token list: per message ``<|role|>``, its words, ``<|end|>``,
    ``<|sep|>``; then three tokens priming the assistant reply (words + 3 per message + 3).

    ``generation_prompt=False`` leaves out the reply priming and ``continue_final=True`` also
    leaves the last message open (no end tokens), like vLLM's ``/tokenize`` options
    ``add_generation_prompt`` and ``continue_final_message``."""
    toks: list[str] = []
    for i, m in enumerate(messages):
        toks.append(f"<|{m.get('role')}|>")
        toks.extend(message_text(m.get("content")).split())
        if not (continue_final and i == len(messages) - 1):
            toks.extend(_MESSAGE_END)
    if generation_prompt:
        toks.extend(_REPLY_PRIMING)
    return toks


def block_hashes(tokens: list[str], block_size: int) -> list[int]:
    """Chained hashes of the full ``block_size`` blocks of ``tokens`` (prefix-cache keys)."""
    out: list[int] = []
    h = 0
    for i in range(0, len(tokens) - block_size + 1, block_size):
        h = hash((h, tuple(tokens[i : i + block_size])))
        out.append(h)
    return out


def request_rng(*parts: Any) -> random.Random:
    """A generator seeded from ``parts`` (stable across processes, unlike ``hash``)."""
    key = "\x1f".join(str(p) for p in parts).encode("utf-8", "surrogatepass")
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def natural_length(rng: random.Random, median: float, sigma: float) -> int:
    """An output length at natural EOS: lognormal(median, sigma), at least 1."""
    if sigma <= 0:
        return max(1, round(median))
    return max(1, round(median * math.exp(rng.gauss(0.0, sigma))))


class Output:
    """The tokens of one response: optional fixed words (a reference answer) followed by
    generated vocabulary words. ``piece(i)`` is token ``i`` JSON-escaped, ``text()`` all."""

    __slots__ = ("n", "_fixed", "offset", "n_fixed")

    def __init__(self, n: int, offset: int, fixed: list[str] | None = None) -> None:
        self.n = n
        self.offset = offset
        self._fixed = [orjson.dumps(w)[1:-1] for w in fixed] if fixed else None
        self.n_fixed = len(fixed) if fixed else 0  # tokens before the vocabulary walk

    def piece(self, i: int) -> bytes:
        """Token ``i`` as JSON-escaped UTF-8 (to splice into a string literal)."""
        fixed = self._fixed
        if fixed is not None and i < len(fixed):
            return fixed[i]
        w = WALK[(self.offset + i) & WALK_MASK]
        return _VOCAB_FIRST[w] if i == 0 else VOCAB_PIECES[w]

    def word(self, i: int) -> str:
        """Token ``i`` as text."""
        return orjson.loads(b'"' + self.piece(i) + b'"')

    def text(self, upto: int | None = None) -> str:
        """The first ``upto`` tokens (default all) as one string."""
        n = self.n if upto is None else upto
        return orjson.loads(b'"' + b"".join(self.piece(i) for i in range(n)) + b'"')


def answer_words(answer: str) -> list[str]:
    """A reference answer split into tokens: words, each after the first with a space."""
    words = answer.split()
    return [w if i == 0 else " " + w for i, w in enumerate(words)] or [answer]
