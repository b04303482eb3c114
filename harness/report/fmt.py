"""Number formatting shared by the HTML report and the Markdown memo (plain text, no markup)."""

from __future__ import annotations

import math
from typing import Any


def _ok(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def seconds(x: Any, signed: bool = False) -> str:
    """``0.4123`` -> ``412 ms``; ``1.5`` -> ``1.50 s``; None/NaN -> ``n/a``."""
    if not _ok(x):
        return "n/a"
    sign = "+" if signed and x > 0 else ""
    if abs(x) < 1:
        return f"{sign}{x * 1000:.3g} ms"
    return f"{sign}{x:.3g} s"


def ci_seconds(ci: Any, signed: bool = False) -> str:
    if not ci or not all(_ok(v) for v in ci):
        return "n/a"
    return f"{seconds(ci[0], signed)} to {seconds(ci[1], signed)}"


def pct(x: Any, digits: int = 1) -> str:
    return f"{100 * x:.{digits}f}%" if _ok(x) else "n/a"


def num(x: Any, digits: int = 3) -> str:
    if not _ok(x):
        return "n/a"
    if isinstance(x, int) or float(x).is_integer() and abs(x) >= 1:
        return f"{int(x):,}"
    return f"{x:.{digits}g}"


def bound(x: Any) -> str:
    return "not checked" if x is None else seconds(x)
