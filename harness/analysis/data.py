"""Loading one run for analysis: manifest, request columns as numpy arrays, pooled ITL samples.

This is the I/O edge of the analysis stage. :func:`load_run` reads only the columns the
statistics need, one part file at a time, into compact numpy arrays (categorical columns as
small integer codes, timestamps as float seconds since the run's first timestamp), so that
10 million rows stay within a few GB. Inter-token gaps (``itl_s``, a list per row) are pooled
in a streaming pass: every gap is counted, and a seeded uniform random sample of at most
``itl_max_n`` gaps per (arm, slice) is kept for quantiles (exact when the pool is smaller).
The same pass keeps a uniform random sample of whole requests with their gaps (at most
:data:`ITL_CLUSTER_MAX_GAPS` gaps, never fewer than :data:`ITL_CLUSTER_MIN_REQUESTS`
requests) for the ITL confidence intervals, which resample requests, not gaps (gaps of one
request are correlated; see :mod:`harness.analysis.stats`).

Everything downstream (``harness.analysis.*`` statistics, ``harness.report``) is a pure
function of the :class:`RunData` built here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from harness.analysis.stats import BootstrapSettings, ClusteredSample
from harness.canary.clock import ExperimentClock, clock_from_manifest
from harness.config import AnalysisConfig, SLOConfig
from harness.record.reader import ReaderError, iter_request_parts, read_metrics

#: Pooled ITL gaps kept per (arm, slice) for quantiles; beyond it a uniform sample is used.
ITL_MAX_N = 2_000_000
#: Gaps kept per (arm, slice) in the sample of whole requests the ITL CIs resample: the
#: cluster bootstrap costs O(resamples x gaps kept); beyond it a uniform sample of requests
#: is used and the CI is rescaled (m-out-of-n bootstrap, :mod:`harness.analysis.stats`).
ITL_CLUSTER_MAX_GAPS = 16_384
#: ... but the request sample is never thinned below this many requests.
ITL_CLUSTER_MIN_REQUESTS = 200
#: Sample outputs and error messages kept per arm for the report (untrusted text).
SAMPLE_OUTPUTS = 3
SAMPLE_ERRORS = 5
#: Rows scanned at most when looking for sample texts.
SAMPLE_SCAN_ROWS = 500_000
#: Slice label used for rows with no ``slice`` value.
NO_SLICE = "(none)"

_FLOAT_COLUMNS = (
    "queue_delay_s",
    "ttft_s",
    "e2e_s",
    "ttft_sched_s",
    "e2e_sched_s",
    "tpot_s",
    "prompt_tokens",
    "completion_tokens",
    "requested_max_tokens",
    "cached_tokens",
)
#: Categorical columns the run checks read (:mod:`harness.analysis.checks`) and ``route`` (a
#: router arm's underlying arm per attempt, which prices it: :mod:`harness.cost`):
#: RunData.labels.
_LABEL_COLUMNS = ("client", "tokens_source", "prompt_tokens_source", "route")
#: Boolean columns the run checks read: RunData.flags (null = unknown, e.g. an older file).
_FLAG_COLUMNS = ("forced_length", "streamed")
_TIME_COLUMNS = ("t_scheduled", "t_sent", "t_first_token", "t_end", "t_arrival")
#: Latency columns checked for impossible values on load (negative, infinite, or missing on an
#: ok row): such rows are named in a caveat and left out of the latency statistics.
_CHECKED_LATENCIES = ("ttft_s", "e2e_s", "ttft_sched_s", "e2e_sched_s", "tpot_s", "queue_delay_s")
#: A queue delay may be a hair negative (send clock vs schedule clock); beyond this it is wrong.
QUEUE_DELAY_TOLERANCE_S = 0.001
_MAIN_COLUMNS = (
    "arm",
    "slice",
    "status",
    "error_type",
    "attempt",
    "request_id",
    "pair_id",
    "will_retry",
    "itl_s",
    *_TIME_COLUMNS,
    *_FLOAT_COLUMNS,
    *_LABEL_COLUMNS,
    *_FLAG_COLUMNS,
)


class RunDataError(ValueError):
    """A run directory cannot be analysed; the message names the file and the problem."""


@dataclass
class PooledSample:
    """A bounded uniform sample of a pooled stream of values, with exact count and sum.

    Adaptive Bernoulli thinning: every value is kept with probability ``p`` (1 at first);
    whenever more than ``cap`` values are kept, ``p`` halves and the kept values are thinned
    by a half, so each value of the stream is in the sample with the same probability ``p``.
    """

    chunks: list[np.ndarray] = field(default_factory=list)
    kept: int = 0
    p: float = 1.0
    n_total: int = 0
    total: float = 0.0

    @property
    def values(self) -> np.ndarray:
        if len(self.chunks) != 1:
            self.chunks = [np.concatenate(self.chunks) if self.chunks else np.empty(0)]
        return self.chunks[0]

    @property
    def exact(self) -> bool:
        return self.p == 1.0

    @property
    def mean(self) -> float:
        return self.total / self.n_total if self.n_total else math.nan

    def add(self, new: np.ndarray, rng: np.random.Generator, cap: int) -> None:
        new = new[np.isfinite(new)]
        if new.size == 0:
            return
        self.n_total += int(new.size)
        self.total += float(new.sum())
        if self.p < 1.0:
            new = new[rng.random(new.size) < self.p]
        self.chunks.append(new)
        self.kept += int(new.size)
        while self.kept > cap:
            v = self.values
            v = v[rng.random(v.size) < 0.5]
            self.chunks, self.kept, self.p = [v], int(v.size), self.p / 2


@dataclass
class ClusterSample:
    """A bounded uniform sample of whole clusters (requests) of a stream, with exact counts.

    The thinning of :class:`PooledSample` applied to requests: each request (with all its
    gaps) is kept with probability ``p``; whenever more than ``cap`` values are kept (and at
    least ``2 * min_clusters`` requests), ``p`` halves and the kept requests are thinned by a
    half. ``n_total`` counts every request with at least one finite value.
    """

    values: list[np.ndarray] = field(default_factory=list)
    lengths: list[np.ndarray] = field(default_factory=list)
    kept: int = 0
    p: float = 1.0
    n_total: int = 0

    def add(
        self,
        flat: np.ndarray,
        lengths: np.ndarray,
        rng: np.random.Generator,
        cap: int,
        min_clusters: int = ITL_CLUSTER_MIN_REQUESTS,
    ) -> None:
        """Add requests given as their values end to end (``flat``) and values per request."""
        lengths = np.asarray(lengths, np.int64)
        fin = np.isfinite(flat)
        if not fin.all():
            cid = np.repeat(np.arange(lengths.size), lengths)
            lengths = np.bincount(cid[fin], minlength=lengths.size)
            flat = flat[fin]
        nonempty = lengths > 0
        lengths = lengths[nonempty]
        self.n_total += int(lengths.size)
        if self.p < 1.0:
            keep = rng.random(lengths.size) < self.p
            flat, lengths = flat[np.repeat(keep, lengths)], lengths[keep]
        if lengths.size == 0:
            return
        self.values.append(flat)
        self.lengths.append(lengths)
        self.kept += int(flat.size)
        while self.kept > cap and sum(x.size for x in self.lengths) >= 2 * min_clusters:
            v, n = np.concatenate(self.values), np.concatenate(self.lengths)
            keep = rng.random(n.size) < 0.5
            v, n = v[np.repeat(keep, n)], n[keep]
            self.values, self.lengths, self.kept, self.p = [v], [n], int(v.size), self.p / 2

    def sample(self) -> ClusteredSample:
        """The kept requests for :func:`harness.analysis.stats.cluster_quantiles_ci`."""
        v = np.concatenate(self.values) if self.values else np.empty(0)
        n = np.concatenate(self.lengths) if self.lengths else np.empty(0, np.int64)
        return ClusteredSample(v, n, self.n_total)


@dataclass
class RunData:
    """One run's rows, ready for the statistics (arrays are aligned, one entry per row)."""

    run_dir: Path
    manifest: dict[str, Any]
    run_id: str
    experiment: str
    analysis: AnalysisConfig
    arms: list[str]  # manifest order first, then arms only seen in the data
    arm_info: dict[str, dict[str, Any]]
    slices: list[str]
    arm: np.ndarray  # int16 code into ``arms``
    slice: np.ndarray  # int16 code into ``slices``
    ok: np.ndarray  # bool: status == "ok"
    error_types: list[str]
    error: np.ndarray  # int16 code into ``error_types``; -1 for ok rows / no type
    attempt: np.ndarray  # int32
    request: np.ndarray  # int32 code of request_id (attempts of one logical request share it)
    #: int32 code of pair_id (mirrored runs: the same logical request on every arm shares
    #: it, codes in pair_id order); -1 when null (independent pairing)
    pair: np.ndarray
    will_retry: np.ndarray  # int8: 1 the client retried this failed attempt, 0 no, -1 unknown
    n_chunks: np.ndarray  # int32 content chunks received (len(itl_s) + 1); 0 when none/unknown
    cols: dict[str, np.ndarray]  # float64 (NaN = null): _FLOAT_COLUMNS and _TIME_COLUMNS
    t0_ns: int | None  # absolute time (UTC ns) of relative time 0
    itl: dict[tuple[int, int | None], PooledSample]  # (arm, slice or None = all slices)
    itl_clusters: dict[tuple[int, int | None], ClusterSample]  # same keys: whole requests
    metrics: pa.Table | None
    samples: dict[str, dict[str, list[dict[str, Any]]]]
    notes: list[str] = field(default_factory=list)
    #: rows whose latencies the data checks rejected (None: none); left out of latency
    #: statistics and of goodput (neither a hit nor a miss), kept in counts and failure rates
    rejected: np.ndarray | None = None
    #: categorical columns (``client``, ``tokens_source``, ``prompt_tokens_source``): name ->
    #: (values, int16 code per row into them; -1 = null)
    labels: dict[str, tuple[list[str], np.ndarray]] = field(default_factory=dict)
    #: boolean columns (``forced_length``, ``streamed``): int8 per row, 1 true, 0 false,
    #: -1 unknown (null: a file older than the column, or a row that never got the value)
    flags: dict[str, np.ndarray] = field(default_factory=dict)
    cache: dict[Any, np.ndarray] = field(default_factory=dict, repr=False)
    #: int32 experiment-clock day of each row (from ``t_virtual``, else ``t_scheduled``;
    #: -1 unknown); None when the run has no experiment clock (manifest ``clock``/``t0_ns``)
    day: np.ndarray | None = None
    #: the run's experiment clock (:func:`harness.canary.clock.clock_from_manifest`)
    clock: ExperimentClock | None = None
    #: ``load_run(days=...)``: only rows of these experiment-clock days were loaded (a day's
    #: report); None: every day
    days: tuple[int, ...] | None = None
    #: the ``request_id`` strings by code of ``request`` (``""`` for a null id): with ``arm``
    #: and ``attempt`` each row's key, for joining other reads onto the rows by key
    request_ids: pa.Array | None = None

    @property
    def n_rows(self) -> int:
        return int(self.arm.size)

    def arm_mask(self, arm: str) -> np.ndarray:
        return self.arm == self.arms.index(arm)

    def label_rows(self, column: str, value: str) -> np.ndarray:
        """Rows whose categorical ``column`` (:data:`_LABEL_COLUMNS`) equals ``value``."""
        names, codes = self.labels.get(column, ([], None))
        if codes is None or value not in names:
            return np.zeros(self.n_rows, bool)
        return codes == names.index(value)

    def flag(self, column: str) -> np.ndarray:
        """int8 per row of boolean ``column`` (:data:`_FLAG_COLUMNS`): 1, 0, -1 unknown."""
        v = self.flags.get(column)
        return v if v is not None else np.full(self.n_rows, -1, np.int8)

    def request_parts(self, columns: tuple[str, ...] | list[str]) -> Iterator[pa.Table]:
        """The request part files' ``columns``, part by part, holding exactly the rows of this
        RunData in its order (same phases and, for a day's view, the same days): a pass over
        columns RunData does not keep (output text, fingerprints) aligned with its rows
        (empty parts included; skip them as :func:`load_run` does)."""
        day_filter = (self.clock, self.days) if self.days is not None else None
        phases = tuple(self.analysis.include_phases)
        return _request_parts(self.run_dir, columns, phases, day_filter)

    def row_keys(self) -> pa.Table | None:
        """Each row's key, in row order: ``arm``, ``request_id`` (``""`` when null) and
        ``attempt`` (int32); None without the ids (a RunData built by hand)."""
        if self.request_ids is None:
            return None
        return pa.table({
            "arm": pa.array(np.asarray(self.arms, dtype=object)[self.arm], pa.string()),
            "request_id": self.request_ids.take(pa.array(self.request)),
            "attempt": pa.array(self.attempt, pa.int32()),
        })  # fmt: skip

    def read_rows(self, columns: tuple[str, ...] | list[str]) -> pa.Table | None:
        """``columns`` of the request part files attached to this RunData's rows **by key**
        (:meth:`row_keys`), in row order: a second read never lines up by position alone
        (a running canary writes and compacts parts between reads; compaction re-sorts
        rows). A row whose key the read lacks gets nulls. None without keys or parts."""
        keys = self.row_keys()
        if keys is None:
            return None
        cols = [c for c in columns if c not in keys.column_names]
        try:
            parts = [p for p in self.request_parts(("arm", "request_id", "attempt", *cols))
                     if p.num_rows]  # fmt: skip
        except (ReaderError, OSError):
            return None
        if not parts:
            return None
        read = pa.concat_tables(parts, promote_options="permissive")
        got = pa.table({
            "arm": pc.fill_null(read.column("arm").cast(pa.string()), "(unknown)"),
            "request_id": pc.fill_null(read.column("request_id").cast(pa.string()), ""),
            "attempt": pc.fill_null(read.column("attempt").cast(pa.int32()), 0),
        })  # fmt: skip
        values = read.select(cols)
        if got.num_rows == keys.num_rows and all(
            pc.all(pc.equal(got.column(k), keys.column(k))).as_py() for k in keys.column_names
        ):
            return values  # same keys in the same order
        names = keys.column_names
        right = got.to_pandas().assign(_pos=np.arange(got.num_rows))
        right = right.drop_duplicates(names, keep="last")
        pos = keys.to_pandas().merge(right, on=names, how="left")["_pos"].to_numpy(np.float64)
        miss = np.isnan(pos)
        idx = pa.array(np.where(miss, 0, pos).astype(np.int64), mask=miss)
        return values.take(idx)

    def request_ids_at(self, rows: np.ndarray | list[int]) -> list[str | None]:
        """``request_id`` of the given rows (positions in load order), read back from the part
        files (one pass over that column): for naming a few rows in a caveat."""
        want = np.unique(np.asarray(rows, np.int64))
        found: dict[int, str | None] = {}
        offset = 0
        parts = self.request_parts(("request_id",)) if want.size else ()
        for part in parts:
            n = part.num_rows
            col = part.column("request_id")
            for r in want[(want >= offset) & (want < offset + n)].tolist():
                found[r] = col[r - offset].as_py()
            offset += n
            if offset > want[-1]:
                break
        return [found.get(int(r)) for r in rows]

    def error_rows(self, error_type: str) -> np.ndarray:
        """Rows that failed with ``error_type`` (cached: several statistics ask)."""
        key = ("error_rows", error_type)
        if key not in self.cache:
            if error_type in self.error_types:
                self.cache[key] = ~self.ok & (self.error == self.error_types.index(error_type))
            else:
                self.cache[key] = np.zeros(self.n_rows, bool)
        return self.cache[key]

    @property
    def cancelled(self) -> np.ndarray:
        """Rows the harness itself cancelled (drain, SIGINT): not failures of the target."""
        return self.error_rows("cancelled")

    def window(self, mask: np.ndarray | None = None) -> tuple[float, float]:
        """Analysed window in relative seconds: first scheduled/sent time -> last end/sent time
        of the rows in ``mask`` (all rows when None). Used for the common time axis of plots."""
        c = self.cols
        pick = (lambda a: a) if mask is None else (lambda a: a[mask])
        lo = _nan_extreme([pick(c["t_scheduled"]), pick(c["t_sent"])], np.nanmin)
        hi = _nan_extreme([pick(c["t_end"]), pick(c["t_sent"])], np.nanmax)
        return lo, hi

    def arm_window(self, arm: str) -> tuple[float, float]:
        """One arm's own window: its first scheduled/sent time -> its last end/sent time, over
        its rows that the harness did not cancel. Another arm's stragglers never move it."""
        return self.window(self.arm_mask(arm) & ~self.cancelled)

    def duration_s(self, arm: str | None = None) -> float:
        """Length of :meth:`arm_window` (of :meth:`window` when ``arm`` is None)."""
        lo, hi = self.window() if arm is None else self.arm_window(arm)
        d = hi - lo
        return d if math.isfinite(d) and d > 0 else math.nan

    def bootstrap(self) -> BootstrapSettings:
        a = self.analysis
        return BootstrapSettings(
            confidence=float(a.confidence), resamples=int(a.bootstrap_resamples), seed=int(a.seed)
        )

    def offered(self) -> dict[str, Any]:
        """Offered load from the manifest (``offered``, else ``config.load``): ``rate``,
        ``mode``, ``concurrency``, ``arrival``, ``shape`` and, when the runner wrote them,
        ``expected_arrivals``/``window_s`` (expected arrivals per arm in the main phase)."""
        m = self.manifest
        off = dict(m.get("offered") or {})
        load = (m.get("config") or {}).get("load") or {}
        for key in ("rate", "mode", "concurrency", "arrival", "shape"):
            off.setdefault(key, load.get(key))
        if "expected_arrivals" in off and (self.days is not None or m.get("downtime")):
            windowed = _offered_in_windows(m, self.clock, self.days)
            if windowed is None:  # the expected count for these windows is not known
                for key in ("expected_arrivals", "window_s", "expected_rate"):
                    off.pop(key, None)
            else:
                off["expected_arrivals"], off["window_s"] = windowed
                off["expected_rate"] = windowed[0] / windowed[1] if windowed[1] > 0 else None
        return off


def _offered_in_windows(
    manifest: dict[str, Any], clock: ExperimentClock | None, days: tuple[int, ...] | None
) -> tuple[float, float] | None:
    """``(expected arrivals, window_s)`` over the main phase restricted to ``days`` (a day's
    report), the expected count without the harness's downtime (a resumed run offered
    nothing then), from the arrival process itself; None when it cannot be rebuilt."""
    from dataclasses import fields

    from harness.config import LoadConfig, project_root
    from harness.load.arrivals import build_schedule

    raw = ((manifest.get("config") or {}).get("load")) or {}
    try:
        load = LoadConfig(**{f.name: raw[f.name] for f in fields(LoadConfig) if f.name in raw})
        process = build_schedule(load, project_root()).process
    except Exception:
        return None
    windows = [(float(load.warmup_s), float(load.duration_s - load.cooldown_s))]
    if days is not None:
        if clock is None:
            return None
        span = clock.day_s / clock.time_scale  # one experiment day in wall seconds
        windows = [(max(a, d * span), min(b, (d + 1) * span)) for a, b in windows for d in days]
    # the window keeps the gaps (achieved rates are measured over the whole span, gaps
    # included); the expected count leaves them out (nothing was offered while down)
    span = sum(b - a for a, b in windows if b > a)
    origin = clock.origin_ns if clock is not None else manifest.get("t0_ns")
    for gap in manifest.get("downtime") or []:
        if origin is None or gap.get("from_ns") is None or gap.get("to_ns") is None:
            return None
        lo, hi = (gap["from_ns"] - origin) / 1e9, (gap["to_ns"] - origin) / 1e9
        cut: list[tuple[float, float]] = []
        for a, b in windows:
            cut += [(a, min(b, lo)), (max(a, hi), b)]
        windows = cut
    windows = [(a, b) for a, b in windows if b > a]
    expected = sum(
        float(process.expected_count(b)) - float(process.expected_count(a)) for a, b in windows
    )
    return expected, span


def _nan_extreme(arrays: list[np.ndarray], fn) -> float:
    vals = [fn(a) for a in arrays if a.size and np.isfinite(a).any()]
    return float(fn(vals)) if vals else math.nan


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """``manifest.json`` of a run; an empty dict when it is missing (the data still counts)."""
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise RunDataError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise RunDataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def analysis_from_manifest(manifest: dict[str, Any], source: str = "manifest") -> AnalysisConfig:
    """AnalysisConfig from ``manifest.config.analysis`` (known keys only), defaults elsewhere.

    Values are checked (:func:`check_analysis`); ``source`` names the file in errors.
    """
    config = manifest.get("config")
    if config is None:
        config = {}
    if not isinstance(config, dict):
        raise RunDataError(f"{source}: 'config' must be an object, got {type(config).__name__}")
    raw = config.get("analysis")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise RunDataError(
            f"{source}: 'config.analysis' must be an object, got {type(raw).__name__}"
        )
    known = {f.name for f in fields(AnalysisConfig)}
    kwargs = {k: v for k, v in raw.items() if k in known and k != "slo"}
    slo_raw = raw.get("slo")
    slo_raw = {} if slo_raw is None else slo_raw
    if not isinstance(slo_raw, dict):
        raise RunDataError(
            f"{source}: 'config.analysis.slo' must be an object, got {type(slo_raw).__name__}"
        )
    slo_known = {f.name for f in fields(SLOConfig)}
    slo = SLOConfig(**{k: v for k, v in slo_raw.items() if k in slo_known})
    return check_analysis(AnalysisConfig(**kwargs, slo=slo), source)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def check_analysis(cfg: AnalysisConfig, source: str = "analysis settings") -> AnalysisConfig:
    """Validate (and normalise) analysis settings; :class:`RunDataError` names the bad key.

    ``include_phases``: a non-empty list of names (one string counts as one name);
    ``0 < confidence < 1``; ``bootstrap_resamples >= 1`` (an integer); ``seed`` an integer;
    SLO bounds null or numbers >= 0.
    """

    def bad(key: str, value: Any, expected: str) -> RunDataError:
        return RunDataError(
            f"{source}: config.analysis.{key} = {value!r} is not valid (expected {expected})"
        )

    phases = cfg.include_phases
    if isinstance(phases, str):
        phases = [phases]
    if not isinstance(phases, list | tuple) or not phases:
        raise bad("include_phases", cfg.include_phases, "a non-empty list of phase names")
    if not all(isinstance(p, str) and p for p in phases):
        raise bad("include_phases", cfg.include_phases, "phase names (strings)")
    c = cfg.confidence
    if not _is_number(c) or not 0 < c < 1:
        raise bad("confidence", c, "a number between 0 and 1, e.g. 0.95")
    r = cfg.bootstrap_resamples
    if not _is_number(r) or r != int(r) or r < 1:
        raise bad("bootstrap_resamples", r, "an integer >= 1")
    if not _is_number(cfg.seed) or cfg.seed != int(cfg.seed):
        raise bad("seed", cfg.seed, "an integer")
    for key in ("ttft_s", "tpot_s", "e2e_s"):
        v = getattr(cfg.slo, key)
        if v is not None and (not _is_number(v) or v < 0):
            raise bad(f"slo.{key}", v, "null or a number of seconds >= 0")
    cfg.include_phases = list(phases)
    cfg.bootstrap_resamples = int(r)
    cfg.seed = int(cfg.seed)
    return cfg


def _codes(
    col: pa.ChunkedArray, index: dict[Any, int], *, null_key: Any = None, grow: bool = True
) -> np.ndarray:
    """Integer codes of a string column against ``index``; a null is coded as ``null_key``.

    ``grow``: unseen names (and ``null_key``) are added to ``index`` in place; otherwise
    ``index`` is fixed and unknown names get -1.
    """
    out = []
    for chunk in col.chunks:
        if not pa.types.is_dictionary(chunk.type):
            chunk = pc.dictionary_encode(chunk)
        names = chunk.dictionary.to_pylist()
        if grow:
            for n in names:
                index.setdefault(n, len(index))
            index.setdefault(null_key, len(index))
        keys = [n if n is not None else null_key for n in names] + [null_key]
        lut = np.array([index.get(k, -1) for k in keys], np.int16)
        idx = pc.fill_null(chunk.indices, len(names)).to_numpy(zero_copy_only=False)
        out.append(lut[idx])
    return np.concatenate(out) if out else np.empty(0, np.int16)


def _ok(part: pa.Table) -> pa.ChunkedArray:
    """Boolean ``status == "ok"`` per row (a null status is not ok)."""
    return pc.equal(part.column("status").cast(pa.string()), "ok").fill_null(False)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    return pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()


def _times(col: pa.ChunkedArray, ref: int) -> np.ndarray:
    ns = pc.subtract(col.cast(pa.int64()), pa.scalar(ref, pa.int64()))
    return pc.divide(pc.fill_null(ns.cast(pa.float64()), np.nan), 1e9).to_numpy()


def _first_time(t: pa.Table) -> int | None:
    for name in ("t_scheduled", "t_sent", "t_end"):
        v = pc.min(t.column(name).cast(pa.int64())).as_py()
        if v is not None:
            return int(v)
    return None


def _row_days(part: pa.Table, clock: ExperimentClock | None) -> np.ndarray | None:
    """Experiment-clock day of each row of ``part`` (which has ``t_arrival``, ``t_virtual``
    and ``t_scheduled``): its request's day, ``t_arrival`` on the experiment clock (a retry
    counts on the day its request arrived), else ``t_virtual``, else ``t_scheduled`` on the
    clock (older files); -1 when none is set; None without a clock."""
    if clock is None:
        return None

    def on_clock(name: str) -> pa.Array:  # a wall-clock column on the experiment clock
        wall = part.column(name).cast(pa.int64()).to_numpy(zero_copy_only=False)
        ok = ~np.isnan(wall) if wall.dtype.kind == "f" else np.ones(wall.size, bool)
        w = np.where(ok, wall, clock.origin_ns).astype(np.int64)
        v = clock.origin_ns + np.round((w - clock.origin_ns) * clock.time_scale).astype(np.int64)
        return pa.array(v, pa.int64(), mask=~ok)

    cols = []
    if "t_arrival" in part.column_names:  # the request's day: every attempt on it
        cols.append(on_clock("t_arrival"))
    cols += [part.column("t_virtual").cast(pa.int64()), on_clock("t_scheduled")]
    tv = pc.coalesce(*cols)
    valid = pc.is_valid(tv).to_numpy(zero_copy_only=False)
    ns = pc.fill_null(tv, clock.origin_ns).to_numpy(zero_copy_only=False)
    return np.where(valid, clock.days_of(ns), -1).astype(np.int32)


def _day_parts(
    run_dir: Path,
    columns: tuple[str, ...] | list[str],
    phases: tuple[str, ...],
    day_filter: tuple[ExperimentClock | None, tuple[int, ...]] | None,
    clock: ExperimentClock | None = None,
) -> Iterator[tuple[pa.Table, np.ndarray | None]]:
    """``(part, days of its rows)`` for each request part file, ``columns`` only, restricted
    to the experiment-clock days of ``day_filter`` (``(clock, days)``; None: every row).

    Day-partitioned runs (``requests/day=DDD/``) are pruned by the reader when it supports
    ``days=``; rows are always also filtered on ``t_virtual`` (so flat runs work). Without a
    clock no row has a known day, so a day filter keeps none. ``clock`` (or the filter's)
    gives the days yielded (None without one)."""
    import inspect

    cols = list(columns)
    if day_filter is not None:
        clock = day_filter[0]
    if day_filter is None and clock is None:
        for part in iter_request_parts(run_dir, cols, phases):
            yield part, None
        return
    extra = [c for c in ("t_arrival", "t_virtual", "t_scheduled") if c not in cols]
    kwargs: dict[str, Any] = {}
    if day_filter is not None and "days" in inspect.signature(iter_request_parts).parameters:
        kwargs["days"] = list(day_filter[1])
    for part in iter_request_parts(run_dir, [*cols, *extra], phases, **kwargs):
        days = _row_days(part, clock)
        if day_filter is not None:
            keep = np.isin(days, list(day_filter[1])) if days is not None else None
            if keep is None or not keep.all():
                keep = keep if keep is not None else np.zeros(part.num_rows, bool)
                part = part.filter(pa.array(keep))
                days = days[keep] if days is not None else None
        yield (part.drop_columns(extra) if extra else part), days


def _request_parts(
    run_dir: Path,
    columns: tuple[str, ...] | list[str],
    phases: tuple[str, ...],
    day_filter: tuple[ExperimentClock | None, tuple[int, ...]] | None = None,
) -> Iterator[pa.Table]:
    """The parts of :func:`_day_parts` without their days."""
    for part, _ in _day_parts(run_dir, columns, phases, day_filter):
        yield part


def load_run(
    run_dir: Path,
    analysis: AnalysisConfig | None = None,
    *,
    itl_max_n: int = ITL_MAX_N,
    days: list[int] | tuple[int, ...] | set[int] | None = None,
) -> RunData:
    """Read a run directory into :class:`RunData` (the manifest is optional but recommended).

    ``days``: keep only the rows whose experiment-clock day
    (:meth:`~harness.canary.clock.ExperimentClock.days_of` of ``t_virtual``, clock from the
    manifest) is in it, in every pass (a day's report: ``harness report RUN_DIR --day N``);
    None keeps every row."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise RunDataError(f"{run_dir}: not a directory (expected a run directory)")
    manifest = read_manifest(run_dir)
    if analysis is not None:
        cfg = check_analysis(replace(analysis), "analysis settings")
    else:
        cfg = analysis_from_manifest(manifest, str(run_dir / "manifest.json"))
    phases = tuple(cfg.include_phases)
    notes: list[str] = []
    clock = clock_from_manifest(manifest)
    day_sel = tuple(sorted({int(d) for d in days})) if days is not None else None
    day_filter = (clock, day_sel) if day_sel is not None else None
    day_pieces: list[np.ndarray] = []

    arm_index: dict[str | None, int] = {}
    for name in manifest.get("arms") or {}:
        arm_index.setdefault(str(name), len(arm_index))
    slice_index: dict[str | None, int] = {}
    err_index: dict[str | None, int] = {}
    label_index: dict[str, dict[str | None, int]] = {k: {} for k in _LABEL_COLUMNS}
    pieces: dict[str, list[np.ndarray]] = {k: [] for k in _MAIN_COLUMNS}
    rid_chunks: list[pa.Array] = []
    pid_chunks: list[pa.Array] = []
    ref: int | None = None
    for part, part_days in _day_parts(run_dir, _MAIN_COLUMNS, phases, day_filter, clock):
        if part.num_rows == 0:
            continue
        if part_days is not None:
            day_pieces.append(part_days)
        if ref is None:
            ref = _first_time(part) or 0
        pieces["arm"].append(_codes(part.column("arm"), arm_index))
        pieces["slice"].append(_codes(part.column("slice"), slice_index))
        pieces["status"].append(_ok(part).to_numpy(zero_copy_only=False))
        pieces["error_type"].append(_codes(part.column("error_type"), err_index))
        pieces["attempt"].append(
            pc.fill_null(part.column("attempt"), 0).to_numpy().astype(np.int32, copy=False)
        )
        rid = part.column("request_id").cast(pa.string())
        rid_chunks.extend(pc.fill_null(rid, "").chunks)
        pid_chunks.extend(part.column("pair_id").cast(pa.string()).chunks)
        wr = part.column("will_retry").cast(pa.int8())
        pieces["will_retry"].append(pc.fill_null(wr, -1).to_numpy().astype(np.int8, copy=False))
        itl_len = pc.list_value_length(part.column("itl_s"))
        pieces["itl_s"].append(
            pc.fill_null(pc.add(itl_len, 1), 0).to_numpy().astype(np.int32, copy=False)
        )
        for name in _TIME_COLUMNS:
            pieces[name].append(_times(part.column(name), ref))
        for name in _FLOAT_COLUMNS:
            pieces[name].append(_floats(part.column(name)))
        for name in _LABEL_COLUMNS:
            pieces[name].append(_codes(part.column(name), label_index[name]))
        for name in _FLAG_COLUMNS:
            flag = pc.fill_null(part.column(name).cast(pa.int8()), -1)
            pieces[name].append(flag.to_numpy().astype(np.int8, copy=False))
        del part

    def cat(name: str, dtype) -> np.ndarray:
        return np.concatenate(pieces.pop(name)) if pieces[name] else np.empty(0, dtype)

    arm_codes = cat("arm", np.int16)
    slice_codes = cat("slice", np.int16)
    ok = cat("status", bool)
    err_codes = cat("error_type", np.int16)
    attempt = cat("attempt", np.int32)
    will_retry = cat("will_retry", np.int8)
    n_chunks = cat("itl_s", np.int32)
    request, request_ids = _request_codes(rid_chunks)
    del rid_chunks
    pair = _pair_codes(pid_chunks)
    del pid_chunks
    cols = {name: cat(name, np.float64) for name in (*_TIME_COLUMNS, *_FLOAT_COLUMNS)}
    labels = {}
    for name in _LABEL_COLUMNS:
        names, codes = _relabel(label_index[name], cat(name, np.int16), None, keep_order=False)
        labels[name] = (names, codes.astype(np.int16, copy=False))
    flags = {name: cat(name, np.int8) for name in _FLAG_COLUMNS}

    # Normalise codes: arms keep manifest order; a null arm becomes "(unknown)".
    arms, arm_codes = _relabel(arm_index, arm_codes, "(unknown)", keep_order=True)
    slices, slice_codes = _relabel(slice_index, slice_codes, NO_SLICE, keep_order=False)
    error_types, err_codes = _relabel(err_index, err_codes, None, keep_order=False)
    err_codes = np.where(ok, -1, err_codes).astype(np.int16)
    if (~ok & (err_codes < 0)).any():
        if "(unknown)" not in error_types:
            error_types.append("(unknown)")
        err_codes = np.where(~ok & (err_codes < 0), error_types.index("(unknown)"), err_codes)
        err_codes = err_codes.astype(np.int16)

    # Shift relative times so that 0 is the window start.
    shift = _nan_extreme([cols["t_scheduled"], cols["t_sent"]], np.nanmin)
    t0_ns = None
    if ref is not None and math.isfinite(shift):
        for name in _TIME_COLUMNS:
            cols[name] -= shift
        t0_ns = ref + int(round(shift * 1e9))

    rejected = _check_latencies(cols, ok, notes, request, request_ids, attempt)

    arm_lookup = {a: i for i, a in enumerate(arms)}
    slice_lookup = {s: i for i, s in enumerate(slices)}
    itl, clusters = _pool_itl(
        run_dir, phases, arm_lookup, slice_lookup, itl_max_n, int(cfg.seed), rejected, notes,
        day_filter=day_filter,
    )  # fmt: skip
    for (a, s), smp in itl.items():
        if s is None and not smp.exact:
            notes.append(
                f"ITL quantiles for arm {arms[a]!r} use a uniform random sample of "
                f"{smp.values.size:,} of {smp.n_total:,} pooled gaps (mean uses all)."
            )
    for (a, s), cs in clusters.items():
        if s is None and cs.p < 1.0:
            notes.append(
                f"ITL confidence intervals for arm {arms[a]!r} resample a uniform random sample "
                f"of {sum(x.size for x in cs.lengths):,} of {cs.n_total:,} requests, rescaled "
                "to the full count (m-out-of-n bootstrap)."
            )

    arm_info = {str(k): dict(v or {}) for k, v in (manifest.get("arms") or {}).items()}
    for a in arms:
        arm_info.setdefault(a, {})
    data = RunData(
        run_dir=run_dir,
        manifest=manifest,
        run_id=str(manifest.get("run_id") or run_dir.name),
        experiment=str(manifest.get("experiment") or run_dir.parent.name),
        analysis=cfg,
        arms=arms,
        arm_info=arm_info,
        slices=slices,
        arm=arm_codes,
        slice=slice_codes,
        ok=ok,
        error_types=error_types,
        error=err_codes,
        attempt=attempt,
        request=request,
        pair=pair,
        will_retry=will_retry,
        n_chunks=n_chunks,
        cols=cols,
        t0_ns=t0_ns,
        itl=itl,
        itl_clusters=clusters,
        metrics=_read_metrics_safe(run_dir, notes),
        samples=_sample_texts(run_dir, phases, arms, day_filter),
        notes=notes,
        rejected=rejected,
        labels=labels,
        flags=flags,
        day=(np.concatenate(day_pieces) if day_pieces else np.empty(0, np.int32))
        if clock is not None
        else None,
        clock=clock,
        days=day_sel,
        request_ids=request_ids,
    )
    if not manifest:
        data.notes.append(f"{run_dir / 'manifest.json'} is missing: defaults were used.")
    return data


def _request_codes(chunks: list[pa.Array]) -> tuple[np.ndarray, pa.Array]:
    """int32 codes of the ``request_id`` strings (equal ids -> equal codes), via Arrow's hash
    table (no Python string per row), and the ids by code."""
    if not chunks:
        return np.empty(0, np.int32), pa.array([], pa.string())
    # one hash table over every chunk: the chunks share one dictionary (no concatenation)
    enc = pc.dictionary_encode(pa.chunked_array(chunks, pa.string()))
    codes = np.concatenate(
        [c.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False) for c in enc.chunks]
    )
    return codes, enc.chunks[-1].dictionary


def _pair_codes(chunks: list[pa.Array]) -> np.ndarray:
    """int32 codes of the ``pair_id`` strings, in sorted id order (the engine numbers pairs in
    schedule order, ``p000000001`` ...), -1 for null; equal ids -> equal codes across arms."""
    if not chunks:
        return np.empty(0, np.int32)
    enc = pc.dictionary_encode(pa.chunked_array(chunks, pa.string()))
    flat = np.concatenate(
        [pc.fill_null(c.indices, -1).to_numpy().astype(np.int64, copy=False) for c in enc.chunks]
    )
    dictionary = enc.chunks[-1].dictionary
    if len(dictionary) == 0:
        return np.full(flat.size, -1, np.int32)
    rank = np.asarray(pc.rank(dictionary, sort_keys="ascending"), np.int64) - 1
    return np.where(flat >= 0, rank[np.maximum(flat, 0)], -1).astype(np.int32)


def _check_latencies(
    cols: dict[str, np.ndarray],
    ok: np.ndarray,
    notes: list[str],
    request: np.ndarray,
    request_ids: pa.Array,
    attempt: np.ndarray,
) -> np.ndarray | None:
    """Data checks: impossible latencies never reach a statistic silently; returns the rows
    rejected (None when there are none).

    A latency that is negative (a queue delay beyond :data:`QUEUE_DELAY_TOLERANCE_S`),
    infinite, or missing on an ok row (TTFT, E2E), or timestamps out of order
    (first token before send, end before first token) make the row's latencies null (left out
    of every latency statistic; counts and failure rates keep the row) and a caveat names how
    many rows and which. TPOT of a request whose tokens came in one chunk cannot be measured:
    a TPOT of exactly 0 (older files recorded that for it) is made null.
    """
    tpot = cols["tpot_s"]
    tpot[tpot == 0] = np.nan  # older files: all tokens in one chunk recorded TPOT 0
    counts: dict[str, int] = {}
    any_bad = np.zeros(ok.size, bool)

    def flag(name: str, bad: np.ndarray) -> None:
        n = int(np.count_nonzero(bad))
        if n:
            counts[name] = n
            np.logical_or(any_bad, bad, out=any_bad)

    with np.errstate(invalid="ignore"):
        for name in _CHECKED_LATENCIES:
            v = cols[name]
            floor = -QUEUE_DELAY_TOLERANCE_S if name == "queue_delay_s" else 0.0
            flag(name, np.isinf(v) | (v < floor))
            if name in ("ttft_s", "e2e_s"):
                flag(f"{name} missing", ok & np.isnan(v))
        t = cols
        flag("first token before send", t["t_first_token"] < t["t_sent"])
        flag("end before first token", t["t_end"] < t["t_first_token"])
        flag("end before send", t["t_end"] < t["t_sent"])
    if not counts:
        return None
    for name in (*_CHECKED_LATENCIES, "t_first_token", "t_end"):
        cols[name][any_bad] = np.nan
    rows = np.flatnonzero(any_bad)
    what = ", ".join(f"{k} ({v:,})" for k, v in counts.items())
    names = [f"{request_ids[int(request[r])].as_py()} attempt {int(attempt[r])}" for r in rows[:5]]
    shown = ", ".join(names) + (", ..." if rows.size > 5 else "")
    notes.append(
        f"{rows.size:,} row(s) had impossible latencies (negative, infinite, missing on an ok "
        f"row, or timestamps out of order: {what}); they are left out of the latency "
        f"statistics and of goodput ({shown})."
    )
    return any_bad


def _relabel(
    index: dict[str | None, int], codes: np.ndarray, null_label: str | None, *, keep_order: bool
) -> tuple[list[str], np.ndarray]:
    """Turn a growing name->code index into a label list (sorted unless keep_order) + codes."""
    present = set(np.unique(codes).tolist()) if codes.size else set()
    names: list[str] = []
    for name, code in index.items():
        if name is None:
            if null_label is None or code not in present:
                continue
            label = null_label
        else:
            if not keep_order and code not in present:
                continue
            label = name
        if label not in names:
            names.append(label)
    if not keep_order:
        names.sort()
    lut = np.full(max(index.values(), default=-1) + 2, -1, np.int16)
    for name, code in index.items():
        label = null_label if name is None else name
        if label is not None and label in names:
            lut[code] = names.index(label)
    return names, lut[codes] if codes.size else codes.astype(np.int16)


def _pool_itl(
    run_dir: Path,
    phases: tuple[str, ...],
    arm_lookup: dict[str, int],
    slice_lookup: dict[str, int],
    cap: int,
    seed: int,
    rejected: np.ndarray | None = None,
    notes: list[str] | None = None,
    cluster_cap: int = ITL_CLUSTER_MAX_GAPS,
    day_filter: tuple[ExperimentClock | None, tuple[int, ...]] | None = None,
) -> tuple[dict[tuple[int, int | None], PooledSample], dict[tuple[int, int | None], ClusterSample]]:
    """Pool ``itl_s`` gaps of ok rows per (arm, slice) and per arm, in one streaming pass;
    also keep a bounded uniform sample of whole requests (their gap lists) per key.

    Rows the data checks ``rejected`` (aligned with the main pass: same parts, same order)
    and rows with a negative or infinite gap are left out; the latter get a note."""
    rng = np.random.default_rng(seed)
    rng_clusters = np.random.default_rng([seed, 1])
    out: dict[tuple[int, int | None], PooledSample] = {}
    clusters: dict[tuple[int, int | None], ClusterSample] = {}
    cols = ("arm", "slice", "status", "itl_s")
    offset = bad_rows = 0
    for part in _request_parts(run_dir, cols, phases, day_filter):
        n = part.num_rows
        if n == 0:
            continue
        ok = _ok(part).to_numpy(zero_copy_only=False)
        if rejected is not None:
            ok &= ~rejected[offset : offset + n]
        offset += n
        lists = part.column("itl_s").combine_chunks()
        if not ok.any() or lists.null_count == len(lists):
            continue
        flat_all = pc.list_flatten(lists).to_numpy(zero_copy_only=False)
        bad_gap = ~np.isfinite(flat_all) | (flat_all < 0)
        if bad_gap.any():
            parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
            bad_row = np.zeros(n, bool)
            bad_row[parents[bad_gap]] = True
            bad_rows += int((ok & bad_row).sum())
            ok &= ~bad_row
        a_codes = _codes(part.column("arm"), arm_lookup, null_key="(unknown)", grow=False)
        s_codes = _codes(part.column("slice"), slice_lookup, null_key=NO_SLICE, grow=False)
        for a in range(len(arm_lookup)):
            in_arm = ok & (a_codes == a)
            if not in_arm.any():
                continue
            for s in range(len(slice_lookup)):
                sel = in_arm & (s_codes == s)
                if not sel.any():
                    continue
                rows = lists.filter(pa.array(sel))
                flat = pc.list_flatten(rows).to_numpy(zero_copy_only=False)
                lengths = pc.fill_null(pc.list_value_length(rows), 0).to_numpy()
                for key in ((a, s), (a, None)):
                    out.setdefault(key, PooledSample()).add(flat, rng, cap)
                    clusters.setdefault(key, ClusterSample()).add(
                        flat, lengths, rng_clusters, cluster_cap
                    )
    if bad_rows and notes is not None:
        notes.append(
            f"{bad_rows:,} successful row(s) had a negative or infinite inter-chunk gap: their "
            "gaps are left out of ITL."
        )
    return out, clusters


def _read_metrics_safe(run_dir: Path, notes: list[str]) -> pa.Table | None:
    """The scraped server metrics, or None; they are optional, so an unreadable part file
    becomes a note (caveat) instead of aborting the report."""
    try:
        table = read_metrics(run_dir)
    except ReaderError as exc:
        notes.append(f"Server metrics were left out: {exc}")
        return None
    if table is None or table.num_rows == 0:
        return None
    return table


def _sample_texts(
    run_dir: Path,
    phases: tuple[str, ...],
    arms: list[str],
    day_filter: tuple[ExperimentClock | None, tuple[int, ...]] | None = None,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """A few outputs and error messages per arm (the first ones found; bounded scan)."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {
        a: {"outputs": [], "errors": []} for a in arms
    }
    cols = ("arm", "status", "request_id", "error_type", "error_message", "output_text")
    scanned = 0
    for part in _request_parts(run_dir, cols, phases, day_filter):
        arm_col = pc.fill_null(part.column("arm").cast(pa.string()), "(unknown)")
        ok = _ok(part)
        has_text = pc.is_valid(part.column("output_text"))
        for arm, bucket in out.items():
            in_arm = pc.equal(arm_col, arm)
            need_out = SAMPLE_OUTPUTS - len(bucket["outputs"])
            if need_out > 0:
                rows = part.filter(pc.and_(pc.and_(in_arm, ok), has_text)).slice(0, need_out)
                for r in rows.to_pylist():
                    bucket["outputs"].append(
                        {"request_id": r["request_id"], "text": r["output_text"][:2000]}
                    )
            need_err = SAMPLE_ERRORS - len(bucket["errors"])
            if need_err > 0:
                rows = part.filter(pc.and_(in_arm, pc.invert(ok))).slice(0, need_err)
                for r in rows.to_pylist():
                    bucket["errors"].append(
                        {
                            "request_id": r["request_id"],
                            "error_type": r["error_type"],
                            "message": (r["error_message"] or "")[:2000],
                        }
                    )
        scanned += part.num_rows
        full = all(
            len(b["outputs"]) >= SAMPLE_OUTPUTS and len(b["errors"]) >= SAMPLE_ERRORS
            for b in out.values()
        )
        if full or scanned >= SAMPLE_SCAN_ROWS:
            break
    return out
