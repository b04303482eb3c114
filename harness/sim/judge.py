"""The simulator as an LLM judge: a prompt in the fixed format of
:func:`harness.quality.llm_judge.build_prompt` (first line ``[[JUDGE]] pairwise v1``) is
answered ``A``, ``B`` or ``tie`` by comparing each answer with the reference under the
normalised exact-match scorer (:func:`harness.quality.scorers.exact_match`): the one that
matches wins; both or neither is a tie. Deterministic, and blind to position."""

from __future__ import annotations

#: A cheap first test (the full marker is checked by the prompt parser, imported lazily:
#: numpy and pyarrow only when a judge prompt arrives).
PREFIX = "[[JUDGE]]"


def judge_verdict(text: str) -> str | None:
    """The verdict for a judge prompt, or None when ``text`` is not one."""
    if not text.startswith(PREFIX):
        return None
    from harness.quality.llm_judge import MARKER, parse_prompt

    fields = parse_prompt(text) if text.startswith(MARKER) else None
    if fields is None:
        return "invalid judge prompt"
    from harness.quality.scorers import exact_match

    ref = fields["REFERENCE"]
    fmt = "json" if ref.lstrip().startswith(("{", "[")) else "short"
    a = exact_match(fields["ANSWER A"], ref, fmt)
    b = exact_match(fields["ANSWER B"], ref, fmt)
    return "tie" if a == b else "A" if a > b else "B"
