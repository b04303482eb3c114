"""Daily figures of a month-long canary: one entry per experiment-clock day, per arm.

**Which day a figure belongs to.** A logical request (:mod:`harness.analysis.requests`)
belongs to the experiment-clock day of its *arrival*: the ``t_virtual`` of its first attempt
(``clock.days_of``; when that is null, the arrival's wall time on the clock). Its retries,
its final outcome, its latency, its cost and its scores count on that day, even when it
ends after midnight (a request that arrives at 23:59:59 on day 0 and ends on day 1 is a day-0
request). Requests the harness cancelled (drain, SIGINT) are counted apart (``cancelled``)
and left out of every other figure, as in the rest of the report. Rows before the clock's
origin (negative day) are left out.

Per day and arm (:func:`daily_entries`):

- ``requests``: logical requests (cancelled ones left out); ``ok``: those whose final
  attempt succeeded; ``cancelled``; ``attempts``: rows of the day's requests.
- ``ttft_s`` / ``e2e_s``: ``p50``, ``p99``, ``n``, ``censored`` of ``request_ttft_s`` /
  ``request_e2e_s`` (:func:`harness.analysis.metrics.request_ttft` /
  :func:`~harness.analysis.metrics.request_e2e`: from ``t_arrival`` to the first token / end
  of the final attempt, retries and backoffs included; a request that finally failed is
  censored, ``+inf``; quantiles type 7 as :func:`harness.analysis.stats.sorted_quantiles`).
  A quantile that falls among censored values is null. ``p50_answered`` /
  ``p99_answered`` / ``n_answered``: the same over the answered requests only (failures are
  counted in ``errors``), so a day with more than 1% failures still has a latency figure.
- ``errors``: requests that finally failed, by the final attempt's ``error_type``;
  ``error_rate = failed requests / requests``; ``attempt_errors``: failed attempts by type.
- ``tickets``: model failures a user would file a ticket for, one per request at most, from
  the closed set :data:`TICKET_TYPES`: a request that finally failed counts under its error
  type (``empty`` is a 2xx with no content, ``truncated`` a stream cut short; a type outside
  the schema's set counts as ``other_error``); an answered request counts as ``refusal`` when
  the ``refusal`` scorer says 1, else as ``format_break`` when ``format_valid`` or
  ``json_schema`` says 0 (scores table; no scores, no quality tickets). ``tickets_total``.
- ``retry_rate``: ``share`` = requests with more than one attempt / requests, and
  ``attempts_per_request`` = attempts / requests.
- ``quality``: mean of each scorer over the day's scored rows, ``quality_n`` their count,
  ``quality_by_category``: scorer -> category -> ``{"mean", "n"}``.
- ``cost_usd`` (what running this arm of the canary cost that day), ``cumulative_usd`` and
  ``projected_monthly_usd``; ``cost_basis`` says how (see :func:`_arm_costs`). API arm:
  the day's requests priced attempt by attempt under the billing policy
  (``ArmSpend.per_request_usd`` of :func:`harness.cost.section.run_cost`); projection
  ``monthly calls x (cost so far / requests so far)``, the cost model's
  ``api(V) = V x c_call`` with ``c_call`` measured over the days so far (measured retries
  even when ``traffic.retry_rate`` is set: the canary watches them). Self-hosted arm: fixed
  per day, ``max(1, min_replicas) x 24 h x price per replica-hour + fixed monthly costs
  (engineering hours x hourly rate + storage + network + monitoring + other) x day / 730 h``
  (the canary deployment at its minimum scale); projection: the cost model's
  ``monthly_total_usd`` at the configured traffic (it does not depend on the day's usage).
  ``cumulative_scope`` says what "so far" covers: ``"run"``, every loaded day up to this one
  (the cumulative report); ``"day"`` in a day's view (``load_run(days=...)``, ``harness
  report --day N``): only that day's rows are loaded, so ``cumulative_usd`` is the day's own
  cost and the API projection uses that day's requests only (the month so far is in the
  cumulative report).
- ``response_models`` / ``system_fingerprints``: value -> attempts that reported it.

:func:`daily_frame` turns the entries into a tidy table (``day, arm, metric, value``) for
plots and drift detection. Everything is vectorised over rows (numpy group counts, one sort
per latency metric); loops run over days, arms and scorers only.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from harness.analysis.data import RunData
from harness.analysis.requests import CANCELLED, FAILED, OK, logical_requests
from harness.analysis.stats import sorted_quantiles
from harness.canary.clock import ExperimentClock
from harness.cost.model import HOURS_PER_MONTH
from harness.record.schema import ERROR_TYPES

#: Ticket types (closed set): failed requests by error type, then answer-quality failures.
ERROR_TICKETS = tuple(e for e in ERROR_TYPES if e != "cancelled")
QUALITY_TICKETS = ("refusal", "format_break")
TICKET_TYPES = (*ERROR_TICKETS, "other_error", *QUALITY_TICKETS)
#: Scorers whose 0 is a format break (the answer does not have the form asked for).
FORMAT_SCORERS = ("format_valid", "json_schema")
#: Quantiles reported per day.
DAILY_QUANTILES = (("p50", 0.5), ("p99", 0.99))
#: Per-row columns the daily figures need beyond :class:`RunData` (read from the part files).
EXTRA_COLUMNS = ("request_id", "t_virtual", "response_model", "system_fingerprint")
#: Days in the cost model's month (730 h / 24).
DAYS_PER_MONTH = float(HOURS_PER_MONTH) / 24.0


# ---------------------------------------------------------------- per-row inputs


def _extras(data: RunData) -> dict[str, Any]:
    """``t_virtual`` (int64 ns, or None where null), ``request_id`` and the provider's
    ``response_model`` / ``system_fingerprint`` per row of ``data`` (cached on ``data``).

    The ids are the RunData's own; the other columns are read back from the part files and
    attached to the rows **by key** ``(arm, request_id, attempt)``
    (:meth:`~harness.analysis.data.RunData.read_rows`: same phases and, in a day's view, the
    same days), never by position from a separate read. A row the read lacks gets nulls
    (its ``t_virtual`` then comes from its arrival); a RunData without ids or readable parts
    (built by hand) gets nulls throughout."""
    key = ("canary_extras",)
    if key in data.cache:
        return data.cache[key]  # type: ignore[return-value]
    n = data.n_rows
    cols = [c for c in EXTRA_COLUMNS if c != "request_id"]
    read = data.read_rows(cols)
    keys = data.row_keys()
    if read is None or keys is None or read.num_rows != n:
        out: dict[str, Any] = {
            "t_virtual": np.zeros(n, np.int64),
            "t_virtual_null": np.ones(n, bool),
            "request_id": None if keys is None else keys.column("request_id"),
            "response_model": None,
            "system_fingerprint": None,
        }
    else:
        t = read.column("t_virtual").cast(pa.int64())
        out = {
            "t_virtual": pc.fill_null(t, 0).to_numpy(),
            "t_virtual_null": pc.is_null(t).to_numpy(zero_copy_only=False),
            "request_id": keys.column("request_id"),
            "response_model": read.column("response_model").cast(pa.string()),
            "system_fingerprint": read.column("system_fingerprint").cast(pa.string()),
        }
    data.cache[key] = out  # type: ignore[assignment]
    return out


def request_days(data: RunData, clock: ExperimentClock) -> np.ndarray:
    """The experiment-clock day of each logical request (aligned with
    :func:`~harness.analysis.requests.logical_requests`): its first attempt's ``t_virtual``,
    else its arrival (wall clock, turned into experiment time); -1 when neither is known."""
    lr = logical_requests(data)
    ex = _extras(data)
    first = lr.first
    tv = ex["t_virtual"][first]
    null = ex["t_virtual_null"][first]
    if null.any():
        # wall-clock arrival in absolute ns -> experiment clock
        t0 = data.t0_ns if data.t0_ns is not None else clock.origin_ns
        arr = lr.t_arrival[null]
        ok = np.isfinite(arr)
        wall = t0 + np.round(np.where(ok, arr, 0.0) * 1e9).astype(np.int64)
        virt = clock.origin_ns + np.round((wall - clock.origin_ns) * clock.time_scale)
        tv = tv.copy()
        tv[null] = virt.astype(np.int64)
        bad = np.zeros(tv.size, bool)
        bad[np.flatnonzero(null)[~ok]] = True
    else:
        bad = np.zeros(tv.size, bool)
    days = clock.days_of(tv.astype(np.int64))
    return np.where(bad, -1, days).astype(np.int64)


# ---------------------------------------------------------------- group helpers


def _counts_by(group: np.ndarray, code: np.ndarray, n_groups: int, n_codes: int) -> np.ndarray:
    """(n_groups, n_codes) counts of (group, code) pairs; negative codes/groups left out."""
    keep = (group >= 0) & (code >= 0)
    flat = group[keep] * n_codes + code[keep]
    return np.bincount(flat, minlength=n_groups * n_codes).reshape(n_groups, n_codes)


def _group_quantiles(
    group: np.ndarray, values: np.ndarray, n_groups: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per group: count, censored count (``+inf``) and the :data:`DAILY_QUANTILES`
    (type 7, :func:`sorted_quantiles`), NaN values left out. One sort for all groups."""
    keep = (group >= 0) & ~np.isnan(values) & (values != -np.inf)
    g, v = group[keep], values[keep]
    order = np.lexsort((v, g))
    g, v = g[order], v[order]
    counts = np.bincount(g, minlength=n_groups)
    cens = np.bincount(g[np.isposinf(v)], minlength=n_groups)
    bounds = np.r_[0, np.cumsum(counts)]
    qs = [q for _, q in DAILY_QUANTILES]
    out = np.full((n_groups, len(qs)), np.nan)
    for i in np.flatnonzero(counts):
        out[i] = sorted_quantiles(v[bounds[i] : bounds[i + 1]], qs)
    return counts, cens, out


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _iso(ns: int) -> str:
    return dt.datetime.fromtimestamp(ns / 1e9, dt.UTC).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- quality


def _scores_table(data: RunData, scores: Any) -> pa.Table | None:
    """The scores table from ``scores`` (a :class:`harness.quality.score.Scores`, an Arrow
    table, or None: the run's saved ``scores/scores.parquet`` when there is one; never
    rescored here)."""
    if scores is None:
        from harness.quality.score import read_scores

        saved = read_scores(data.run_dir) if data.run_dir is not None else None
        return None if saved is None else saved.table
    table = getattr(scores, "table", scores)
    return table if isinstance(table, pa.Table) else None


def _score_frame(
    data: RunData, table: pa.Table | None, days: np.ndarray, day_index: dict[int, int]
) -> pd.DataFrame | None:
    """Score rows with the group (day position x arm) of their logical request."""
    if table is None or table.num_rows == 0:
        return None
    rid = _extras(data)["request_id"]
    if rid is None:
        return None
    lr = logical_requests(data)
    keys = pd.DataFrame(
        {
            "arm": np.asarray(data.arms, dtype=object)[lr.arm],
            "request_id": rid.take(pa.array(lr.first)).to_numpy(zero_copy_only=False),
            "day": days,
            "keep": lr.outcome != CANCELLED,
        }
    )
    keys = keys[keys["keep"] & (keys["day"] >= 0)].drop(columns="keep")
    cols = ["arm", "request_id", "scorer", "category", "value"]
    sf = table.select(cols).to_pandas()
    sf["category"] = sf["category"].fillna("(none)")
    sf = sf.merge(keys, on=["arm", "request_id"], how="inner")
    sf = sf[np.isfinite(sf["value"].to_numpy(np.float64))]
    arm_code = {a: i for i, a in enumerate(data.arms)}
    sf["g"] = sf["day"].map(day_index).to_numpy(np.int64) * len(data.arms) + sf["arm"].map(
        arm_code
    ).to_numpy(np.int64)
    return sf


def _quality_tickets(sf: pd.DataFrame | None, n_groups: int) -> np.ndarray:
    """(n_groups, len(QUALITY_TICKETS)) counts: refusal first, else format break."""
    out = np.zeros((n_groups, len(QUALITY_TICKETS)), np.int64)
    if sf is None or sf.empty:
        return out
    per = (
        sf.assign(
            refusal=(sf["scorer"] == "refusal") & (sf["value"] == 1),
            fmt=sf["scorer"].isin(FORMAT_SCORERS) & (sf["value"] == 0),
        )
        .groupby(["g", "arm", "request_id"], sort=False)[["refusal", "fmt"]]
        .any()
    )
    g = per.index.get_level_values("g").to_numpy(np.int64)
    refusal = per["refusal"].to_numpy(bool)
    fmt = per["fmt"].to_numpy(bool) & ~refusal
    out[:, 0] = np.bincount(g[refusal], minlength=n_groups)
    out[:, 1] = np.bincount(g[fmt], minlength=n_groups)
    return out


# ---------------------------------------------------------------- cost


def _arm_costs(
    data: RunData,
    arm: str,
    req_mask: np.ndarray,
    req_day_pos: np.ndarray,
    n_days: int,
    day_s: float,
) -> dict[str, Any]:
    """Cost per day position, its running sum and the running monthly projection for one arm
    (see the module docstring); ``basis`` says which formula, or why there is none."""
    from harness.cost.section import run_cost

    none = {"cost": None, "cum": None, "proj": None}
    try:
        section, spends = run_cost(data)
    except (ValueError, OSError) as exc:  # ConfigError/CatalogError are ValueErrors
        return {**none, "basis": f"unavailable: {exc}"}
    block = (section.get("arms") or {}).get(arm) or {}
    role = block.get("role")
    calls = float((section.get("traffic") or {}).get("monthly_calls") or 0.0)
    if role == "api" and arm in spends:
        lr = logical_requests(data)
        code = data.arms.index(arm)
        kept = np.flatnonzero((lr.arm == code) & (lr.outcome != CANCELLED))
        per_req = np.asarray(spends[arm].per_request_usd, np.float64)
        if per_req.size != kept.size:  # pragma: no cover - arm_spend prices every kept request
            return {**none, "basis": "unavailable: per-request costs do not align"}
        pos = np.full(lr.n, -1, np.int64)
        pos[req_mask] = req_day_pos[req_mask]
        p = pos[kept]
        ok = p >= 0
        cost = np.bincount(p[ok], weights=per_req[ok], minlength=n_days)
        n_req = np.bincount(p[ok], minlength=n_days)
        cum = np.cumsum(cost)
        cum_n = np.cumsum(n_req)
        with np.errstate(invalid="ignore", divide="ignore"):
            proj = np.where(cum_n > 0, calls * cum / np.maximum(cum_n, 1), np.nan)
        return {
            "cost": cost,
            "cum": cum,
            "proj": proj,
            "basis": "api: the day's requests priced attempt by attempt (billing policy, "
            "catalog " + str(block.get("catalog_model")) + "); projection = monthly calls x "
            "cost so far / requests so far",
        }
    if role == "selfhost" and block.get("monthly_total_usd") is not None:
        hours = float(block.get("replica_hours") or 0.0)
        price = float(block.get("compute_usd") or 0.0) / hours if hours > 0 else 0.0
        inputs = (section.get("inputs") or {}).get("selfhost") or {}
        replicas = max(1, int(inputs.get("min_replicas") or 0))
        frac = day_s / 3600.0 / float(HOURS_PER_MONTH)  # this day's share of the month
        fixed = float(block.get("fixed_usd") or 0.0) * frac
        compute = replicas * price * day_s / 3600.0
        eng = float(inputs.get("engineering_hours") or 0.0)
        eng *= float(inputs.get("hourly_rate_usd") or 0.0) * frac
        cost = np.full(n_days, compute + fixed)
        return {
            "cost": cost,
            "cum": np.cumsum(cost),
            "proj": np.full(n_days, float(block["monthly_total_usd"])),
            "detail": {
                "compute_usd": compute,
                "fixed_usd": fixed,
                "engineering_usd": eng,
                "replicas": replicas,
            },
            "basis": f"selfhost: {replicas} replica(s) x 24 h x ${price:.4g}/h + fixed monthly "
            "costs (engineering time included) x day / 730 h; projection = the cost "
            "model's monthly total at the configured traffic",
        }
    return {**none, "basis": "unavailable: arm not costed (" + str(role) + ")"}


# ---------------------------------------------------------------- entries


def _value_counts(
    values: pa.ChunkedArray | None, rows: np.ndarray, row_group: np.ndarray, n_groups: int
) -> list[dict[str, int]]:
    """Per group: value -> rows (nulls left out)."""
    out: list[dict[str, int]] = [{} for _ in range(n_groups)]
    if values is None:
        return out
    enc = pc.dictionary_encode(values.take(pa.array(rows))).combine_chunks()
    idx = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    names = enc.dictionary.to_pylist()
    if not names:
        return out
    counts = _counts_by(row_group, idx, n_groups, len(names))
    for g, c in zip(*np.nonzero(counts), strict=True):
        out[g][names[c]] = int(counts[g, c])
    return out


def daily_entries(data: RunData, clock: ExperimentClock, scores: Any = None) -> list[dict]:
    """One entry per experiment-clock day with rows, in day order (module docstring):
    ``{"day", "start", "end", "arms": {arm: {...}}}``; an arm appears on the days it has
    requests. ``scores``: the run's :class:`~harness.quality.score.Scores` (or its table);
    None reads the saved scores table if there is one."""
    lr = logical_requests(data)
    if lr.n == 0:
        return []
    days = request_days(data, clock)
    day_list = np.unique(days[days >= 0])
    if day_list.size == 0:
        return []
    n_days, n_arms = int(day_list.size), len(data.arms)
    n_groups = n_days * n_arms
    day_index = {int(d): i for i, d in enumerate(day_list)}
    pos = np.searchsorted(day_list, days)
    pos = np.where(days >= 0, pos, -1)
    g_req = np.where(pos >= 0, pos * n_arms + lr.arm, -1)
    kept = lr.outcome != CANCELLED
    g_kept = np.where(kept, g_req, -1)

    def count(mask: np.ndarray) -> np.ndarray:
        g = g_req[mask & (g_req >= 0)]
        return np.bincount(g, minlength=n_groups)

    requests = count(kept)
    ok = count(lr.outcome == OK)
    cancelled = count(lr.outcome == CANCELLED)
    retried = count(kept & (lr.attempts > 1))
    attempts = np.bincount(g_kept[g_kept >= 0], weights=lr.attempts[g_kept >= 0],
                           minlength=n_groups).astype(np.int64)  # fmt: skip

    n_types = len(data.error_types)
    failed = kept & (lr.outcome == FAILED)
    errors = _counts_by(np.where(failed, g_req, -1), lr.error.astype(np.int64), n_groups,
                        n_types)  # fmt: skip
    g_row = g_kept[lr.of_row]  # each row's group (-1: cancelled request or no day)
    bad_rows = ~data.ok & (g_row >= 0)
    attempt_errors = _counts_by(np.where(bad_rows, g_row, -1), data.error.astype(np.int64),
                                n_groups, n_types)  # fmt: skip

    lat, answered = {}, {}
    for key, field in (("ttft_s", lr.ttft_s), ("e2e_s", lr.e2e_s)):
        lat[key] = _group_quantiles(g_kept, field, n_groups)
        answered[key] = _group_quantiles(g_kept, np.where(np.isinf(field), np.nan, field),
                                         n_groups)  # fmt: skip

    table = _scores_table(data, scores)
    sf = _score_frame(data, table, days, day_index)
    q_tickets = _quality_tickets(sf, n_groups)
    quality: list[dict[str, float]] = [{} for _ in range(n_groups)]
    quality_n: list[dict[str, int]] = [{} for _ in range(n_groups)]
    by_cat: list[dict[str, dict[str, dict[str, float]]]] = [{} for _ in range(n_groups)]
    if sf is not None and not sf.empty:
        agg = sf.groupby(["g", "scorer"], sort=True)["value"].agg(["mean", "count"])
        for (g, scorer), mean, cnt in zip(agg.index, agg["mean"], agg["count"], strict=True):
            quality[g][scorer] = float(mean)
            quality_n[g][scorer] = int(cnt)
        agg = sf.groupby(["g", "scorer", "category"], sort=True)["value"].agg(["mean", "count"])
        for (g, scorer, cat), mean, cnt in zip(agg.index, agg["mean"], agg["count"], strict=True):
            by_cat[g].setdefault(scorer, {})[cat] = {"mean": float(mean), "n": int(cnt)}

    ex = _extras(data)
    rows = np.flatnonzero(g_row >= 0)
    models = _value_counts(ex["response_model"], rows, g_row[rows], n_groups)
    fingerprints = _value_counts(ex["system_fingerprint"], rows, g_row[rows], n_groups)

    costs = {
        arm: _arm_costs(data, arm, (lr.arm == a) & (pos >= 0), pos, n_days, clock.day_s)
        for a, arm in enumerate(data.arms)
    }

    scope = "day" if data.days is not None else "run"
    err_name = list(data.error_types)
    ticket_of = [e if e in ERROR_TICKETS else "other_error" for e in err_name]
    entries: list[dict] = []
    for i, day in enumerate(day_list.tolist()):
        arms: dict[str, Any] = {}
        for a, arm in enumerate(data.arms):
            g = i * n_arms + a
            if requests[g] == 0 and cancelled[g] == 0:
                continue
            n = int(requests[g])
            errs = {err_name[t]: int(c) for t, c in enumerate(errors[g]) if c}
            att_errs = {err_name[t]: int(c) for t, c in enumerate(attempt_errors[g]) if c}
            tickets = dict.fromkeys(TICKET_TYPES, 0)
            for t, c in enumerate(errors[g]):
                tickets[ticket_of[t]] += int(c)
            for t, name in enumerate(QUALITY_TICKETS):
                tickets[name] += int(q_tickets[g, t])
            block: dict[str, Any] = {
                "requests": n,
                "ok": int(ok[g]),
                "cancelled": int(cancelled[g]),
                "attempts": int(attempts[g]),
            }
            for key, (cnt, cens, qv) in lat.items():
                block[key] = {name: _num(qv[g, j]) for j, (name, _) in enumerate(DAILY_QUANTILES)}
                block[key]["n"] = int(cnt[g])
                block[key]["censored"] = int(cens[g])
                a_cnt, _, a_qv = answered[key]
                for j, (name, _) in enumerate(DAILY_QUANTILES):
                    block[key][f"{name}_answered"] = _num(a_qv[g, j])
                block[key]["n_answered"] = int(a_cnt[g])
            block.update({
                "errors": errs,
                "error_rate": sum(errs.values()) / n if n else None,
                "attempt_errors": att_errs,
                "tickets": tickets,
                "tickets_total": int(sum(tickets.values())),
                "retry_rate": {
                    "share": int(retried[g]) / n if n else None,
                    "attempts_per_request": int(attempts[g]) / n if n else None,
                },
                "quality": quality[g],
                "quality_n": quality_n[g],
                "quality_by_category": by_cat[g],
            })  # fmt: skip
            c = costs[arm]
            block["cost_usd"] = None if c["cost"] is None else float(c["cost"][i])
            block["cumulative_usd"] = None if c["cum"] is None else float(c["cum"][i])
            block["projected_monthly_usd"] = None if c["proj"] is None else _num(c["proj"][i])
            block["cumulative_scope"] = scope
            if "detail" in c:
                block["cost_detail"] = c["detail"]
            block["cost_basis"] = c["basis"]
            block["response_models"] = models[g]
            block["system_fingerprints"] = fingerprints[g]
            arms[arm] = block
        entries.append({
            "day": int(day),
            "start": _iso(clock.day_start_ns(day)),
            "end": _iso(clock.day_start_ns(day + 1)),
            "arms": arms,
        })  # fmt: skip
    return entries


# ---------------------------------------------------------------- tidy frame


def _flat(block: dict[str, Any]) -> list[tuple[str, float]]:
    """Metric name -> value pairs of one arm's day (numbers only)."""
    out: list[tuple[str, float]] = []

    def add(name: str, v: Any) -> None:
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append((name, float(v)))
        elif v is None:
            out.append((name, math.nan))

    for key in ("requests", "ok", "cancelled", "attempts", "error_rate", "tickets_total",
                "cost_usd", "cumulative_usd", "projected_monthly_usd"):  # fmt: skip
        if key in block:
            add(key, block[key])
    for key, short in (("ttft_s", "ttft"), ("e2e_s", "e2e")):
        for q, v in (block.get(key) or {}).items():
            add(f"{short}_{q}", v)
    rr = block.get("retry_rate") or {}
    add("retry_rate", rr.get("share"))
    add("attempts_per_request", rr.get("attempts_per_request"))
    for group in ("errors", "attempt_errors", "tickets"):
        for t, v in (block.get(group) or {}).items():
            add(f"{group}:{t}", v)
    for s, v in (block.get("quality") or {}).items():
        add(f"quality:{s}", v)
    for s, v in (block.get("quality_n") or {}).items():
        add(f"quality_n:{s}", v)
    for s, cats in (block.get("quality_by_category") or {}).items():
        for c, x in cats.items():
            add(f"quality:{s}:{c}", x.get("mean"))
            add(f"quality_n:{s}:{c}", x.get("n"))
    return out


def daily_frame(entries: list[dict]) -> pd.DataFrame:
    """The entries as a tidy table: one row per (day, arm, metric) with its ``value``.

    Metric names: ``requests``, ``ok``, ``cancelled``, ``attempts``, ``error_rate``,
    ``tickets_total``, ``cost_usd``, ``cumulative_usd``, ``projected_monthly_usd``,
    ``ttft_p50`` ``ttft_p99`` ``ttft_n`` ``ttft_censored`` ``ttft_p50_answered``
    ``ttft_p99_answered`` ``ttft_n_answered`` (same for ``e2e_``),
    ``retry_rate`` (the share), ``attempts_per_request``, ``errors:<type>``,
    ``attempt_errors:<type>``, ``tickets:<type>``, ``quality:<scorer>``,
    ``quality_n:<scorer>``, ``quality:<scorer>:<category>``, ``quality_n:<scorer>:<category>``.
    A null figure is NaN."""
    rows: list[tuple[int, str, str, float]] = []
    for e in entries:
        for arm, block in (e.get("arms") or {}).items():
            rows.extend((int(e["day"]), arm, m, v) for m, v in _flat(block))
    frame = pd.DataFrame(rows, columns=["day", "arm", "metric", "value"])
    return frame.astype({"day": np.int64, "value": np.float64})
