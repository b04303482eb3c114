"""Latency metric definitions, computed in one place from one attempt's timestamps.

All inputs are integer nanoseconds on the same clock (see :mod:`harness.targets.clock`);
outputs are seconds. A *content chunk* is an SSE chunk that carries generated text
(``delta.content`` for chat, ``text`` for completions; reasoning deltas count too). Role-only
chunks, the ``finish_reason`` chunk without text and the trailing usage chunk are not content
chunks, so they never move TTFT, ITL or the end of a successful stream. This is stricter than
vLLM ``bench serve``, whose TTFT is the first chunk with non-empty ``choices`` (in chat
usually the role-only chunk) and whose end counts a finish-only chunk; both exclude the
trailing usage chunk.
"""

from __future__ import annotations

NS = 1_000_000_000


def queue_delay_s(t_sent: int, t_scheduled: int) -> float:
    """Client lag: ``t_sent - t_scheduled`` (how late the client started the attempt)."""
    return (t_sent - t_scheduled) / NS


def ttft_s(t_first_token: int, t_start: int) -> float:
    """Time to first token: ``t_first_token - t_start`` (``t_start`` = t_sent or t_scheduled)."""
    return (t_first_token - t_start) / NS


def e2e_s(t_end: int, t_start: int) -> float:
    """End-to-end latency: ``t_end - t_start``; ``t_end`` is the last content chunk of a
    successful stream, or the moment a failed attempt's error was detected."""
    return (t_end - t_start) / NS


def tpot_s(t_first_token: int, t_last_token: int, completion_tokens: int | None) -> float | None:
    """Time per output token after the first:
    ``(t_last_token - t_first_token) / (completion_tokens - 1)``; ``None`` below 2 tokens.
    Callers pass ``None`` instead when every token came in one chunk (nothing was timed)."""
    if completion_tokens is None or completion_tokens < 2:
        return None
    return (t_last_token - t_first_token) / (completion_tokens - 1) / NS


def itl_s(chunk_times: list[int]) -> list[float]:
    """Inter-chunk latencies: every gap between consecutive content chunks, ``t[i] - t[i-1]``.

    Chunks that arrive in the same socket read share one timestamp (gap 0): that is what a
    client observes. A chunk may carry several tokens (cloud APIs batch), so ITL is per chunk,
    while TPOT is per token.
    """
    return [(b - a) / NS for a, b in zip(chunk_times, chunk_times[1:], strict=False)]
