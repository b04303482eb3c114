"""The judge's I/O edge: run directories -> :class:`~harness.judge.samples.JudgeInputs`.

Two comparisons:

- **two arms of one run** (``harness judge RUN_DIR``, and the report's verdict section):
  latency and failures per logical request (:func:`harness.analysis.requests.logical_requests`;
  requests the harness cancelled are left out), paired on ``pair_id`` when the run mirrored
  its traffic (every logical request has one on both arms; requests of one arm only are
  counted as unmatched), else two independent samples;
- **one arm against an earlier run** (``--baseline-run OTHER``): the candidate arm of this run
  against the same arm of OTHER (or OTHER's configured/default baseline arm when it has no
  arm of that name): independent samples, except quality, paired on ``sample_id`` (the same
  eval items).

Quality: the scores table (:func:`harness.quality.score.scores_for`: written when missing
or stale; in a day's view only that day's rows), one value per item and scorer (:func:`harness.quality.score.item_values`: repeats
of an item averaged), aligned on ``sample_id``; each scorer's kind and better direction come
from its registry entry (:data:`harness.quality.scorers.SCORERS`). Cost per task: the run's
cost settings (:mod:`harness.cost.section`): an API arm's recorded cost of every logical
request (:func:`harness.cost.measure.arm_spend`), a self-hosted arm's projected cost per call
(``monthly_total_usd / monthly_calls`` of its cost block).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from harness.analysis.data import RunData, load_run
from harness.analysis.paired import align_pairs
from harness.analysis.requests import CANCELLED, FAILED, logical_requests
from harness.judge.samples import (
    ArmRef,
    BinarySample,
    CostSample,
    JudgeInputs,
    LatencySample,
    QualityScorer,
    ScoreSample,
)
from harness.judge.settings import LATENCY_MEASURES, JudgeConfig, judge_from_config, pick_arms

_LR_FIELDS = {"request_ttft_s": "ttft_s", "tpot_s": "tpot_s", "request_e2e_s": "e2e_s"}


def settings_of(data: RunData) -> JudgeConfig:
    """The run's ``config.judge`` (manifest), typed and checked; defaults when absent."""
    raw = (data.manifest.get("config") or {}).get("judge")
    return judge_from_config(raw, "judge")


def arm_kinds(data: RunData) -> dict[str, str | None]:
    return {a: (data.arm_info.get(a) or {}).get("kind") for a in data.arms}


def _ref(data: RunData, arm: str) -> ArmRef:
    return ArmRef(data.run_id, arm, str(data.run_dir), arm_kinds(data).get(arm))


# ---------------------------------------------------------------- requests


def _arm_requests(data: RunData, arm: str) -> dict[str, np.ndarray]:
    """Per logical request of ``arm`` (cancelled ones left out): pair code and values."""
    lr = logical_requests(data)
    keep = (lr.arm == data.arms.index(arm)) & (lr.outcome != CANCELLED)
    pair = getattr(data, "pair", None)
    out = {"pair": pair[lr.first[keep]] if pair is not None else np.full(int(keep.sum()), -1),
           "failed": (lr.outcome[keep] == FAILED).astype(np.float64)}  # fmt: skip
    for measure, fld in _LR_FIELDS.items():
        out[measure] = getattr(lr, fld)[keep].astype(np.float64)
    return out


def _paired_index(a: dict[str, np.ndarray], b: dict[str, np.ndarray]):
    """Indices aligning two arms on pair codes, or None when the run was not mirrored."""
    pa_, pb = a["pair"], b["pair"]
    if pa_.size == 0 or pb.size == 0 or (pa_ < 0).any() or (pb < 0).any():
        return None
    return align_pairs(pa_, pb)


def request_samples(da: RunData, arm_a: str, db: RunData, arm_b: str, paired: bool
                    ) -> tuple[dict[str, LatencySample], BinarySample, list[str]]:  # fmt: skip
    """Latency and failure samples of baseline ``(da, arm_a)`` vs candidate ``(db, arm_b)``."""
    a, b = _arm_requests(da, arm_a), _arm_requests(db, arm_b)
    notes: list[str] = []
    idx = _paired_index(a, b) if paired else None
    if idx is None:
        lat = {m: LatencySample(a[m], b[m], paired=False, measure=m) for m in LATENCY_MEASURES}
        fail = BinarySample(a["failed"], b["failed"], paired=False)
        if paired:
            notes.append("Latency and failures compared as independent samples: the run did "
                         "not mirror its traffic (no pair_id on every request).")  # fmt: skip
        return lat, fail, notes
    ia, ib, ua, ub = idx
    if ua or ub:
        notes.append(f"{ua} logical request(s) of the baseline and {ub} of the candidate had no "
                     "counterpart on the other arm (pair_id): left out of the paired latency "
                     "and failure comparisons.")  # fmt: skip
    lat = {m: LatencySample(a[m][ia], b[m][ib], paired=True, unmatched=(ua, ub), measure=m)
           for m in LATENCY_MEASURES}  # fmt: skip
    fail = BinarySample(a["failed"][ia], b["failed"][ib], paired=True, unmatched=(ua, ub))
    return lat, fail, notes


# ---------------------------------------------------------------- quality


def _scores(data: RunData):
    from harness.quality.score import scores_for

    return scores_for(data)  # a day's view: that day's rows only


def quality_samples(da: RunData, arm_a: str, db: RunData, arm_b: str
                    ) -> dict[str, QualityScorer]:  # fmt: skip
    """Per scorer present on both sides: items aligned on ``sample_id``. Raises
    :class:`harness.quality.score.ScoreError` when a run cannot be scored."""
    from harness.quality.score import item_values
    from harness.quality.scorers import SCORERS

    sa = _scores(da)
    sb = sa if db is da else _scores(db)
    if sa is None or sb is None:
        return {}
    out: dict[str, QualityScorer] = {}
    for name, sc in SCORERS.items():
        ids_a, va, _ = item_values(sa.table, arm_a, name)
        ids_b, vb, _ = item_values(sb.table, arm_b, name)
        fa, fb = ~np.isnan(va), ~np.isnan(vb)
        ids_a, va, ids_b, vb = ids_a[fa], va[fa], ids_b[fb], vb[fb]
        if ids_a.size == 0 and ids_b.size == 0:
            continue
        ia, ib, ua, ub = align_pairs(ids_a, ids_b)
        x, y = va[ia], vb[ib]
        binary = sc.kind == "binary" and bool(np.isin(x, (0.0, 1.0)).all() and
                                              np.isin(y, (0.0, 1.0)).all())  # fmt: skip
        cls = BinarySample if binary else ScoreSample
        direction = sc.better or "either"
        out[name] = QualityScorer(sc.kind, direction, cls(x, y, paired=True, unmatched=(ua, ub)))
    return out


# ---------------------------------------------------------------- cost


def _arm_costs(data: RunData) -> dict[str, tuple[np.ndarray | None, float | None]]:
    """Per arm: (USD of each logical request, or None; projected USD per call, or None),
    from the run's cost computation (shared with the report's cost section)."""
    from harness.cost.measure import role_of
    from harness.cost.section import run_cost

    section, spends = run_cost(data)
    out: dict[str, tuple[np.ndarray | None, float | None]] = {}
    for arm, block in (section.get("arms") or {}).items():
        kind = block.get("kind")
        if role_of(kind) == "api" and block.get("usd_per_call") is not None:
            out[arm] = (np.asarray(spends[arm].per_request_usd, np.float64), None)
        elif role_of(kind) == "selfhost" and block.get("monthly_total_usd") is not None:
            calls = block.get("monthly_calls") or 0
            if calls > 0:
                out[arm] = (None, float(block["monthly_total_usd"]) / float(calls))
    return out


def cost_sample(da: RunData, arm_a: str, db: RunData, arm_b: str) -> CostSample | None:
    """Both arms' costs per task, or None when the cost model prices only one (or none)."""
    ca = _arm_costs(da)
    cb = ca if db is da else _arm_costs(db)
    if arm_a not in ca or arm_b not in cb:
        return None
    (xa, fa), (xb, fb) = ca[arm_a], cb[arm_b]
    return CostSample(xa, xb, fa, fb)


# ---------------------------------------------------------------- everything


def judge_inputs(data: RunData, cfg: JudgeConfig, baseline: RunData | None = None
                 ) -> JudgeInputs:  # fmt: skip
    """The inputs of one verdict: two arms of ``data``, or (``baseline`` given) ``data``'s
    candidate arm against the same arm of ``baseline`` (see the module docstring)."""
    from harness.config import ConfigError
    from harness.quality.score import ScoreError

    if baseline is None:
        arm_b, arm_c = pick_arms(cfg, arm_kinds(data))
        db, paired = data, True
    else:
        arm_c = candidate_arm(cfg, data)
        if arm_c in baseline.arms:
            arm_b = arm_c
        else:
            arm_b, _ = pick_arms(cfg, arm_kinds(baseline))
        db, paired = baseline, False
    inputs = JudgeInputs(_ref(db, arm_b), _ref(data, arm_c))
    lat, fail, notes = request_samples(db, arm_b, data, arm_c, paired)
    inputs.latency, inputs.failures = lat, fail
    inputs.notes += notes
    if baseline is not None:
        inputs.notes.append(f"Run-vs-run: {data.run_id} ({arm_c}) against {baseline.run_id} "
                            f"({arm_b}); latency, failures and cost as independent samples, "
                            "quality paired on sample_id.")  # fmt: skip
    try:
        inputs.quality = quality_samples(db, arm_b, data, arm_c)
    except ScoreError as exc:
        inputs.errors["quality"] = str(exc)
    try:
        inputs.cost = cost_sample(db, arm_b, data, arm_c)
    except (ConfigError, ValueError) as exc:  # catalogs or settings that no longer load
        inputs.errors["cost_per_task"] = str(exc)
    return inputs


def candidate_arm(cfg: JudgeConfig, data: RunData) -> str:
    """The candidate arm of a run judged against another run: ``judge.candidate``, else
    the default candidate when the run has two arms or more, else its only arm."""
    from harness.config import ConfigError

    kinds = arm_kinds(data)
    present = [a for a in data.arms if (data.arm == data.arms.index(a)).any()]
    if cfg.candidate is not None:
        if cfg.candidate not in kinds:
            raise ConfigError(f"judge.candidate: {cfg.candidate!r} is not an arm of "
                              f"{data.run_id} (arms: {', '.join(data.arms)})")  # fmt: skip
        return cfg.candidate
    if len(present) == 1:
        return present[0]
    if not present:
        raise ConfigError(f"{data.run_dir}: the run has no requests to judge")
    return pick_arms(cfg, {a: kinds.get(a) for a in present})[1]


def load_inputs(run_dir: Path, baseline_run: Path | None = None
                ) -> tuple[JudgeInputs, JudgeConfig]:  # fmt: skip
    """Read the run (and the baseline run) and build the judge's inputs under the run's own
    ``judge`` settings."""
    data = load_run(Path(run_dir))
    cfg = settings_of(data)
    base = load_run(Path(baseline_run)) if baseline_run is not None else None
    return judge_inputs(data, cfg, base), cfg
