"""Exact what-if replay of a routing policy over a mirrored run.

In a mirrored run every arrival (``pair_id``) was answered by every arm, so what a policy
would have done is known exactly: :func:`replay` drives the same
:class:`~harness.routing.policy.RouterPolicy` the live router arm uses, with the recorded
outcome of whichever arm the policy picks. No counterfactual estimator is involved; the one
approximation is that a second attempt (escalation, failover) is served as the recorded
mirrored request was, at the arrival's time, not at the moment the first attempt ended.

The replay is a discrete-event walk on the experiment clock: arrivals (``t_arrival``) and
attempt ends (``t_end_s = start + elapsed x time_scale``) in time order (an end before an
arrival at the same time), so the breaker, its cooldown and the day's API spend evolve as
they would live: a request sees only the attempts that ended before it arrived.

Per arrival and arm the recorded *logical request* (the arm's client retries included,
:mod:`harness.analysis.requests`) is the attempt the policy sees: ``ttft_s`` / ``e2e_s``
from the arrival, its output text and finish reason, its API cost (the run's cost model,
:func:`harness.cost.section.run_cost`): one leg, as the live router reports each of its legs
to the policy (:func:`harness.routing.policy.leg_attempt`, shared by both). A first leg of the
small arm whose first token comes after the TTFT budget is reported as abandoned at the
budget (``timeout``, no first token, ``e2e_s`` = budget), as the live router reports it; a
second leg waits it out. The small arm's queue depth at an arrival is its latest scrape, if
no older than :data:`~harness.routing.settings.QUEUE_DEPTH_MAX_AGE_S` (as live).

The replayed request (what the user lived through):

- answered by the arm of its last attempt; ``failed`` when that attempt failed or the request
  was rejected (``reject:budget``);
- ``request_ttft_s = offset + ttft(last attempt)``, ``request_e2e_s = offset + e2e(last
  attempt)``, with ``offset`` the first attempt's elapsed time when there were two (so an
  escalation costs small e2e + large e2e, its TTFT small e2e + large TTFT); ``+inf`` when
  failed (censored, as in :mod:`harness.analysis.requests`);
- API cost: the sum of its attempts' recorded API costs; quality: the last attempt's scores
  (``scores/scores.parquet``; NaN when it failed, as an unanswered item).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from harness.analysis.data import RunData
from harness.analysis.requests import CANCELLED, FAILED, OK, logical_requests
from harness.routing.policy import Attempt, RouteRequest, RouterPolicy, Signals, leg_attempt
from harness.routing.settings import QUEUE_DEPTH_MAX_AGE_S, QUEUE_METRIC, PolicyConfig

#: Workload items read at most when looking up prompts and tags by sample_id.
MAX_WORKLOAD_ITEMS = 200_000


@dataclass
class ArmOutcomes:
    """One arm's recorded logical request per matched arrival (aligned arrays)."""

    ok: np.ndarray  # bool
    ttft_s: np.ndarray  # from the arrival; NaN: no first token
    elapsed_s: np.ndarray  # arrival -> end of the final attempt (finite for failures too)
    tpot_s: np.ndarray
    cost_usd: np.ndarray  # API cost of the logical request (0 for a self-hosted arm)
    error_type: list[str | None]
    output_text: list[str | None]
    finish_reason: list[str | None]
    scores: dict[str, np.ndarray]  # scorer -> value of the final attempt (NaN: not scored)


@dataclass
class Mirrored:
    """The arrivals both arms answered, in arrival order, with everything the replay reads."""

    small: str
    large: str
    sample_id: np.ndarray  # object (str or None)
    t_s: np.ndarray  # experiment-clock seconds of the arrival since the clock's origin
    day: np.ndarray  # int experiment-clock day
    time_scale: float
    prompt: list[str]
    tags: list[frozenset[str]]
    queue_depth: np.ndarray  # small arm's latest scraped queue depth at arrival (NaN: none)
    arms: dict[str, ArmOutcomes]
    scorers: dict[str, tuple[str, str | None]]  # scorer -> (kind, better)
    role: dict[str, str | None]  # arm -> api | selfhost
    unmatched: dict[str, int]
    notes: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return int(self.t_s.size)


# ---------------------------------------------------------------- reading the run


def _columns_at(data: RunData, columns: tuple[str, ...], rows: np.ndarray) -> dict[str, list]:
    """Values of extra request columns at the given rows (load order, as :func:`load_run`)."""
    from harness.record.reader import iter_request_parts

    want = np.asarray(rows, np.int64)
    order = np.argsort(want, kind="stable")
    sorted_rows = want[order]
    out: dict[str, list[Any]] = {c: [None] * want.size for c in columns}
    offset, k = 0, 0
    parts = iter_request_parts(data.run_dir, columns, tuple(data.analysis.include_phases))
    for part in parts if want.size else ():
        n = part.num_rows
        j = int(np.searchsorted(sorted_rows, offset + n, side="left"))
        if j > k:
            local = (sorted_rows[k:j] - offset).tolist()
            for c in columns:
                col = part.column(c)
                if pa.types.is_timestamp(col.type):
                    col = col.cast(pa.int64())
                vals = col.take(local).to_pylist()
                for pos, v in zip(order[k:j].tolist(), vals, strict=True):
                    out[c][pos] = v
            k = j
        offset += n
        if k >= want.size:
            break
    return out


def _prompts_and_tags(
    data: RunData, sample_ids: list[str | None], notes: list[str]
) -> tuple[list[str], list[frozenset[str]]]:
    """Prompt text and tags of each sample id, from the run's workload (rebuilt from the
    manifest's ``config.workload``; the request table records neither)."""
    empty = ([""] * len(sample_ids), [frozenset()] * len(sample_ids))
    raw = (data.manifest.get("config") or {}).get("workload")
    if not isinstance(raw, dict):
        notes.append("The manifest has no workload config: prompts and tags unknown, so the "
                     "sensitive rules matched nothing.")  # fmt: skip
        return empty
    try:
        from omegaconf import OmegaConf

        from harness.config import WorkloadConfig, project_root
        from harness.workloads import build_workload

        cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(WorkloadConfig), raw))
        wl = build_workload(cfg, project_root())  # type: ignore[arg-type]
    except Exception as exc:  # a workload file moved or changed since the run
        notes.append(f"The run's workload could not be rebuilt ({type(exc).__name__}: "
                     f"{str(exc)[:160]}): prompts and tags unknown, so the sensitive rules "
                     "matched nothing.")  # fmt: skip
        return empty
    need = {s for s in sample_ids if s is not None}
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for i in range(min(len(wl), MAX_WORKLOAD_ITEMS)):
        it = wl.item(i)
        if it.sample_id in need and it.sample_id not in found:
            found[it.sample_id] = (it.prompt_text(), frozenset(getattr(it, "tags", ()) or ()))
            if len(found) == len(need):
                break
    missing = len(need) - len(found)
    if missing:
        notes.append(f"{missing} sample id(s) were not found in the run's workload: their "
                     "prompts and tags are unknown (no sensitive rule matched them).")  # fmt: skip
    prompts = [found.get(s, ("", frozenset()))[0] if s else "" for s in sample_ids]
    tags = [found.get(s, ("", frozenset()))[1] if s else frozenset() for s in sample_ids]
    return prompts, tags


def _queue_depth(data: RunData, arm: str, t_abs_ns: np.ndarray) -> np.ndarray:
    """The arm's latest scraped ``vllm:num_requests_waiting`` at or before each time (NaN:
    none, or older than :data:`~harness.routing.settings.QUEUE_DEPTH_MAX_AGE_S` wall seconds,
    the live router's staleness rule)."""
    out = np.full(t_abs_ns.size, np.nan)
    m = data.metrics
    if m is None or m.num_rows == 0:
        return out
    import pyarrow.compute as pc

    sub = m.filter(pc.and_(pc.equal(m.column("arm"), arm), pc.equal(m.column("name"),
                                                                    QUEUE_METRIC)))  # fmt: skip
    if sub.num_rows == 0:
        return out
    t = sub.column("t").cast("int64").to_numpy(zero_copy_only=False)
    v = sub.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
    order = np.argsort(t, kind="stable")
    t, v = t[order], v[order]
    # several series (labels) at one scrape: their sum
    uniq, start = np.unique(t, return_index=True)
    sums = np.add.reduceat(v, start)
    j = np.searchsorted(uniq, t_abs_ns, side="right") - 1
    ok = j >= 0
    ok[ok] = (t_abs_ns[ok] - uniq[j[ok]]) <= QUEUE_DEPTH_MAX_AGE_S * 1e9
    out[ok] = sums[j[ok]]
    return out


def _scores_by_request(data: RunData) -> tuple[dict[tuple[str, str], dict[str, float]],
                                                dict[str, tuple[str, str | None]]]:  # fmt: skip
    """``(arm, request_id) -> {scorer: value}`` of the final attempts, and each scorer's kind
    and better direction; empty when the run has no reference answers."""
    from harness.quality.score import ensure_scores, has_references
    from harness.quality.scorers import SCORERS

    phases = list(data.analysis.include_phases)
    if not has_references(Path(data.run_dir), phases):
        return {}, {}
    t = ensure_scores(Path(data.run_dir), phases).table
    out: dict[tuple[str, str], dict[str, float]] = {}
    kinds: dict[str, tuple[str, str | None]] = {}
    cols = [t.column(c).to_pylist() for c in ("arm", "request_id", "scorer", "kind", "value")]
    for arm, rid, scorer, kind, value in zip(*cols, strict=True):
        out.setdefault((arm, rid), {})[scorer] = math.nan if value is None else float(value)
        better = SCORERS[scorer].better if scorer in SCORERS else None
        kinds.setdefault(scorer, (kind, better))
    return out, kinds


def _arm_costs(data: RunData) -> tuple[dict[str, np.ndarray], dict[str, str | None]]:
    """Per arm: USD of each logical request (indexed like :func:`logical_requests`; zeros for
    a self-hosted arm), from the run's cost model; and each arm's role."""
    from harness.cost.measure import role_of
    from harness.cost.section import run_cost

    lr = logical_requests(data)
    _, spends = run_cost(data)
    costs: dict[str, np.ndarray] = {}
    roles: dict[str, str | None] = {}
    for arm in data.arms:
        code = data.arms.index(arm)
        roles[arm] = role_of((data.arm_info.get(arm) or {}).get("kind"))
        full = np.zeros(lr.n)
        if arm in spends:
            keep = np.flatnonzero((lr.arm == code) & (lr.outcome != CANCELLED))
            per = np.asarray(spends[arm].per_request_usd, np.float64)
            if per.size == keep.size:
                full[keep] = per
        costs[arm] = full
    return costs, roles


def mirrored_items(data: RunData, small: str, large: str) -> Mirrored:
    """The arrivals of ``data`` answered by both ``small`` and ``large`` (``pair_id``), in
    arrival order. A ValueError when the run was not mirrored or an arm is missing."""
    from harness.canary.clock import clock_from_manifest

    for arm in (small, large):
        if arm not in data.arms:
            raise ValueError(f"policy arm {arm!r} is not an arm of run {data.run_id} (arms: "
                             f"{', '.join(data.arms)})")  # fmt: skip
    lr = logical_requests(data)
    c = data.cols
    notes: list[str] = []
    per_arm: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for arm in (small, large):
        keep = np.flatnonzero((lr.arm == data.arms.index(arm)) & (lr.outcome != CANCELLED))
        pair = data.pair[lr.first[keep]]
        if pair.size and (pair < 0).any():
            raise ValueError(f"run {data.run_id}: arm {arm!r} has requests without a pair_id; "
                             "the what-if replay needs a mirrored run (load.pairing=mirrored)")  # fmt: skip
        per_arm[arm] = (keep, pair)
    from harness.analysis.paired import align_pairs

    (ks, ps), (kl, pl) = per_arm[small], per_arm[large]
    ia, ib, ua, ub = align_pairs(ps, pl)
    unmatched = {small: ua, large: ub}
    if ua or ub:
        notes.append(f"{ua} arrival(s) of {small} and {ub} of {large} had no counterpart on "
                     "the other arm (or were cancelled there): left out of the replay.")  # fmt: skip
    ls, ll = ks[ia], kl[ib]
    t_arr = lr.t_arrival[ls]
    order = np.argsort(t_arr, kind="stable")
    ls, ll, t_arr = ls[order], ll[order], t_arr[order]
    costs, roles = _arm_costs(data)
    scores, kinds = _scores_by_request(data)

    extra = ("sample_id", "request_id", "output_text", "finish_reason", "t_virtual")
    arms: dict[str, ArmOutcomes] = {}
    first_cols: dict[str, list] = {}
    for arm, li in ((small, ls), (large, ll)):
        fin = lr.final[li]
        cols = _columns_at(data, extra, np.concatenate([fin, lr.first[li]]))
        n = li.size
        if arm == small:
            first_cols = {k: v[n:] for k, v in cols.items()}
        ok = lr.outcome[li] == OK
        ta = lr.t_arrival[li]
        with np.errstate(invalid="ignore"):
            ttft = c["t_first_token"][fin] - ta
            end = c["t_end"][fin] - ta
            started = np.fmax(c["t_sent"][fin], c["t_scheduled"][fin]) - ta
        elapsed = np.where(np.isfinite(end), end, np.where(np.isfinite(started), started, 0.0))
        # ok rows the data checks rejected keep NaN latencies (left out, as in the report)
        ttft = np.where(ok, lr.ttft_s[li], ttft)
        elapsed = np.where(ok, lr.e2e_s[li], np.maximum(elapsed, 0.0))
        names = [None, *data.error_types]
        err = [None if o else names[int(e) + 1] for o, e in zip(ok, data.error[fin], strict=True)]
        rids = cols["request_id"][:n]
        sc: dict[str, np.ndarray] = {}
        for name in kinds:
            sc[name] = np.array([scores.get((arm, r), {}).get(name, math.nan) if o else math.nan
                                 for r, o in zip(rids, ok, strict=True)], np.float64)  # fmt: skip
        arms[arm] = ArmOutcomes(
            ok=ok, ttft_s=ttft, elapsed_s=elapsed, tpot_s=lr.tpot_s[li].astype(np.float64),
            cost_usd=costs[arm][li], error_type=err, output_text=cols["output_text"][:n],
            finish_reason=cols["finish_reason"][:n], scores=sc,
        )  # fmt: skip
        if arm == large:
            miss = int((lr.outcome[li] == FAILED).sum())
            if miss:
                notes.append(f"{miss} arrival(s) failed on {large} after its retries.")
    sample_ids = np.asarray(first_cols.get("sample_id", [None] * ls.size), dtype=object)
    clock = clock_from_manifest(data.manifest)
    scale = clock.time_scale if clock is not None else 1.0
    t0 = data.t0_ns or 0
    t_abs = (t0 + np.round(np.nan_to_num(t_arr) * 1e9)).astype(np.int64)
    tv = first_cols.get("t_virtual") or [None] * ls.size
    tv_ns = np.array([-1 if x is None else int(x) for x in tv], np.int64)
    if clock is not None:
        wall_virtual = clock.origin_ns + np.round((t_abs - clock.origin_ns) * scale)
        tv_ns = np.where(tv_ns >= 0, tv_ns, wall_virtual.astype(np.int64))
        t_s = (tv_ns - clock.origin_ns) / 1e9
        day = clock.days_of(tv_ns)
    else:
        t_s = t_arr - (t_arr[0] if t_arr.size else 0.0)
        day = np.zeros(ls.size, np.int64)
    prompts, tags = _prompts_and_tags(data, list(sample_ids), notes)
    return Mirrored(
        small=small, large=large, sample_id=sample_ids, t_s=np.asarray(t_s, np.float64),
        day=np.asarray(day, np.int64), time_scale=float(scale), prompt=prompts, tags=tags,
        queue_depth=_queue_depth(data, small, t_abs), arms=arms, scorers=kinds, role=roles,
        unmatched=unmatched, notes=notes,
    )  # fmt: skip


# ---------------------------------------------------------------- the replay


@dataclass
class Replayed:
    """What a policy did to every arrival of a :class:`Mirrored` run (aligned arrays)."""

    name: str
    cfg: PolicyConfig
    final_arm: np.ndarray  # int8: 0 small, 1 large, -1 rejected
    first_reason: list[str]
    hop_reason: list[str | None]
    failed: np.ndarray  # bool: the last attempt failed, or the request was rejected
    rejected: np.ndarray  # bool
    sensitive: np.ndarray  # bool
    small_call: np.ndarray  # bool: an attempt went to the small arm
    large_call: np.ndarray  # bool: an attempt went to the large arm
    ttft_s: np.ndarray  # request TTFT (+inf failed)
    e2e_s: np.ndarray  # request E2E (+inf failed)
    tpot_s: np.ndarray  # TPOT of the answering attempt (NaN when not measurable)
    api_usd: np.ndarray  # API cost of the request's attempts
    scores: dict[str, np.ndarray]  # the answer's scores (NaN: unanswered)
    state: dict[str, Any]

    @property
    def escalated(self) -> np.ndarray:
        return np.array([bool(h and h.startswith("escalate:")) for h in self.hop_reason])

    @property
    def failed_over(self) -> np.ndarray:
        return np.array([bool(h and h.startswith("failover:")) or f in ("breaker_open",
                         "failover:queue") for h, f in zip(self.hop_reason, self.first_reason,
                                                           strict=True)])  # fmt: skip


def _attempt(m: Mirrored, arm: str, i: int, start_s: float, deadline: float | None,
             day: int | None = None) -> Attempt:  # fmt: skip
    """The attempt the policy sees when arrival ``i`` is sent to ``arm`` at ``start_s``: the
    arm's recorded logical request as one leg (:func:`~harness.routing.policy.leg_attempt`,
    as the live router derives it from its leg's rows)."""
    o = m.arms[arm]
    ttft = float(o.ttft_s[i])
    return leg_attempt(
        arm, ok=bool(o.ok[i]), error_type=o.error_type[i],
        ttft_s=ttft if math.isfinite(ttft) else None, elapsed_s=float(o.elapsed_s[i]),
        start_s=start_s, time_scale=m.time_scale, deadline_s=deadline,
        output_text=o.output_text[i], finish_reason=o.finish_reason[i],
        cost_usd=float(o.cost_usd[i]), day=day,
    )  # fmt: skip


def replay(m: Mirrored, cfg: PolicyConfig, name: str = "policy") -> Replayed:
    """Run ``cfg``'s policy over the arrivals of ``m`` (see the module docstring)."""
    from dataclasses import replace

    cfg = replace(cfg, small=cfg.small or m.small, large=cfg.large or m.large)
    if {cfg.small, cfg.large} != {m.small, m.large}:
        from harness.config import ConfigError

        raise ConfigError(f"policy.small / policy.large: {cfg.small!r} / {cfg.large!r} are not "
                          f"the replayed arms {m.small!r} / {m.large!r}")  # fmt: skip
    pol = RouterPolicy(cfg)
    n = m.n
    final_arm = np.full(n, -1, np.int8)
    first_reason: list[str] = [""] * n
    hop_reason: list[str | None] = [None] * n
    failed = np.zeros(n, bool)
    rejected = np.zeros(n, bool)
    sensitive = np.zeros(n, bool)
    calls = {cfg.small: np.zeros(n, bool), cfg.large: np.zeros(n, bool)}
    ttft = np.full(n, np.inf)
    e2e = np.full(n, np.inf)
    tpot = np.full(n, np.nan)
    api = np.zeros(n)
    final_pos: list[tuple[str, int] | None] = [None] * n
    reqs: list[RouteRequest | None] = [None] * n
    # heap: (time, 0 = attempt end | 1 = arrival, seq, arrival index, attempt, hop offset)
    heap: list[tuple[float, int, int, int, Attempt | None, float]] = []
    seq = 0
    for i in range(n):
        heap.append((float(m.t_s[i]), 1, seq, i, None, 0.0))
        seq += 1
    heapq.heapify(heap)

    def send(i: int, arm: str, start: float, offset: float) -> None:
        nonlocal seq
        req = reqs[i]
        assert req is not None
        # the TTFT budget applies to the first leg only: a leg sent after a hop is final and
        # waits it out (as live)
        deadline = pol.ttft_deadline(arm, req) if hop_reason[i] is None else None
        att = _attempt(m, arm, i, start, deadline, req.day)
        calls[arm][i] = True
        api[i] += float(att.cost_usd or 0.0) if m.role.get(arm) == "api" else 0.0
        heapq.heappush(heap, (att.t_end_s, 0, seq, i, att, offset))
        seq += 1

    while heap:
        t, kind, _, i, att, offset = heapq.heappop(heap)
        if kind == 1:
            q = float(m.queue_depth[i])
            req = RouteRequest(sample_id=m.sample_id[i], prompt_text=m.prompt[i],
                               tags=m.tags[i], t_s=t, day=int(m.day[i]))  # fmt: skip
            reqs[i] = req
            sensitive[i] = pol.is_sensitive(req)
            d = pol.first(req, Signals(queue_depth=q if math.isfinite(q) else None))
            first_reason[i] = d.reason
            if d.arm is None:
                rejected[i] = failed[i] = True
                continue
            send(i, d.arm, t, 0.0)
            continue
        assert att is not None
        req = reqs[i]
        assert req is not None
        pol.observe(att)
        nxt = pol.after(req, att) if hop_reason[i] is None else None
        if nxt is not None and nxt.arm is not None:
            hop_reason[i] = nxt.reason
            send(i, nxt.arm, att.t_end_s, float(att.e2e_s or 0.0))
            continue
        final_pos[i] = (att.arm, i)
        final_arm[i] = 0 if att.arm == cfg.small else 1
        o = m.arms[att.arm]
        if att.status == "ok":
            ttft[i] = offset + (att.ttft_s if att.ttft_s is not None else math.nan)
            e2e[i] = offset + (att.e2e_s if att.e2e_s is not None else math.nan)
            tpot[i] = o.tpot_s[i]
        else:
            failed[i] = True
    scores: dict[str, np.ndarray] = {}
    for s in m.scorers:
        v = np.full(n, np.nan)
        for k, fp in enumerate(final_pos):
            if fp is not None and not failed[k]:
                v[k] = m.arms[fp[0]].scores[s][k]
        scores[s] = v
    return Replayed(name=name, cfg=cfg, final_arm=final_arm, first_reason=first_reason,
                    hop_reason=hop_reason, failed=failed, rejected=rejected, sensitive=sensitive,
                    small_call=calls[cfg.small], large_call=calls[cfg.large], ttft_s=ttft,
                    e2e_s=e2e, tpot_s=tpot, api_usd=api, scores=scores,
                    state=pol.state())  # fmt: skip


# ---------------------------------------------------------------- figures

#: Latency quantiles reported per replayed policy.
QUANTILES = (0.5, 0.99)


def split_items(m: Mirrored, how: str = "hash", calib_frac: float = 0.5) -> np.ndarray:
    """True for the arrivals in the *calibration* part (thresholds are chosen there), False
    for the *evaluation* part (figures are reported there).

    ``hash``: by ``sha256(sample_id)`` (an item is in one part only, whatever its repeats):
    calibration when the first 8 bytes, as a fraction of 2**64, are below ``calib_frac``.
    ``time``: the first ``calib_frac`` of the arrivals (in arrival order) are calibration."""
    import hashlib

    if not 0 < calib_frac < 1:
        from harness.config import ConfigError

        raise ConfigError(f"--calib-frac: must be in (0, 1), got {calib_frac!r}")
    if how == "time":
        out = np.zeros(m.n, bool)
        out[: int(math.floor(m.n * calib_frac))] = True
        return out
    if how != "hash":
        from harness.config import ConfigError

        raise ConfigError(f"--split: must be hash or time, got {how!r}")
    cut = calib_frac * 2.0**64
    return np.array([int.from_bytes(hashlib.sha256(str(s).encode()).digest()[:8], "big") < cut
                     for s in m.sample_id], bool)  # fmt: skip


def _row_quantiles(rows: np.ndarray, q: float) -> np.ndarray:
    """Type-7 quantile of each row of ``rows`` (NaN left out; ``+inf`` censored: a quantile
    touching one is ``+inf``), as :func:`harness.analysis.stats.sorted_quantiles` per row."""
    s = np.sort(rows, axis=1)  # NaN last
    nv = (~np.isnan(s)).sum(axis=1)
    h = (np.maximum(nv, 1) - 1) * q
    j = np.floor(h).astype(np.int64)
    k = np.minimum(j + 1, np.maximum(nv - 1, 0))
    g = h - j
    r = np.arange(s.shape[0])
    lo, hi = s[r, j], s[r, k]
    with np.errstate(invalid="ignore"):
        out = np.where(g == 0, lo, lo + g * (hi - lo))
    out = np.where(np.isposinf(lo) | (np.isposinf(hi) & (g > 0)), np.inf, out)
    return np.where(nv > 0, out, np.nan)


def _series(m: Mirrored, r: Replayed, scorer: str | None) -> dict[str, tuple[str, np.ndarray]]:
    """Per-arrival series behind each figure: name -> (statistic, values)."""
    out: dict[str, tuple[str, np.ndarray]] = {
        "failure_rate": ("mean", r.failed.astype(np.float64)),
        "cloud_share": ("mean", r.large_call.astype(np.float64)),
        "selfhost_share": ("mean", r.small_call.astype(np.float64)),
        "escalation_rate": ("mean", r.escalated.astype(np.float64)),
        "failover_rate": ("mean", r.failed_over.astype(np.float64)),
        "reject_rate": ("mean", r.rejected.astype(np.float64)),
        "api_usd_per_request": ("mean", r.api_usd.astype(np.float64)),
        "tpot_mean_s": ("nanmean", r.tpot_s),
    }
    for q in QUANTILES:
        tag = f"p{round(q * 100)}"
        out[f"ttft_{tag}_s"] = (f"q{q}", r.ttft_s)
        out[f"e2e_{tag}_s"] = (f"q{q}", r.e2e_s)
    for name, v in r.scores.items():
        out[f"quality.{name}"] = ("nanmean", v)
    if scorer is not None and scorer in r.scores:
        out["quality"] = ("nanmean", r.scores[scorer])
    return out


def _point(stat: str, v: np.ndarray) -> float:
    if v.size == 0:
        return math.nan
    if stat == "mean":
        return float(v.mean())
    if stat == "nanmean":
        return float(np.nanmean(v)) if np.isfinite(v).any() or (~np.isnan(v)).any() else math.nan
    return float(_row_quantiles(v[None, :], float(stat[1:]))[0])


@dataclass(frozen=True, eq=False)
class Resampler:
    """Bootstrap draws over ``n`` arrivals, clustered by item: each resample draws the
    clusters (``clusters``: cluster index per arrival, 0..k-1; None: every arrival its own)
    with replacement and takes every arrival of each drawn cluster, so an item's repeats
    move together. Draws are handed out as integer weights (how often each arrival's cluster
    was drawn), ``resamples`` rows in chunks of at most :data:`CHUNK` values (bounded memory),
    from one seeded stream and identical on every call, so every policy of one what-if is
    measured on the same resampled items (paired). :meth:`over_items` clusters by
    ``sample_id``."""

    n: int
    resamples: int
    seed: int
    clusters: np.ndarray | None = None

    @classmethod
    def over_items(cls, sample_ids: Any, resamples: int, seed: int) -> Resampler:
        """Clusters = items (``sample_id``; an arrival without one is its own item)."""
        keys = ["\0" + str(i) if s is None else "\1" + str(s) for i, s in enumerate(sample_ids)]
        _, inv = np.unique(np.asarray(keys, dtype=str), return_inverse=True)
        return cls(len(keys), resamples, seed, inv.astype(np.int64).ravel())

    @property
    def n_clusters(self) -> int:
        if self.clusters is None or self.n == 0:
            return self.n
        return int(self.clusters.max()) + 1

    def weights(self) -> Iterator[np.ndarray]:
        """``(rows, n)`` int64 weights per chunk, one row per resample."""
        rng = np.random.default_rng(self.seed)
        c = self.n_clusters
        rows = max(1, CHUNK // max(self.n, c, 1))
        done = 0
        while done < self.resamples and self.n > 0:
            k = min(rows, self.resamples - done)
            idx = rng.integers(0, c, size=(k, c), dtype=np.int64)
            flat = (idx + np.arange(k, dtype=np.int64)[:, None] * c).ravel()
            counts = np.bincount(flat, minlength=k * c).reshape(k, c)
            yield counts if self.clusters is None else counts[:, self.clusters]
            done += k


def _weighted_quantiles(x: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """Per row of integer weights ``w``, the type-7 quantile of ``x`` with each value repeated
    its weight times (NaN left out; ``+inf`` censored), as :func:`_row_quantiles` of the
    expanded sample."""
    order = np.argsort(x, kind="stable")  # NaN last
    xs = x[order]
    ws = w[:, order] * (~np.isnan(xs))
    cum = np.cumsum(ws, axis=1)
    nv = cum[:, -1]
    h = (np.maximum(nv, 1) - 1) * q
    j = np.floor(h).astype(np.int64)
    k = np.minimum(j + 1, np.maximum(nv - 1, 0))
    g = h - j
    lo = xs[(cum > j[:, None]).argmax(axis=1)]
    hi = xs[(cum > k[:, None]).argmax(axis=1)]
    with np.errstate(invalid="ignore"):
        out = np.where(g == 0, lo, lo + g * (hi - lo))
    out = np.where(np.isposinf(lo) | (np.isposinf(hi) & (g > 0)), np.inf, out)
    return np.where(nv > 0, out, np.nan)


def _weighted_stat(stat: str, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``stat`` (``mean``, ``nanmean``, ``q<quantile>``) of ``x`` per row of weights ``w``."""
    if stat[0] == "q":
        return _weighted_quantiles(x, w, float(stat[1:]))
    if stat == "nanmean":
        valid = ~np.isnan(x)
        w = w * valid
        x = np.where(valid, x, 0.0)
    tot = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(tot > 0, (w * x).sum(axis=1) / np.maximum(tot, 1), np.nan)


#: Indices per bootstrap chunk (:class:`Resampler`).
CHUNK = 4_000_000


def policy_figures(m: Mirrored, r: Replayed, mask: np.ndarray | None, rs: Resampler | None,
                   confidence: float, scorer: str | None) -> dict[str, Any]:  # fmt: skip
    """Every figure of one replayed policy over the arrivals in ``mask`` (all when None):
    ``{name: {"value", "ci"}}`` with percentile-bootstrap CIs (``rs`` draws over the
    ``mask.sum()`` arrivals, clustered by item with :meth:`Resampler.over_items`; None: no
    CIs).

    ``failure_rate``: failed or rejected / arrivals; ``cloud_share``: arrivals with an
    attempt on the large arm / arrivals; ``escalation_rate`` / ``failover_rate`` /
    ``reject_rate`` likewise; ``api_usd_per_request``: mean API cost of an arrival (every
    attempt billed); ``ttft_pXX_s`` / ``e2e_pXX_s``: quantiles of the request latency
    (failures censored at ``+inf``); ``quality.<scorer>``: mean score of the answered items;
    ``quality``: the headline scorer's."""
    sel = np.ones(m.n, bool) if mask is None else mask
    out: dict[str, Any] = {"n": int(sel.sum())}
    a = (1 - confidence) / 2
    series = {k: (stat, np.asarray(v, np.float64)[sel]) for k, (stat, v) in
              _series(m, r, scorer).items()}  # fmt: skip
    reps: dict[str, list[np.ndarray]] = {k: [] for k in series}
    if rs is not None and int(sel.sum()) >= 2:
        assert rs.n == int(sel.sum()), "resampler drawn for another number of arrivals"
        for w in rs.weights():
            for name, (stat, x) in series.items():
                reps[name].append(_weighted_stat(stat, x, w))
    for name, (stat, x) in series.items():
        ci: list[float | None] = [None, None]
        if reps[name]:
            rr = np.concatenate(reps[name])
            rr = rr[~np.isnan(rr)]
            if rr.size:
                lo, hi = np.quantile(rr, [a, 1 - a], method="inverted_cdf")
                ci = [_num(lo), _num(hi)]
        out[name] = {"value": _num(_point(stat, x)), "ci": ci}
    return out


def _num(x: Any) -> float | None:
    """JSON-safe number: NaN -> None; ``+inf`` kept as None too (censored quantile)."""
    x = float(x)
    return x if math.isfinite(x) else None


# ---------------------------------------------------------------- routing curve figures


def pgr(q: float, q_small: float, q_large: float) -> float | None:
    """Performance gap recovered: ``(q - q_small) / (q_large - q_small)`` (small alone 0,
    large alone 1); None when the two arms' qualities are equal."""
    gap = q_large - q_small
    if not (math.isfinite(gap) and math.isfinite(q)) or abs(gap) < 1e-12:
        return None
    return (q - q_small) / gap


def routing_curve(points: list[tuple[float, float]], q_small: float, q_large: float
                  ) -> list[tuple[float, float]]:  # fmt: skip
    """The PGR-vs-cloud-share curve: ``(share, PGR)`` of each point, with the two pure arms
    ``(0, 0)`` and ``(1, 1)`` added, sorted by share (ties: the best PGR); [] when the arms'
    qualities are equal."""
    pts: dict[float, float] = {0.0: 0.0, 1.0: 1.0}
    for share, q in points:
        p = pgr(q, q_small, q_large)
        if p is None or not math.isfinite(share):
            if p is None and abs(q_large - q_small) < 1e-12:
                return []
            continue
        s = min(max(float(share), 0.0), 1.0)
        pts[s] = max(pts.get(s, -math.inf), p) if s not in (0.0, 1.0) else pts[s]
    return sorted(pts.items())


def apgr(curve: list[tuple[float, float]]) -> float | None:
    """Average performance gap recovered (Ong et al. 2024, "RouteLLM", sec. 5.1): the area
    under the PGR-vs-cloud-call-share curve over share 0..1, by the trapezoidal rule over the
    curve's points (:func:`routing_curve`). 0.5 is a random router's (the straight line), 1 a
    router that reaches the large arm's quality with no cloud calls."""
    if len(curve) < 2:
        return None
    xs = np.array([x for x, _ in curve])
    ys = np.array([y for _, y in curve])
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2))


def cpt(curve: list[tuple[float, float]], target: float = 0.5) -> float | None:
    """Call-performance threshold CPT(target) (RouteLLM): the smallest cloud-call share at
    which the curve reaches PGR ``target``, interpolating linearly between points."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if y0 >= target:
            return x0
        if y1 >= target:
            return x0 + (x1 - x0) * (target - y0) / (y1 - y0)
    if curve and curve[-1][1] >= target:
        return curve[-1][0]
    return None


# ---------------------------------------------------------------- money at the traffic model


@dataclass(frozen=True)
class MonthlyModel:
    """The run's traffic model and self-hosted deployment (from its cost settings): what a
    replayed policy costs per month at ``calls`` calls."""

    calls: Any  # Decimal: calls per month (traffic model)
    profile: tuple[Any, ...]  # Decimal hourly weights, mean 1
    selfhost: Any | None  # harness.cost.model.SelfHostInputs of the small arm (None: not costed)
    notes: tuple[str, ...] = ()


def monthly_model(data: RunData, selfhost_arm: str) -> MonthlyModel:
    """The traffic model and the self-hosted inputs behind the run's own cost section (same
    settings, catalogs and capacity: :func:`harness.cost.section.run_cost`)."""
    from harness.cost import model as cm
    from harness.cost.section import (
        _selfhost_inputs,
        catalogs,
        read_overrides,
        run_cost,
        settings_from,
    )

    section, _ = run_cost(data)
    s = settings_from(data.manifest.get("config"), read_overrides(data.run_dir))
    t = s.traffic
    profile = cm.day_profile(list(t.profile), t.peak_to_average)
    calls = cm.D(section["traffic"]["monthly_calls"])
    notes: list[str] = []
    if t.retry_rate is not None:
        notes.append("traffic.retry_rate is set: the cost section prices API retries at that "
                     "rate, the replay at the retries recorded in the run.")  # fmt: skip
    block = (section.get("arms") or {}).get(selfhost_arm) or {}
    si = None
    cap = block.get("capacity_rps")
    if block.get("role") == "selfhost" and cap:
        _, gpu = catalogs(s)
        inst = gpu.get(s.selfhost.instance)
        if inst is not None and s.selfhost.purchase in inst.usd_per_hour:
            out_per_call = float((block.get("measured") or {}).get("output_tokens_per_call") or 0)
            si = _selfhost_inputs(s, inst, float(cap), out_per_call)
    if si is None:
        notes.append(f"Arm {selfhost_arm!r} has no self-hosted cost in the run's cost section: "
                     "monthly totals of policies that use it are not computed.")  # fmt: skip
    return MonthlyModel(calls, profile, si, tuple(notes))


def monthly_usd(mm: MonthlyModel, api_usd_per_request: float | None,
                selfhost_share: float | None) -> dict[str, float | None]:  # fmt: skip
    """Monthly cost of a policy at the traffic model:

    ``api = calls x api_usd_per_request`` (every API attempt of the replay, escalations and
    failovers included) plus, when a share ``selfhost_share > 0`` of the calls reaches the
    self-hosted arm, ``selfhost_month(calls x selfhost_share)`` (the fleet sized for that
    share's hourly load, its fixed costs and minimum replicas:
    :func:`harness.cost.model.selfhost_month`). With no escalation (each call on one arm)
    this is :func:`harness.cost.model.hybrid_month` at the replayed share."""
    from harness.cost import model as cm

    out: dict[str, float | None] = {"api_usd": None, "selfhost_usd": None, "total_usd": None}
    if api_usd_per_request is None or selfhost_share is None:
        return out
    api = cm.api_month(mm.calls, cm.D(api_usd_per_request))
    out["api_usd"] = float(api)
    if selfhost_share <= 0:
        out["selfhost_usd"] = 0.0
        out["total_usd"] = float(api)
        return out
    if mm.selfhost is None:
        return out
    own = cm.selfhost_month(mm.calls * cm.D(selfhost_share), mm.profile, mm.selfhost).total_usd
    out["selfhost_usd"] = float(own)
    out["total_usd"] = float(api + own)
    return out


# ---------------------------------------------------------------- the canary judge


def judge_inputs(m: Mirrored, r: Replayed, base: Replayed, mask: np.ndarray | None,
                 selfhost_usd_per_call: float | None, run_id: str = ""
                 ) -> Any:  # fmt: skip
    """The canary judge's inputs for policy ``r`` (candidate) against ``base`` (the large arm
    alone, replayed), paired on the arrivals in ``mask``: request latencies and failures per
    arrival, quality per item (``sample_id``, the mean over its repeats), cost per request
    (the candidate's API cost plus its self-hosted month spread over the month's calls)."""
    from harness.judge.samples import (
        ArmRef,
        BinarySample,
        CostSample,
        JudgeInputs,
        LatencySample,
        QualityScorer,
        ScoreSample,
    )

    sel = np.ones(m.n, bool) if mask is None else mask
    inputs = JudgeInputs(ArmRef(run_id, m.large, kind="replay"),
                         ArmRef(run_id, f"whatif:{r.name}", kind="router"))  # fmt: skip
    for measure, fld in (("request_ttft_s", "ttft_s"), ("tpot_s", "tpot_s"),
                         ("request_e2e_s", "e2e_s")):  # fmt: skip
        inputs.latency[measure] = LatencySample(
            getattr(base, fld)[sel].astype(np.float64), getattr(r, fld)[sel].astype(np.float64),
            paired=True, measure=measure)  # fmt: skip
    inputs.failures = BinarySample(base.failed[sel].astype(np.float64),
                                   r.failed[sel].astype(np.float64), paired=True)  # fmt: skip
    ids = m.sample_id[sel]
    keys = np.array(["" if s is None else str(s) for s in ids], dtype=object)
    uniq, inv = np.unique(keys.astype(str), return_inverse=True)
    for name, (kind, better) in m.scorers.items():

        def per_item(v: np.ndarray) -> np.ndarray:
            x = v[sel]
            ok = ~np.isnan(x)
            tot = np.bincount(inv[ok], weights=x[ok], minlength=uniq.size)
            cnt = np.bincount(inv[ok], minlength=uniq.size)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)

        x, y = per_item(base.scores[name]), per_item(r.scores[name])
        both = ~(np.isnan(x) | np.isnan(y))
        ua, ub = int((~np.isnan(x) & np.isnan(y)).sum()), int((np.isnan(x) & ~np.isnan(y)).sum())
        x, y = x[both], y[both]
        if x.size == 0:
            continue
        binary = kind == "binary" and bool(np.isin(x, (0.0, 1.0)).all() and
                                           np.isin(y, (0.0, 1.0)).all())  # fmt: skip
        cls = BinarySample if binary else ScoreSample
        inputs.quality[name] = QualityScorer(kind, better or "either",
                                             cls(x, y, paired=True, unmatched=(ua, ub)))  # fmt: skip
    if selfhost_usd_per_call is not None:
        inputs.cost = CostSample(base.api_usd[sel].astype(np.float64),
                                 r.api_usd[sel] + selfhost_usd_per_call)  # fmt: skip
    else:
        inputs.errors["cost_per_task"] = "the self-hosted arm has no monthly cost"
    return inputs
