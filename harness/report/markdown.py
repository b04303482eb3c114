"""Markdown helpers for ``memo.md``: escaping untrusted text and small tables.

:func:`md_escape` makes text inert in Markdown and in the HTML that Markdown renderers pass
through: ``<``, ``>`` and ``&`` become entities (so ``<script>`` shows as text), Markdown
characters that start emphasis, code, links or table cells (backslash, backtick, ``*``,
``[``, ``]``, ``|``, ``~``) get a backslash, and newlines are folded (so a line of text cannot
become a heading or a list item).
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterable, Sequence
from typing import Any

_MD_SPECIAL = re.compile(r"([\\`*\[\]|~])")


def md_escape(text: Any, limit: int = 300) -> str:
    """Untrusted text as inert Markdown on one line (truncated to ``limit`` characters)."""
    s = " ".join(("" if text is None else str(text)).split())
    if len(s) > limit:
        s = s[: limit - 1] + "…"
    s = html.escape(s, quote=False)
    return _MD_SPECIAL.sub(r"\\\1", s)


def md_table(headers: Sequence[Any], rows: Iterable[Sequence[Any]]) -> list[str]:
    """A pipe table; cells are escaped (they may hold names taken from the data)."""
    out = ["| " + " | ".join(md_cell(h) for h in headers) + " |"]
    out.append("|" + "|".join("---" for _ in headers) + "|")
    out += ["| " + " | ".join(md_cell(c) for c in r) + " |" for r in rows]
    return out


#: Longest table cell (characters) before truncation.
CELL_LIMIT = 300


def md_cell(text: Any) -> str:
    """A table cell: :func:`md_escape` (numbers and units have nothing to escape)."""
    return md_escape(text, CELL_LIMIT)
