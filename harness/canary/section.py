"""The canary's ``summary.json`` keys: ``canary``, ``daily``, ``drift``, ``daily_verdict`` and
``downtime``.

They are computed only for a month-long run: ``canary.enabled`` in the manifest's config, or
rows on more than one experiment-clock day, or a day's report (``load_run(days=...)``). The
report section (:mod:`harness.canary.report`) computes the ``canary`` key and adds the other
four beside it in the same pass (one walk over the daily figures, cached on the RunData as
:func:`canary_bundle`, so a later section reads them without recomputing).

- ``daily``: one entry per experiment-clock day (:func:`harness.canary.daily.daily_entries`);
- ``drift``: online detection + change points on the daily series, the self-hosted arm as
  control (:func:`harness.canary.drift.drift_section`);
- ``daily_verdict``: the judge applied every day, anytime-valid beside naive
  (:func:`harness.canary.sequential.daily_verdicts`);
- ``downtime``: harness downtime between run segments, from the manifest;
- ``canary``: days covered, arms, the demonstration flag, the declared qualitative factors
  and the recommendation (:func:`recommend`).

The API arm is the judge's baseline and the control the self-hosted candidate
(:func:`harness.judge.settings.pick_arms`), so the drift attribution, the daily verdict and
the run's verdict compare the same two arms. A stage that is not installed (its module
missing) or fails leaves its key null and says why in ``canary.notes``: the report still
builds.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from datetime import datetime
from typing import Any

import numpy as np

from harness.analysis.data import RunData
from harness.canary.clock import ExperimentClock
from harness.canary.settings import CanaryConfig, DriftConfig, FactorsConfig, SequentialConfig

#: Summary keys this module adds beside ``canary``.
KEYS = ("daily", "drift", "daily_verdict", "downtime")
#: The qualitative factors of ``canary.factors``, with the label the memo shows.
FACTOR_LABELS = {
    "data_sensitivity": "Data sensitivity",
    "compliance": "Compliance regime",
    "reproducible_weights": "Need for reproducible weights",
    "ops_capacity": "Ops/SRE capacity",
    "selfhost_license": "Licence of the self-hosted model",
}
#: Recommendations (closed set).
HOSTED, SELFHOST, HYBRID = "hosted API", "self-host", "hybrid"

_CACHE_KEY = ("canary", "bundle")


# ---------------------------------------------------------------- settings


def _typed(cls: type, raw: Any) -> Any:
    """A dataclass from a manifest dict: known keys only (the config was checked at start)."""
    if not isinstance(raw, dict):
        return cls()
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in raw.items() if k in names})


def canary_settings(manifest: dict[str, Any]) -> CanaryConfig:
    """``config.canary`` of a manifest as :class:`CanaryConfig` (defaults when absent)."""
    raw = (manifest.get("config") or {}).get("canary")
    raw = raw if isinstance(raw, dict) else {}
    top = _typed(CanaryConfig, {k: v for k, v in raw.items()
                                if k not in ("drift", "sequential", "factors")})  # fmt: skip
    top.drift = _typed(DriftConfig, raw.get("drift"))
    top.sequential = _typed(SequentialConfig, raw.get("sequential"))
    top.factors = _typed(FactorsConfig, raw.get("factors"))
    return top


def is_canary(data: RunData) -> bool:
    """A month-long run: ``canary.enabled``, rows on more than one experiment-clock day, or a
    day's view of a run (``load_run(days=...)``)."""
    if data.days is not None or canary_settings(data.manifest).enabled:
        return True
    return len(days_present(data)) > 1


def days_present(data: RunData) -> list[int]:
    """The experiment-clock days that have rows (sorted; empty without a clock)."""
    if data.day is None or data.day.size == 0:
        return []
    return [int(d) for d in np.unique(data.day) if d >= 0]


def is_simulator(kind: str | None) -> bool:
    """An embedded-simulator target kind (``sim_vllm``, ``sim_cloud``)."""
    return bool(kind) and str(kind).startswith("sim")


def canary_arms(data: RunData) -> tuple[str | None, str | None]:
    """(API arm, control arm): the judge's (baseline, candidate); ``(first arm, None)`` when
    the run cannot be split in two."""
    from harness.config import ConfigError
    from harness.judge.preprocess import arm_kinds, settings_of
    from harness.judge.settings import pick_arms

    try:
        return pick_arms(settings_of(data), arm_kinds(data))
    except (ConfigError, ValueError):
        return (data.arms[0] if data.arms else None), None


# ---------------------------------------------------------------- downtime


def _ns(x: Any) -> int | None:
    """A timestamp from the manifest (UTC ns, or ISO 8601) as UTC ns."""
    if isinstance(x, bool):
        return None
    if isinstance(x, int | float) and math.isfinite(x):
        return int(x)
    if isinstance(x, str):
        try:
            t = datetime.fromisoformat(x.replace("Z", "+00:00"))
        except ValueError:
            return None
        return int(round(t.timestamp() * 1e9))
    return None


def downtime_summary(manifest: dict[str, Any], clock: ExperimentClock | None) -> dict[str, Any]:
    """Harness downtime between segments (manifest ``downtime``): totals and the entries, each
    with ``x0_day``/``x1_day``, its span in fractional experiment-clock days (for shading)."""
    entries = []
    for e in manifest.get("downtime") or []:
        if not isinstance(e, dict):
            continue
        out = {k: e.get(k) for k in ("from", "to", "wall_s", "virtual_s", "from_day", "to_day")}
        x0 = x1 = None
        start = _ns(e.get("from"))
        if clock is not None and start is not None:
            x0 = clock.elapsed_s(clock.virtual_ns(start)) / clock.day_s
        elif isinstance(e.get("from_day"), int | float):
            x0 = float(e["from_day"])
        vs = e.get("virtual_s")
        if x0 is not None and isinstance(vs, int | float) and clock is not None:
            x1 = x0 + float(vs) / clock.day_s
        elif isinstance(e.get("to_day"), int | float):
            x1 = float(e["to_day"]) + 1.0
        out["x0_day"], out["x1_day"] = x0, x1
        entries.append(out)

    def total(key: str) -> float:
        return float(sum(float(e[key]) for e in entries if isinstance(e.get(key), int | float)))

    return {"total_wall_s": total("wall_s"), "total_virtual_s": total("virtual_s"),
            "segments": len(manifest.get("segments") or []) or 1,
            "entries": entries}  # fmt: skip


# ---------------------------------------------------------------- the stages


def _stage(module: str, name: str, notes: list[str]) -> Any:
    """``module.name``, or None (with a note) when that stage is not installed."""
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        notes.append(f"{module}.{name} is not available ({exc}): its figures are left out.")
        return None


def _scores(data: RunData, notes: list[str]) -> Any:
    """The run's quality scores (``scores/scores.parquet``, rescored when stale), or None."""
    from harness.quality.score import ScoreError, scores_for

    try:
        return scores_for(data)  # a day's view: that day's rows only
    except ScoreError as exc:
        notes.append(f"Daily quality is left out: {exc}")
        return None


def _run(fn: Any, what: str, notes: list[str], *args: Any, **kwargs: Any) -> Any:
    """Call one stage; a failure becomes a note (the rest of the report still builds)."""
    if fn is None:
        return None
    try:
        return fn(*args, **kwargs)
    except (ValueError, KeyError, TypeError, ArithmeticError) as exc:
        notes.append(f"The {what} could not be computed: {type(exc).__name__}: {exc}")
        return None


def _whatif(data: RunData, notes: list[str]) -> dict[str, Any] | None:
    """The recommendation of ``harness whatif`` (``RUN_DIR/whatif/summary.json``), if run."""
    import json

    path = data.run_dir / "whatif" / "summary.json"
    if not path.is_file():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        notes.append(f"{path}: unreadable ({exc}); the what-if replay is left out.")
        return None
    rec = doc.get("recommendation") if isinstance(doc, dict) else None
    if not isinstance(rec, dict):
        return None
    keep = ("policy", "monthly_total_usd", "evaluation_verdict", "monthly_cloud_only_usd",
            "monthly_selfhost_only_usd")  # fmt: skip
    return {"file": "whatif/summary.json", "recommendation": {k: rec.get(k) for k in keep}}


def canary_bundle(data: RunData) -> dict[str, Any] | None:
    """Every canary key for this run (cached on ``data``), or None when it is not a canary.

    ``{"canary": ..., "daily": ..., "drift": ..., "daily_verdict": ..., "downtime": ...}``;
    the recommendation is added by :func:`canary_section` (it reads other sections)."""
    if _CACHE_KEY in data.cache:
        return data.cache[_CACHE_KEY]  # type: ignore[return-value]
    if not is_canary(data):
        data.cache[_CACHE_KEY] = None  # type: ignore[assignment]
        return None
    cfg = canary_settings(data.manifest)
    clock = data.clock
    notes: list[str] = []
    api, control = canary_arms(data)
    present = days_present(data)
    kinds = {a: (data.arm_info.get(a) or {}).get("kind") for a in data.arms}
    sims = [a for a, k in kinds.items() if is_simulator(k)]
    view_day = data.days[0] if data.days is not None and len(data.days) == 1 else None

    daily = drift = verdicts = None
    if clock is None:
        notes.append("The run has no experiment clock (manifest clock/t0_ns): no daily figures.")
    else:
        fn = _stage("harness.canary.daily", "daily_entries", notes)
        scores = _scores(data, notes)
        daily = _run(fn, "daily figures", notes, data, clock, scores)
        if daily is not None and data.days is not None:  # a day's view: its own days only
            daily = [e for e in daily if e.get("day") in data.days]
        if daily is not None and data.days is None and api and control and len(daily) > 1:
            fn = _stage("harness.canary.drift", "drift_section", notes)
            drift = _run(fn, "drift detection", notes, daily, api_arm=api, control_arm=control,
                         cfg=cfg.drift)  # fmt: skip
        elif data.days is not None:
            notes.append("Drift detection reads the whole month's daily series: see the run's "
                         "cumulative report (harness report RUN_DIR).")  # fmt: skip
        elif not control:
            notes.append("Drift attribution needs an API arm and a self-hosted control arm.")
        if cfg.sequential.enabled and control:
            from harness.judge.preprocess import settings_of

            judge_cfg = None
            try:
                judge_cfg = settings_of(data)
            except ValueError as exc:  # ConfigError is a ValueError
                notes.append(f"Judge settings unusable, defaults used: {exc}")
            fn = _stage("harness.canary.sequential", "daily_verdicts", notes)
            verdicts = _run(fn, "daily verdict", notes, data, clock, judge_cfg=judge_cfg,
                            scores=scores)  # fmt: skip
            if verdicts is not None and data.days is not None:
                notes.append("In a day's report the daily verdict covers that day's rows only; "
                             "the anytime-valid sequence over the month is in the run's "
                             "cumulative report.")  # fmt: skip
    canary = {
        "enabled": cfg.enabled,
        "whatif": _whatif(data, notes),
        "view_day": view_day,
        "days": len(present),
        "first_day": present[0] if present else None,
        "last_day": present[-1] if present else None,
        "day_s": clock.day_s if clock else None,
        "time_scale": clock.time_scale if clock else None,
        "origin_ns": clock.origin_ns if clock else None,
        "api_arm": api,
        "control_arm": control,
        "simulator_arms": sims,
        "demonstration": bool(sims),
        "share": cfg.share,
        "factors": dataclasses.asdict(cfg.factors),
        "slo": dataclasses.asdict(data.analysis.slo),
        "status": data.manifest.get("status"),
        "notes": notes,
    }
    bundle = {"canary": canary, "daily": daily, "drift": drift, "daily_verdict": verdicts,
              "downtime": downtime_summary(data.manifest, clock)}  # fmt: skip
    data.cache[_CACHE_KEY] = bundle  # type: ignore[assignment]
    return bundle


def canary_section(data: RunData, summary: dict[str, Any]) -> dict[str, Any] | None:
    """Section compute for ``canary``: None for a run that is not a canary. Also sets
    ``summary["daily"]``, ``["drift"]``, ``["daily_verdict"]`` and ``["downtime"]`` (only for a
    canary, so a short benchmark's summary.json carries none of them)."""
    bundle = canary_bundle(data)
    if bundle is None:
        return None
    for key in KEYS:
        summary[key] = bundle[key]
    out = dict(bundle["canary"])
    out["recommendation"] = recommend(summary, out)
    return out


# ---------------------------------------------------------------- recommendation


def _num(x: Any) -> float | None:
    ok = isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
    return float(x) if ok else None


def provider_drift(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Attribution entries that name a change in the API arm alone (provider drift)."""
    d = summary.get("drift") or {}
    return [a for a in d.get("attribution") or [] if "provider" in str(a.get("kind") or "")]


def alarms(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Drift series that raised an alarm."""
    d = summary.get("drift") or {}
    return [s for s in d.get("series") or [] if s.get("alarm")]


def monthly_costs(summary: dict[str, Any], api: str | None, control: str | None
                  ) -> tuple[float | None, float | None]:  # fmt: skip
    """(API monthly total, self-hosted monthly total incl. fixed costs) from ``cost``."""
    arms = (summary.get("cost") or {}).get("arms") or {}
    return (_num((arms.get(api) or {}).get("monthly_total_usd")) if api else None,
            _num((arms.get(control) or {}).get("monthly_total_usd")) if control else None)  # fmt: skip


def recommend(summary: dict[str, Any], canary: dict[str, Any]) -> dict[str, Any]:
    """``{"choice": hosted API | self-host | hybrid, "why": [sentences]}`` from the verdict
    (self-hosted candidate vs API baseline), the monthly costs and provider drift.

    - NO_GO: hosted API (the self-hosted model is shown worse on a critical metric);
    - GO and self-hosting cheaper: self-host;
    - GO, the API cheaper, and the API drifted: hybrid (self-host is as good and pinned);
      without drift: hosted API;
    - INCONCLUSIVE: hybrid when self-hosting is cheaper (route a share to self-host while
      evidence accumulates), else hosted API (a drift of the API is then a risk to manage:
      pin its model version where the provider allows it and keep the canary running);
    - costs unknown: a GO gives hybrid (quality holds, savings unshown), otherwise hosted API.
    The declared qualitative factors are shown beside it, not scored.
    """
    decision = (summary.get("verdict") or {}).get("decision") or "INCONCLUSIVE"
    api_usd, self_usd = monthly_costs(summary, canary.get("api_arm"), canary.get("control_arm"))
    drifted = provider_drift(summary)
    why = []
    if decision == "NO_GO":
        why.append("the canary verdict is NO_GO: the self-hosted arm is shown worse than the "
                   "hosted API on a critical metric")  # fmt: skip
    elif decision == "GO":
        why.append("the canary verdict is GO: the self-hosted arm is within every margin of "
                   "the hosted API")  # fmt: skip
    else:
        why.append("the canary verdict is INCONCLUSIVE: the month could not show the "
                   "self-hosted arm within its margins, nor worse")  # fmt: skip
    cheaper = None
    if api_usd is not None and self_usd is not None:
        cheaper = self_usd < api_usd
        why.append(f"self-hosting costs ${self_usd:,.0f}/month against ${api_usd:,.0f} for the "
                   "API (engineering time included)")  # fmt: skip
    else:
        why.append("the monthly cost of one path is unknown (see the cost section)")
    seq = summary.get("daily_verdict") or []
    if seq and seq[-1].get("decision") and seq[-1].get("decision") != decision:
        why.append(f"the anytime-valid daily verdict on day {seq[-1].get('day')} says "
                   f"{seq[-1]['decision']} (the decision above is the whole run judged once)")  # fmt: skip
    if drifted:
        d = drifted[0]
        why.append(f"the hosted API drifted ({d.get('metric')}) while the pinned self-hosted "
                   "arm did not")  # fmt: skip
    if decision == "NO_GO":
        choice = HOSTED
    elif cheaper is None:
        choice = HYBRID if decision == "GO" else HOSTED
    elif decision == "GO":
        choice = SELFHOST if cheaper else (HYBRID if drifted else HOSTED)
    else:
        choice = HYBRID if cheaper else HOSTED
        if drifted and not cheaper:
            why.append("the API stays the cheaper path: pin its model version where the "
                       "provider allows it and keep the canary running to catch the next "
                       "silent update")  # fmt: skip
    return {"choice": choice, "decision": decision, "why": why}
