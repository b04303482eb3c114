"""JSON output: make a summary JSON-safe (NaN/inf -> null, numpy scalars -> Python) and write it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from harness.record.manifest import write_json_atomic


def json_safe(obj: Any) -> Any:
    """A copy of ``obj`` that ``json.dumps(..., allow_nan=False)`` accepts."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [json_safe(v) for v in obj.tolist()]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)


def write_json(path: Path, data: Any) -> None:
    """Write ``json_safe(data)`` atomically (temp file, fsync, rename), indented."""
    write_json_atomic(Path(path), json_safe(data), allow_nan=False)
