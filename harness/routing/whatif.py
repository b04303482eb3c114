"""``harness whatif RUN_DIR [policy=FILE.yaml] [policy.KEY=VALUE ...] [--grid KEY=V1,V2 ...]``:
replay routing policies over a mirrored run and recommend the cheapest that passes the
canary judge against the cloud arm.

Policies: the base policy (``policy=FILE.yaml`` and/or ``policy.KEY=VALUE`` overrides of
:class:`~harness.routing.settings.PolicyConfig`, e.g. ``policy.failover.ttft_budget_s=0.8``;
without ``policy=``, a run with a router arm starts from that arm's policy in its manifest,
and says so, else from the defaults)
and, with ``--grid KEY=V1,V2,...`` (repeatable: the cartesian product), one policy per grid
point. The two pure paths (each arm alone) are always replayed beside them.

Held-out calibration: the arrivals are split (``--split hash``: by a hash of ``sample_id``;
``time``: the first part of the run; ``--calib-frac``). The policy is chosen on the
calibration part: the cheapest (monthly total at the traffic model) whose replay the canary
judge (:func:`harness.judge.judge.judge`, the run's ``judge`` settings) finds ``GO`` against
the cloud arm there; every figure reported for it, and for every policy, is from the
evaluation part. Each policy's state still evolves over the whole run, in arrival order.

Routing figures on the evaluation part: PGR per policy, and over the grid's curve of quality
(``--scorer``, default ``exact_match``) against cloud-call share: APGR and CPT(50%)
(:func:`harness.routing.replay.apgr`, :func:`~harness.routing.replay.cpt`).

Intervals: percentile bootstrap over items (``sample_id``: all arrivals of a resampled item
together), paired across policies. A run recorded with ``record.output_text`` hash or drop
is refused (exit 2) when a policy escalates on text validators: they would read hashes or
nothing.

Writes ``RUN_DIR/whatif/summary.json``, ``whatif.md`` (the memo section) and
``plots/pareto.png`` / ``plots/routing_curve.png`` (+ SVG). Exit status 0; 2 for bad input.
"""

from __future__ import annotations

import argparse
import itertools
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.analysis.data import RunData
from harness.routing.replay import (
    Mirrored,
    Replayed,
    Resampler,
    apgr,
    cpt,
    judge_inputs,
    mirrored_items,
    monthly_model,
    monthly_usd,
    pgr,
    policy_figures,
    replay,
    routing_curve,
    split_items,
)
from harness.routing.settings import VALIDATOR_NAMES, PolicyConfig, policy_from_config

OUT_DIR = "whatif"
DEFAULT_SCORER = "exact_match"
PURE_SMALL, PURE_LARGE = "selfhost_only", "cloud_only"
JUDGE_RULE = ("the canary judge (harness.judge) on the replayed per-request outcomes, paired "
              "on pair_id with the cloud arm alone, under the run's judge settings")  # fmt: skip


# ---------------------------------------------------------------- policies from the command line


def _split_values(text: str) -> list[str]:
    """``a,b,[c,d]`` -> ``["a", "b", "[c,d]"]`` (commas inside brackets or braces kept)."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [v.strip() for v in out if v.strip()]


def _key(key: str) -> str:
    return key[len("policy.") :] if key.startswith("policy.") else key


def policy_raw(file: Path | None, overrides: list[str],
               base_policy: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """The base policy mapping: ``file`` (YAML; a top-level ``policy:`` key is unwrapped;
    without one, ``base_policy``, else the defaults) merged with ``KEY=VALUE`` overrides
    (Hydra/OmegaConf dotlist syntax)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from harness.config import ConfigError

    base: Any = dict(base_policy or {})
    if file is not None:
        import yaml

        try:
            base = yaml.safe_load(Path(file).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"policy={file}: cannot read it ({exc})") from None
        if isinstance(base, dict) and set(base) == {"policy"}:
            base = base["policy"]
        if not isinstance(base, dict):
            raise ConfigError(f"policy={file}: expected a mapping of policy settings")
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"{o!r}: expected policy.KEY=VALUE")
    try:
        merged = OmegaConf.merge(
            OmegaConf.create(base),
            OmegaConf.from_dotlist(
                [f"{_key(k)}={v}" for k, _, v in (o.partition("=") for o in overrides)]
            ),  # fmt: skip
        )
    except OmegaConfBaseException as exc:
        raise ConfigError(f"policy overrides: {exc}") from None
    return OmegaConf.to_container(merged, resolve=True)  # type: ignore[return-value]


def grid_policies(raw: dict[str, Any], grid: list[str]) -> list[tuple[str, PolicyConfig]]:
    """One (name, policy) per point of the cartesian product of ``grid`` (``KEY=V1,V2,...``)
    over the base mapping ``raw``; just the base policy (``policy``) without a grid."""
    from omegaconf import OmegaConf

    from harness.config import ConfigError

    if not grid:
        return [("policy", policy_from_config(raw))]
    axes: list[tuple[str, list[str]]] = []
    for g in grid:
        key, sep, vals = g.partition("=")
        values = _split_values(vals)
        if not sep or not key or not values:
            raise ConfigError(f"--grid {g!r}: expected policy.KEY=V1,V2,...")
        axes.append((_key(key), values))
    out = []
    for combo in itertools.product(*(v for _, v in axes)):
        items = [f"{k}={v}" for (k, _), v in zip(axes, combo, strict=True)]
        merged = OmegaConf.merge(OmegaConf.create(raw), OmegaConf.from_dotlist(items))
        cfg = policy_from_config(OmegaConf.to_container(merged, resolve=True))
        out.append((" ".join(items), cfg))
    return out


def pure_paths(small: str, large: str) -> list[tuple[str, PolicyConfig]]:
    """The two arms alone, as policies (no rules, no escalation, no failover, no budget)."""
    off = {"escalation": {"enabled": False}, "failover": {"enabled": False},
           "rules": {"sensitive_tags": [], "sensitive_patterns": []}}  # fmt: skip
    return [
        (PURE_SMALL, policy_from_config({"small": small, "large": large, **off})),
        (PURE_LARGE, policy_from_config({"small": small, "large": large, "first": "large", **off})),
    ]


def resolve_arms(data: RunData, cfg: PolicyConfig) -> tuple[str, str]:
    """(small, large): the policy's arms, else the run's self-hosted and API arms."""
    from harness.config import ConfigError
    from harness.cost.measure import role_of

    roles = {a: role_of((data.arm_info.get(a) or {}).get("kind")) for a in data.arms}
    small = cfg.small or next((a for a in data.arms if roles[a] == "selfhost"), None)
    large = cfg.large or next((a for a in data.arms if roles[a] == "api" and a != small), None)
    if small is None or large is None or small == large:
        raise ConfigError(f"policy.small / policy.large: name the two arms to route between "
                          f"(arms of this run: {', '.join(data.arms)})")  # fmt: skip
    for key, arm, role, kinds in (("small", small, "selfhost", "vllm, sim_vllm"),
                                  ("large", large, "api", "openai, sim_cloud")):  # fmt: skip
        if arm not in data.arms:
            raise ConfigError(f"policy.{key}: {arm!r} is not an arm of this run (arms: "
                              f"{', '.join(data.arms)})")  # fmt: skip
        if roles[arm] != role:
            kind = (data.arm_info.get(arm) or {}).get("kind")
            cands = [a for a in data.arms if roles[a] == role]
            raise ConfigError(f"policy.{key}: {arm!r} is a {kind} arm; the {key} arm must be "
                              f"{'self-hosted' if role == 'selfhost' else 'API'} ({kinds}): "
                              f"name one of {', '.join(cands) or 'none'}")  # fmt: skip
    return small, large


def router_policy(data: RunData) -> tuple[str, dict[str, Any]] | None:
    """(arm, policy mapping) of the run's first router arm, as recorded in its manifest
    (``arms.<arm>.policy``: its small/large filled in, the configured daily budget); None
    when the run has no router arm."""
    for arm in data.arms:
        info = data.arm_info.get(arm) or {}
        if info.get("kind") == "router" and isinstance(info.get("policy"), dict):
            return arm, dict(info["policy"])
    return None


#: Validators that read the answer's text (all of them): the replay reads the recorded text.
TEXT_VALIDATORS = VALIDATOR_NAMES


def check_output_text(data: RunData, policies: list[tuple[str, PolicyConfig]]) -> None:
    """A ValueError (one line, naming the setting) when the run did not keep the output text
    (``record.output_text`` hash or drop) and a policy escalates on a validator that reads it:
    the replay would judge hashes or nothing, not answers."""
    mode = ((data.manifest.get("config") or {}).get("record") or {}).get("output_text", "keep")
    if mode in (None, "keep"):
        return
    for name, cfg in policies:
        used = [v for v in cfg.escalation.validators if v in TEXT_VALIDATORS]
        if cfg.escalation.enabled and used:
            raise ValueError(
                f"run {data.run_id} recorded record.output_text={mode}, but policy {name!r} "
                f"escalates on text validators ({', '.join(used)}) that need the answers: "
                "replay a run recorded with record.output_text=keep, or set "
                "policy.escalation.enabled=false"
            )


# ---------------------------------------------------------------- the section


def _verdict(m: Mirrored, r: Replayed, base: Replayed, mask: np.ndarray, sh_per_call: float | None,
             cfg: Any, run_id: str) -> dict[str, Any]:  # fmt: skip
    from harness.judge.judge import judge

    v = judge(judge_inputs(m, r, base, mask, sh_per_call, run_id), cfg)
    d = v.to_dict()
    return {"decision": d["decision"], "score": d["score"], "reasons": d["reasons"],
            "metrics": {k: {"classification": x["classification"], "reason": x["reason"]}
                        for k, x in d["metrics"].items()}}  # fmt: skip


def whatif_section(
    data: RunData,
    policies: list[tuple[str, PolicyConfig]] | dict[str, PolicyConfig | dict[str, Any]],
    *,
    scorer: str | None = None,
    split: str = "hash",
    calib_frac: float = 0.5,
    judge_cfg: Any = None,
) -> dict[str, Any]:
    """The what-if replay of ``policies`` (name, config) over ``data`` (a mirrored run), for
    ``RUN_DIR/whatif/summary.json`` and the main report: per policy its figures with CIs on
    the evaluation part (and on calibration), monthly cost, the judge's verdict on both parts
    and PGR; the pure paths; APGR and CPT(50%); the recommendation (module docstring)."""
    from harness.judge.preprocess import settings_of

    if isinstance(policies, dict):
        policies = [(n, c if isinstance(c, PolicyConfig) else policy_from_config(c))
                    for n, c in policies.items()]  # fmt: skip
    if not policies:
        raise ValueError("whatif_section: no policy to replay")
    clash = {PURE_SMALL, PURE_LARGE} & {n for n, _ in policies}
    if clash:
        raise ValueError(f"whatif_section: policy name(s) {sorted(clash)} are reserved for the "
                         "pure paths")  # fmt: skip
    small, large = resolve_arms(data, policies[0][1])
    policies = [
        (n, replace(c, small=c.small or small, large=c.large or large)) for n, c in policies
    ]
    check_output_text(data, policies)
    m = mirrored_items(data, small, large)
    if m.n == 0:
        raise ValueError(f"run {data.run_id}: no arrival was answered by both {small} and {large}")
    jcfg = judge_cfg if judge_cfg is not None else settings_of(data)
    scorer = scorer or (DEFAULT_SCORER if DEFAULT_SCORER in m.scorers else
                        next(iter(sorted(m.scorers)), None))  # fmt: skip
    if split == "none":
        calib = np.ones(m.n, bool)
        parts = {"calibration": calib, "evaluation": calib}
    else:
        calib = split_items(m, split, calib_frac)
        parts = {"calibration": calib, "evaluation": ~calib}
    b = data.bootstrap()
    rs = {p: Resampler.over_items(m.sample_id[mask], b.resamples, b.seed)
          for p, mask in parts.items()}  # fmt: skip
    mm = monthly_model(data, small)
    replays = {name: replay(m, cfg, name) for name, cfg in [*pure_paths(small, large), *policies]}
    base = replays[PURE_LARGE]
    out_pol: dict[str, Any] = {}
    for name, r in replays.items():
        entry: dict[str, Any] = {"config": _plain(r.cfg), "state": r.state,
                                 "pure": name in (PURE_SMALL, PURE_LARGE)}  # fmt: skip
        for part, mask in parts.items():
            f = policy_figures(m, r, mask, rs[part], b.confidence, scorer)
            api = f["api_usd_per_request"]["value"]
            share = f["selfhost_share"]["value"]
            money = monthly_usd(mm, api, share)
            lo, hi = f["api_usd_per_request"]["ci"]
            if money["total_usd"] is not None and lo is not None and hi is not None:
                own = money["selfhost_usd"] or 0.0
                money["total_usd_ci"] = [float(mm.calls) * lo + own, float(mm.calls) * hi + own]
            f["monthly"] = money
            sh = None if money["selfhost_usd"] is None else money["selfhost_usd"] / float(mm.calls)
            f["verdict"] = (_verdict(m, r, base, mask, sh, jcfg, data.run_id)
                            if name != PURE_LARGE else None)  # fmt: skip
            entry[part] = f
        out_pol[name] = entry
    # routing figures on the evaluation part
    ev = {n: e["evaluation"] for n, e in out_pol.items()}
    q_s = (ev[PURE_SMALL].get("quality") or {}).get("value")
    q_l = (ev[PURE_LARGE].get("quality") or {}).get("value")
    routing: dict[str, Any] = {"scorer": scorer, "quality_small": q_s, "quality_large": q_l}
    if q_s is not None and q_l is not None:
        for e in out_pol.values():
            qv = (e["evaluation"].get("quality") or {}).get("value")
            e["evaluation"]["pgr"] = None if qv is None else pgr(qv, q_s, q_l)
        pts = [(ev[n]["cloud_share"]["value"], (ev[n].get("quality") or {}).get("value"))
               for n, _ in policies]  # fmt: skip
        curve = routing_curve([(x, y) for x, y in pts if x is not None and y is not None], q_s, q_l)
        routing.update({"curve": [list(p) for p in curve], "apgr": apgr(curve),
                        "cpt50": cpt(curve, 0.5), "curve_from": "grid" if len(policies) > 1
                        else "one policy and the two pure paths"})  # fmt: skip
    rec = _recommend(out_pol, [n for n, _ in policies])
    return {
        "run_id": data.run_id,
        "arms": {"small": small, "large": large},
        "items": {
            "matched": m.n,
            "unmatched": m.unmatched,
            "split": split,
            "calib_frac": calib_frac if split != "none" else None,
            "calibration": int(parts["calibration"].sum()),
            "evaluation": int(parts["evaluation"].sum()),
        },  # fmt: skip
        "scorer": scorer,
        "confidence": b.confidence,
        "judge_rule": JUDGE_RULE,
        "traffic": {"monthly_calls": float(mm.calls)},
        "policies": out_pol,
        "routing": routing,
        "recommendation": rec,
        "notes": [*m.notes, *mm.notes]
        + sorted({f"{n}: {w}" for n, e in out_pol.items() for w in e["state"].get("warnings", [])})
        + (
            [
                "--split none: thresholds were chosen on the same arrivals they are reported on "
                "(in-sample)."
            ]
            if split == "none"
            else []
        ),  # fmt: skip
    }


def _cost(e: dict[str, Any], part: str) -> float:
    v = (e[part].get("monthly") or {}).get("total_usd")
    return v if v is not None else math.inf


def _recommend(pol: dict[str, Any], candidates: list[str]) -> dict[str, Any]:
    """The cheapest policy (monthly total, calibration part) the judge finds GO on the
    calibration part, among the candidates and the pure self-hosted path; None when none."""
    names = [*candidates, PURE_SMALL]
    passing = [n for n in names if (pol[n]["calibration"].get("verdict") or {}).get("decision")
               == "GO"]  # fmt: skip
    best = min(passing, key=lambda n: _cost(pol[n], "calibration"), default=None)
    ev = pol[best]["evaluation"] if best else None
    return {
        "policy": best,
        "passing_on_calibration": passing,
        "evaluation_verdict": (ev.get("verdict") or {}).get("decision") if ev else None,
        "monthly_total_usd": ev["monthly"]["total_usd"] if ev else None,
        "monthly_cloud_only_usd": pol[PURE_LARGE]["evaluation"]["monthly"]["total_usd"],
        "monthly_selfhost_only_usd": pol[PURE_SMALL]["evaluation"]["monthly"]["total_usd"],
    }


def _plain(cfg: PolicyConfig) -> dict[str, Any]:
    from dataclasses import asdict

    return asdict(cfg)


# ---------------------------------------------------------------- memo, plots, files


def _usd(x: Any) -> str:
    return "n/a" if x is None else f"${x:,.0f}"


def _pct(x: Any) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _fig(f: dict[str, Any], key: str, fmt: Any) -> str:
    v = (f.get(key) or {}).get("value")
    lo, hi = (f.get(key) or {}).get("ci") or (None, None)
    s = fmt(v) if v is not None else ("censored" if key.endswith("_s") else "n/a")
    return s + (f" [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else "")


def _sec(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3g} s"


def _q(x: Any) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def memo_lines(s: dict[str, Any]) -> list[str]:
    """The memo section (Markdown lines): the recommendation, then one row per policy."""
    rec, it = s["recommendation"], s["items"]
    arms = s["arms"]
    split = ("no held-out split (in-sample)" if it["split"] == "none" else
             f"calibration {it['calibration']} / evaluation {it['evaluation']} arrivals, split "
             f"by {'a hash of sample_id' if it['split'] == 'hash' else 'time'}")  # fmt: skip
    lines = ["## Hybrid routing: what-if replay", "",
             f"Replayed {it['matched']} mirrored arrivals of run {s['run_id']} between "
             f"{arms['small']} (self-hosted) and {arms['large']} (cloud); {split}. Pass rule: "
             f"{s['judge_rule']}, on the calibration part; figures below are from the "
             "evaluation part."]  # fmt: skip
    lines.append("")
    if rec["policy"]:
        lines.append(
            f"**Recommendation: `{rec['policy']}`**, the cheapest policy that passes the canary "
            f"judge against the cloud arm: {_usd(rec['monthly_total_usd'])}/month at the "
            f"traffic model ({s['traffic']['monthly_calls']:,.0f} calls), beside cloud only "
            f"{_usd(rec['monthly_cloud_only_usd'])} and self-hosted only "
            f"{_usd(rec['monthly_selfhost_only_usd'])}; verdict on the evaluation part: "
            f"{rec['evaluation_verdict']}."
        )
    else:
        lines.append(
            "**No replayed policy passed the canary judge against the cloud arm** on the "
            f"calibration part: keep the cloud arm ({_usd(rec['monthly_cloud_only_usd'])}/month; "
            f"self-hosted only {_usd(rec['monthly_selfhost_only_usd'])}), or widen the grid."
        )
    r = s["routing"]
    if r.get("apgr") is not None:
        lines.append(f"Routing curve ({r['curve_from']}, quality = {r['scorer']}): APGR "
                     f"{r['apgr']:.3f}, CPT(50%) {_pct(r.get('cpt50'))} cloud calls.")  # fmt: skip
    lines += ["", "| policy | monthly | quality | p99 TTFT | p99 E2E | failures | cloud share | "
                  "escalated | verdict |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, e in s["policies"].items():
        f = e["evaluation"]
        v = (f.get("verdict") or {}).get("decision") or "(baseline)"
        lines.append(f"| {name} | {_usd(f['monthly']['total_usd'])} | {_fig(f, 'quality', _q)} | "
                     f"{_fig(f, 'ttft_p99_s', _sec)} | {_fig(f, 'e2e_p99_s', _sec)} | "
                     f"{_fig(f, 'failure_rate', _pct)} | {_fig(f, 'cloud_share', _pct)} | "
                     f"{_fig(f, 'escalation_rate', _pct)} | {v} |")  # fmt: skip
    lines.append("")
    lines.append(f"Intervals: {round(100 * s['confidence'])}% bootstrap over items (sample_id: "
                 "all arrivals of a resampled item together; the same resamples for every "
                 "policy). Monthly totals: the API cost of every replayed call plus the "
                 "self-hosted fleet sized for the share of calls it serves.")  # fmt: skip
    if s.get("policy_from"):
        lines.append(s["policy_from"])
    lines += [f"- {n}" for n in s["notes"]]
    return lines


def write_plots(s: dict[str, Any], directory: Path) -> list[str]:
    """``pareto`` (monthly cost vs quality, colour p99 E2E) and ``routing_curve`` (PGR vs cloud
    share); returns the names written."""
    import matplotlib.pyplot as plt

    from harness.report.plots import PlotWriter

    w = PlotWriter(directory)
    written = []
    rows = []
    for name, e in s["policies"].items():
        f = e["evaluation"]
        c, q = f["monthly"]["total_usd"], (f.get("quality") or {}).get("value")
        p99 = (f.get("e2e_p99_s") or {}).get("value")
        if c is not None and q is not None:
            rows.append((name, c, q, p99))
    if rows:
        fig, (aq, al) = plt.subplots(1, 2, figsize=(11, 4.5))
        xs = [r[1] for r in rows]
        fin = [r[3] for r in rows if r[3] is not None]
        top = 1.1 * max(fin) if fin else 1.0
        aq.scatter(xs, [r[2] for r in rows])
        al.scatter(xs, [r[3] if r[3] is not None else top for r in rows],
                   marker="o", c=["C0" if r[3] is not None else "C3" for r in rows])  # fmt: skip
        for name, c, q, p99 in rows:
            aq.annotate(name, (c, q), fontsize=7, xytext=(3, 3), textcoords="offset points")
            al.annotate(name, (c, p99 if p99 is not None else top), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")  # fmt: skip
        for ax in (aq, al):
            ax.set_xlabel("monthly cost at the traffic model (USD)")
        aq.set_ylabel(f"quality ({s['scorer']})")
        al.set_ylabel("p99 request E2E (s; red: censored)")
        w.save(fig, "pareto", "Routing policies: cost vs quality and p99 (evaluation part)")
        written.append("pareto")
    curve = s["routing"].get("curve")
    if curve:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        ax.plot([x for x, _ in curve], [y for _, y in curve], marker="o", label="policies")
        ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="random router")
        ax.set_xlabel("share of requests calling the cloud arm")
        ax.set_ylabel("performance gap recovered (PGR)")
        ax.legend()
        w.save(fig, "routing_curve", f"Quality vs cloud share (APGR {s['routing']['apgr']:.3f})")
        written.append("routing_curve")
    return written


def write_whatif(run_dir: Path, s: dict[str, Any]) -> Path:
    """``RUN_DIR/whatif/``: summary.json, whatif.md and plots/."""
    from harness.report.jsonio import write_json

    out = Path(run_dir) / OUT_DIR
    out.mkdir(parents=True, exist_ok=True)
    s = {**s, "plots": write_plots(s, out / "plots")}
    write_json(out / "summary.json", s)
    (out / "whatif.md").write_text("\n".join(memo_lines(s)) + "\n", encoding="utf-8")
    return out


def run_whatif(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="harness whatif", description="replay routing policies "
                                 "over a mirrored run (see harness/routing/whatif.py)")  # fmt: skip
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("overrides", nargs="*", help="policy=FILE.yaml and policy.KEY=VALUE")
    ap.add_argument("--grid", action="append", default=[], help="policy.KEY=V1,V2,...")
    ap.add_argument("--scorer", default=None, help=f"headline quality scorer ({DEFAULT_SCORER})")
    ap.add_argument("--split", default="hash", choices=("hash", "time", "none"))
    ap.add_argument("--calib-frac", type=float, default=0.5)
    args = ap.parse_intermixed_args(argv)
    run_dir = args.run_dir.resolve()
    if not (run_dir / "manifest.json").is_file():
        print(f"error: {run_dir} is not a run directory (no manifest.json)", file=sys.stderr)
        return 2
    file = None
    rest = []
    for o in args.overrides:
        if o.startswith("policy="):
            file = Path(o.partition("=")[2])
        else:
            rest.append(o)
    from harness.analysis.data import load_run

    data = load_run(run_dir)
    policy_from = None
    base = None
    if file is None:  # the run's router arm's own policy, when it has one
        got = router_policy(data)
        if got is not None:
            arm, base = got
            policy_from = (f"No policy= given: the base policy is router arm {arm!r}'s, from "
                           "the run's manifest (overrides and --grid apply on top of it).")  # fmt: skip
            print(f"whatif: {policy_from}")
    raw = policy_raw(file, rest, base)
    policies = grid_policies(raw, args.grid)
    try:
        s = whatif_section(data, policies, scorer=args.scorer, split=args.split,
                           calib_frac=args.calib_frac)  # fmt: skip
    except ValueError as exc:
        from harness.config import ConfigError

        if isinstance(exc, ConfigError):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if policy_from:
        s["policy_from"] = policy_from
    out = write_whatif(run_dir, s)
    rec = s["recommendation"]
    print(f"whatif: {len(policies)} polic{'y' if len(policies) == 1 else 'ies'} replayed over "
          f"{s['items']['matched']} arrivals; recommended: {rec['policy'] or 'none passes'}"
          + (f" ({_usd(rec['monthly_total_usd'])}/month)" if rec["policy"] else ""))  # fmt: skip
    print(f"summary: {out / 'summary.json'}")
    print(f"memo:    {out / 'whatif.md'}")
    return 0
