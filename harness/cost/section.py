"""The report's ``cost`` section: monthly cost per path at the user's traffic, break-even,
hybrid splits, a 12-month projection and a sensitivity chart, every input in plain view.

Settings come from the run's manifest (``config.pricing``, ``config.traffic``,
``config.selfhost``), overridden by ``RUN_DIR/cost_overrides.yaml`` when ``harness cost``
wrote one. Formulas: :mod:`harness.cost.model` (projection), :mod:`harness.cost.measure`
(what the run measured), :mod:`harness.cost.billing` (what each attempt is billed).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from harness.analysis.data import RunData
from harness.analysis.requests import CANCELLED, logical_requests
from harness.config import ConfigError, omegaconf_error, project_root
from harness.cost import model as cm
from harness.cost.billing import check_policy, policy_for
from harness.cost.catalog import (
    ApiPrice,
    CatalogError,
    GpuInstance,
    load_api_catalog,
    load_gpu_catalog,
    lookup_model,
    stale_entries,
)
from harness.cost.measure import ArmSpend, arm_spend, arm_usage, role_of
from harness.cost.settings import PURCHASE_MODES, PricingConfig, SelfHostConfig, TrafficConfig
from harness.cost.uncertainty import mean_ci

OVERRIDES_FILE = "cost_overrides.yaml"
COST_NODES = ("pricing", "traffic", "selfhost")


@dataclass(frozen=True)
class CostSettings:
    pricing: PricingConfig
    traffic: TrafficConfig
    selfhost: SelfHostConfig


# ---------------------------------------------------------------- settings


def _typed(cls: type, raw: Any, key: str) -> Any:
    import dataclasses
    import difflib

    names = [f.name for f in dataclasses.fields(cls)]
    for k in raw or {}:
        if k not in names:
            near = difflib.get_close_matches(str(k), names, n=1)
            hint = f"; did you mean {key}.{near[0]}?" if near else ""
            raise ConfigError(f"{key}.{k}: unknown key (known: {', '.join(names)}){hint}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), raw or {})
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        err = omegaconf_error(exc)
        msg = str(err)
        raise ConfigError(msg if msg.startswith(key) else f"{key}.{msg}") from None


def settings_from(config: dict[str, Any] | None, overrides: list[str] | None = None
                  ) -> CostSettings:  # fmt: skip
    """Typed cost settings from a (resolved) config dict and ``key=value`` overrides."""
    config = dict(config or {})
    raw = {k: config.get(k) or {} for k in COST_NODES}
    base = OmegaConf.create(raw)
    for ov in overrides or []:
        key, sep, value = ov.partition("=")
        if not sep or key.split(".")[0] not in COST_NODES:
            raise ConfigError(
                f"{ov!r}: expected KEY=VALUE with KEY under {', '.join(COST_NODES)} "
                "(e.g. traffic.monthly_active_users=250000)"
            )
        try:
            OmegaConf.update(base, key, yaml.safe_load(value), merge=True, force_add=True)
        except (OmegaConfBaseException, yaml.YAMLError) as exc:
            raise ConfigError(f"{ov!r}: {exc}") from None
    s = CostSettings(
        _typed(PricingConfig, base.pricing, "pricing"),
        _typed(TrafficConfig, base.traffic, "traffic"),
        _typed(SelfHostConfig, base.selfhost, "selfhost"),
    )
    check_settings(s)
    return s


def check_settings(s: CostSettings) -> None:
    """Values that would make a figure meaningless: one-line ConfigError naming the key."""
    t, h, p = s.traffic, s.selfhost, s.pricing
    for key, v in (("traffic.monthly_active_users", t.monthly_active_users),
                   ("traffic.actions_per_user", t.actions_per_user),
                   ("traffic.calls_per_action", t.calls_per_action),
                   ("selfhost.engineering_hours", h.engineering_hours),
                   ("selfhost.hourly_rate_usd", h.hourly_rate_usd),
                   ("selfhost.storage_usd", h.storage_usd), ("selfhost.network_usd", h.network_usd),
                   ("selfhost.monitoring_usd", h.monitoring_usd),
                   ("selfhost.other_fixed_usd", h.other_fixed_usd)):  # fmt: skip
        if not (v >= 0 and np.isfinite(v)):
            raise ConfigError(f"{key}: must be a finite number >= 0, got {v}")
    for key, v in (("traffic.calls_per_month", t.calls_per_month),
                   ("traffic.retry_rate", t.retry_rate), ("selfhost.capacity_rps", h.capacity_rps),
                   ("traffic.peak_to_average", t.peak_to_average)):  # fmt: skip
        if v is not None and not (v >= 0 and np.isfinite(v)):
            raise ConfigError(f"{key}: must be a finite number >= 0, got {v}")
    if not -1 < t.monthly_growth < 10:
        raise ConfigError(f"traffic.monthly_growth: must be in (-1, 10), got {t.monthly_growth}")
    for x in t.hybrid_shares:
        if not 0 <= x <= 1:
            raise ConfigError(f"traffic.hybrid_shares: each share must be in [0, 1], got {x}")
    cm.day_profile(list(t.profile), t.peak_to_average)
    if not 0 <= h.headroom < 1:
        raise ConfigError(f"selfhost.headroom: must be in [0, 1), got {h.headroom}")
    if h.min_replicas < 0:
        raise ConfigError(f"selfhost.min_replicas: must be >= 0, got {h.min_replicas}")
    if h.capacity_rps is not None and not h.capacity_rps > 0:
        raise ConfigError(f"selfhost.capacity_rps: must be > 0, got {h.capacity_rps}")
    if h.purchase not in PURCHASE_MODES:
        raise ConfigError(
            f"selfhost.purchase: {h.purchase!r} is not one of {', '.join(PURCHASE_MODES)}"
        )
    if p.max_age_days < 0:
        raise ConfigError(f"pricing.max_age_days: must be >= 0, got {p.max_age_days}")
    for provider, pol in p.billing.items():
        check_policy(pol, f"pricing.billing.{provider}")


def read_overrides(run_dir: Path) -> list[str]:
    path = Path(run_dir) / OVERRIDES_FILE
    if not path.is_file():
        return []
    doc = yaml.safe_load(path.read_text(encoding="utf-8")) or []
    if not isinstance(doc, list) or not all(isinstance(x, str) for x in doc):
        raise ConfigError(f"{path}: expected a YAML list of KEY=VALUE strings")
    return doc


def _path(p: str) -> Path:
    q = Path(p)
    return q if q.is_absolute() else project_root() / q


def catalogs(s: CostSettings) -> tuple[dict[str, ApiPrice], dict[str, GpuInstance]]:
    api = load_api_catalog([_path(s.pricing.catalog_file),
                            *(_path(f) for f in s.pricing.extra_catalog_files)])  # fmt: skip
    gpu = load_gpu_catalog(_path(s.selfhost.gpu_catalog_file))
    return api, gpu


def price_for(api: dict[str, ApiPrice], s: CostSettings, arm: str, kind: str | None,
               model: str) -> ApiPrice | None:  # fmt: skip
    """The arm's price: ``pricing.models[arm]`` or its model (``sim-X`` as ``X``); a
    simulated API arm with neither falls back to ``pricing.sim_default_model``."""
    name = s.pricing.models.get(arm, model)
    price = lookup_model(api, name)
    if price is None and kind == "sim_cloud" and arm not in s.pricing.models:
        price = lookup_model(api, s.pricing.sim_default_model)
    return price


def check_for_arms(s: CostSettings, arms: dict[str, tuple[str, str]]) -> None:
    """Before any traffic: the catalogs load, every API arm's model has a price and the
    self-hosted instance exists. ``arms``: name -> (target kind, model)."""
    api, gpu = catalogs(s)
    for arm, (kind, model) in arms.items():
        if role_of(kind) == "api":
            name = s.pricing.models.get(arm, model)
            if price_for(api, s, arm, kind, model) is None:
                raise CatalogError(
                    f"pricing: no price for arms.{arm} model {name!r} in "
                    f"{s.pricing.catalog_file} (add it to a catalog file, or map the arm with "
                    f"pricing.models.{arm}=CATALOG_MODEL)"
                )
    if any(role_of(k) == "selfhost" for k, _ in arms.values()) and s.selfhost.instance not in gpu:
        raise CatalogError(
            f"selfhost.instance: {s.selfhost.instance!r} is not in {s.selfhost.gpu_catalog_file} "
            f"(known: {', '.join(sorted(gpu))})"
        )
    if s.selfhost.sweep_dir:
        sweep_capacity(_path(s.selfhost.sweep_dir), "")  # readable, and a sweep summary
    inst = gpu.get(s.selfhost.instance)
    if inst is not None and s.selfhost.purchase not in inst.usd_per_hour:
        raise CatalogError(
            f"selfhost.purchase: {inst.name} has no {s.selfhost.purchase} price in "
            f"{s.selfhost.gpu_catalog_file} (has: {', '.join(sorted(inst.usd_per_hour))})"
        )


# ---------------------------------------------------------------- capacity


def sweep_capacity(sweep_dir: Path, arm: str) -> tuple[float | None, str]:
    """Goodput (req/s within the SLO) at a sweep's highest load meeting the SLO, the lowest
    over the runs at that load; (None, why) when the sweep has none."""
    path = Path(sweep_dir) / "summary.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"selfhost.sweep_dir: cannot read {path}: {exc}") from None
    if not isinstance(doc, dict) or doc.get("kind") != "sweep":
        raise ConfigError(f"selfhost.sweep_dir: {path} is not a sweep summary")
    curve = (doc.get("arms") or {}).get(arm)
    if not curve:
        return None, f"the sweep has no arm {arm!r}"
    best = curve.get("max_load_meeting_slo")
    if best is None:
        return None, "no load of the sweep met the SLO"
    rates = [p.get("goodput_rps") for p in curve.get("points", []) if p.get("load") == best]
    rates = [r for r in rates if isinstance(r, int | float) and r > 0]
    if not rates:
        return None, f"no goodput recorded at load {best}"
    return float(
        min(rates)
    ), f"sweep {sweep_dir}: goodput at load {best:g}, the highest meeting the SLO"


# ---------------------------------------------------------------- the computation


def _money(x: Decimal | None) -> float | None:
    """USD for summary.json: the exact Decimal rounded to the nearest double (17 digits)."""
    return None if x is None else float(x)


def _selfhost_inputs(s: CostSettings, inst: GpuInstance, capacity: float, out_per_call: float
                     ) -> cm.SelfHostInputs:  # fmt: skip
    h = s.selfhost
    return cm.SelfHostInputs(
        capacity_rps=cm.D(capacity),
        headroom=cm.D(h.headroom),
        min_replicas=int(h.min_replicas),
        usd_per_replica_hour=inst.usd_per_hour[h.purchase],
        gpus_per_replica=inst.gpus,
        fixed_usd=cm.fixed_costs(
            h.engineering_hours,
            h.hourly_rate_usd,
            h.storage_usd,
            h.network_usd,
            h.monitoring_usd,
            h.other_fixed_usd,
        ),  # fmt: skip
        output_tokens_per_call=cm.D(round(out_per_call, 6)),
    )


def _per_call(spend: ArmSpend, retry_rate: float | None) -> Decimal:
    if retry_rate is None:
        return spend.usd_per_call
    return spend.usd_final_mean + cm.D(retry_rate) * spend.usd_retry_mean


def _month_dict(m: cm.SelfHostMonth) -> dict[str, Any]:
    return {
        "monthly_calls": float(m.calls),
        "replicas_by_hour": list(m.replicas_by_hour),
        "replicas_peak": max(m.replicas_by_hour),
        "replica_hours": float(m.replica_hours),
        "gpu_hours": float(m.gpu_hours),
        "compute_usd": _money(m.compute_usd),
        "fixed_usd": _money(m.fixed_usd),
        "monthly_total_usd": _money(m.total_usd),
        "utilisation": None if m.utilisation is None else float(m.utilisation),
        "usd_per_1m_output_tokens": _money(m.usd_per_1m_output),
    }


def compute_cost(data: RunData, s: CostSettings, today: dt.date | None = None) -> dict[str, Any]:
    """The ``cost`` section of summary.json (see README "Cost model")."""
    return _compute(data, s, today)[0]


def run_cost(data: RunData) -> tuple[dict[str, Any], dict[str, ArmSpend]]:
    """The run's own cost section (settings from its manifest and ``cost_overrides.yaml``)
    and each costed API arm's :class:`ArmSpend`, computed once per loaded run: the report's
    cost section and the canary judge's cost-per-task metric both read it. Raises
    ConfigError for unusable settings or catalogs."""
    key = ("cost_section",)
    if key not in data.cache:
        s = settings_from(data.manifest.get("config"), read_overrides(data.run_dir))
        data.cache[key] = _compute(data, s, None)  # type: ignore[assignment]
    return data.cache[key]  # type: ignore[return-value]


def _compute(data: RunData, s: CostSettings, today: dt.date | None
             ) -> tuple[dict[str, Any], dict[str, ArmSpend]]:  # fmt: skip
    today = today or dt.datetime.now(dt.UTC).date()
    api_cat, gpu_cat = catalogs(s)
    t, h = s.traffic, s.selfhost
    profile = cm.day_profile(list(t.profile), t.peak_to_average)
    calls = cm.D(t.calls_per_month) if t.calls_per_month is not None else (
        cm.D(t.monthly_active_users) * cm.D(t.actions_per_user) * cm.D(t.calls_per_action))  # fmt: skip
    notes: list[str] = []
    used: dict[str, dt.date] = {}
    out: dict[str, Any] = {
        "inputs": {
            "pricing": _plain(s.pricing),
            "traffic": _plain(t),
            "selfhost": _plain(h),
            "catalog_entries": {},
        },
        "traffic": {
            "monthly_calls": float(calls),
            "peak_to_average": float(max(profile)),
            "hours_per_month": float(cm.HOURS_PER_MONTH),
        },
        "arms": {},
    }
    conf = data.analysis.confidence
    api_arm = self_arm = None
    spends: dict[str, ArmSpend] = {}
    self_inputs: dict[str, cm.SelfHostInputs] = {}
    routers: list[tuple[str, dict[str, Any]]] = []
    for arm in data.arms:
        kind = data.arm_info.get(arm, {}).get("kind")
        role = role_of(kind)
        block: dict[str, Any] = {"role": role, "kind": kind}
        usage = arm_usage(data, arm)
        if kind == "router":  # a later leg (escalation, failover) is no retry
            from harness.routing.live import later_leg_rows

            lr, code = logical_requests(data), data.arms.index(arm)
            kept = ((lr.arm == code) & (lr.outcome != CANCELLED))[lr.of_row]
            hops = int((later_leg_rows(data, code) & kept).sum())
            retried = max(0, usage.retried_attempts - hops)
            usage = replace(usage, retried_attempts=retried,
                            retry_rate=retried / usage.requests if usage.requests else 0.0)  # fmt: skip
        block["measured"] = {
            "requests": usage.requests, "ok_requests": usage.ok_requests,
            "cancelled_requests": usage.cancelled_requests, "attempts": usage.attempts,
            "retry_rate": usage.retry_rate, "input_tokens_per_call": usage.input_per_call,
            "cached_tokens_per_call": usage.cached_per_call,
            "output_tokens_per_call": usage.output_per_call,
        }  # fmt: skip
        if kind == "router":  # priced by the arms it routed to: after the plain arms
            routers.append((arm, block))
            continue
        if role == "api":
            model = s.pricing.models.get(arm, data.arm_info.get(arm, {}).get("model") or "")
            price = price_for(api_cat, s, arm, kind, model)
            if price is not None and price.model != model and lookup_model(api_cat, model) is None:
                notes.append(f"Arm {arm!r}: simulated model {model!r} has no catalog price; "
                             f"priced as {price.model} (pricing.sim_default_model).")  # fmt: skip
            if price is None:
                notes.append(f"Arm {arm!r}: no catalog price for model {model!r}; not costed.")
                block["monthly_total_usd"] = None
                out["arms"][arm] = block
                continue
            used[f"api:{price.model}"] = price.as_of
            out["inputs"]["catalog_entries"][f"api:{price.model}"] = price.describe()
            pol = policy_for(s.pricing.billing, price.provider)
            sp = arm_spend(data, arm, price, pol, batch=s.pricing.batch)
            if sp.usage.ok_requests == 0:
                notes.append(f"Arm {arm!r}: no request succeeded, so there is no cost per task "
                             "to project; not costed.")  # fmt: skip
                block["monthly_total_usd"] = None
                out["arms"][arm] = block
                continue
            spends[arm] = sp
            per_call = _per_call(sp, t.retry_rate)
            lo, hi = (mean_ci(sp.per_request_usd, conf, data.analysis.bootstrap_resamples,
                              data.analysis.seed) if t.retry_rate is None else (None, None))  # fmt: skip
            monthly = cm.api_month(calls, per_call)
            block.update({
                "catalog_model": price.model,
                "billing_policy": _plain(pol),
                "recorded_usd": _money(sp.usd_total),
                "usd_per_call": _money(per_call),
                "usd_per_call_ci": [lo, hi],
                "usd_per_successful_task": _money(
                    per_call * sp.usage.requests / sp.usage.ok_requests),
                "retry_share": (sp.retry_share if t.retry_rate is None else
                                float(cm.D(t.retry_rate) * sp.usd_retry_mean / per_call)
                                if per_call > 0 else None),  # fmt: skip
                "failed_share": sp.failed_share,
                "retry_rate_used": t.retry_rate if t.retry_rate is not None else sp.usage.retry_rate,
                "monthly_total_usd": _money(monthly),
                "monthly_total_usd_ci": [None if lo is None else float(calls) * lo,
                                         None if hi is None else float(calls) * hi],
                "monthly_tokens": float(calls) * (usage.input_per_call + usage.output_per_call),
            })  # fmt: skip
            failed = 1 - sp.usage.ok_requests / sp.usage.requests
            if failed > 0.05:
                notes.append(
                    f"Arm {arm!r}: {failed:.0%} of requests failed after retries; the monthly "
                    "figure bills them as recorded (a failure before any output costs what the "
                    "billing policy says), so it is what this failure rate costs; per "
                    f"successful task the API costs {_usd_text(per_call / (1 - cm.D(failed)))}."
                )
            if t.retry_rate is not None and sp.retry_mean_assumed and t.retry_rate > 0:
                notes.append(
                    f"Arm {arm!r}: the run retried nothing, so traffic.retry_rate prices each "
                    f"retry as the billing policy bills a 5xx before output "
                    f"({_usd_text(sp.usd_retry_mean)})."
                )
            if sp.estimated_input:
                notes.append(
                    f"Arm {arm!r}: {sp.estimated_input} billed attempt(s) had no prompt count "
                    "(errors before usage); they are charged the arm's mean prompt tokens."
                )
            api_arm = api_arm or arm
        elif role == "selfhost":
            inst = gpu_cat.get(h.instance)
            if inst is None or h.purchase not in inst.usd_per_hour:
                notes.append(f"Arm {arm!r}: instance {h.instance!r} ({h.purchase}) is not in "
                             "the GPU catalog; not costed.")  # fmt: skip
                block["monthly_total_usd"] = None
                out["arms"][arm] = block
                continue
            used[f"gpu:{inst.name}"] = inst.as_of
            out["inputs"]["catalog_entries"][f"gpu:{inst.name}"] = inst.describe()
            capacity, source = _capacity(data, arm, s, notes)
            block["capacity_rps"] = capacity
            block["capacity_source"] = source
            if capacity is None:
                block["monthly_total_usd"] = None
                out["arms"][arm] = block
                continue
            si = _selfhost_inputs(s, inst, capacity, usage.output_per_call)
            self_inputs[arm] = si
            month = cm.selfhost_month(calls, profile, si)
            block.update({"instance": inst.name, "purchase": h.purchase, **_month_dict(month)})
            self_arm = self_arm or arm
        else:
            block["monthly_total_usd"] = None
        out["arms"][arm] = block

    for arm, block in routers:
        out["arms"][arm] = _router_cost(data, s, arm, block, api_cat, self_inputs, calls, profile,
                                        notes, used, out)  # fmt: skip
    out["break_even"] = _break_even(out, calls, profile, spends, self_inputs, api_arm, self_arm,
                                    t.retry_rate)  # fmt: skip
    if api_arm and self_arm:
        pc = _per_call(spends[api_arm], t.retry_rate)
        si = self_inputs[self_arm]
        out["hybrid"] = [
            {"share_selfhosted": x,
             "monthly_total_usd": _money(cm.hybrid_month(calls, cm.D(x), pc, profile, si))}
            for x in t.hybrid_shares
        ]  # fmt: skip
        out["projection"] = projection(calls, cm.D(t.monthly_growth), pc, profile, si,
                                       [cm.D(x) for x in t.hybrid_shares])  # fmt: skip
        out["curve"] = volume_curve(calls, pc, profile, si, [cm.D(x) for x in t.hybrid_shares])
        out["sensitivity"] = sensitivity(s, spends[api_arm], calls, profile, si,
                                         gpu_cat[h.instance])  # fmt: skip
    stale = stale_entries(used, today, s.pricing.max_age_days)
    for k in stale:
        notes.append(f"Catalog entry {k} is dated {used[k].isoformat()}, more than "
                     f"{s.pricing.max_age_days} days before {today.isoformat()}: check its "
                     "price before deciding.")  # fmt: skip
    out["stale_entries"] = stale
    out["notes"] = notes
    # the DESIGN contract: cost.<arm>.monthly_total_usd beside cost.break_even (an arm named
    # like one of this section's own keys is only under cost.arms)
    for arm, block in list(out["arms"].items()):
        if arm not in out:
            out[arm] = {"role": block.get("role"),
                        "monthly_total_usd": block.get("monthly_total_usd")}  # fmt: skip
    return out, spends


def _router_cost(data: RunData, s: CostSettings, arm: str, block: dict[str, Any],
                 api_cat: dict[str, ApiPrice], self_inputs: dict[str, cm.SelfHostInputs],
                 calls: Decimal, profile: tuple[Decimal, ...], notes: list[str],
                 used: dict[str, dt.date], out: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """A router (hybrid) arm's month: each attempt priced by the arm it went to (``route``).

    ``usd_per_call`` = API cost of all its attempts sent to API arms / its requests;
    ``selfhost_share`` = share of its requests with an attempt on the self-hosted arm, which
    carries that share of the traffic at the self-hosted arm's measured capacity:
    ``monthly = calls x usd_per_call + selfhost_month(calls x selfhost_share)`` (no
    self-hosted cost at a share of 0)."""
    block["role"] = "router"
    info = data.arm_info.get(arm, {})
    legs = [x for x in (info.get("small"), info.get("large")) if x]
    names, codes = data.labels.get("route", ([], None))
    legs += [x for x in names if x not in legs]
    lr, code = logical_requests(data), data.arms.index(arm)
    keep = (lr.arm == code) & (lr.outcome != CANCELLED)
    n_req = int(keep.sum())
    per_call, per_req = Decimal(0), np.zeros(n_req)
    recorded = Decimal(0)
    routes: dict[str, Any] = {}
    self_leg, self_share = None, 0.0
    for leg in legs:
        linfo = data.arm_info.get(leg, {})
        lkind = linfo.get("kind")
        mask = data.label_rows("route", leg) & (data.arm == code)
        hit = np.zeros(lr.n, bool)
        hit[lr.of_row[mask]] = True
        share = float((hit & keep).sum() / n_req) if n_req else 0.0
        entry: dict[str, Any] = {"role": role_of(lkind), "kind": lkind, "attempts": int(mask.sum()),
                                 "request_share": share}  # fmt: skip
        if role_of(lkind) == "api":
            model = s.pricing.models.get(leg, linfo.get("model") or "")
            price = price_for(api_cat, s, leg, lkind, model)
            if price is None:
                notes.append(f"Arm {arm!r}: no catalog price for its route {leg!r} (model "
                             f"{model!r}); those attempts are not costed.")  # fmt: skip
                entry["usd_per_call"] = None
            else:
                used[f"api:{price.model}"] = price.as_of
                out["inputs"]["catalog_entries"][f"api:{price.model}"] = price.describe()
                sp = arm_spend(data, arm, price, policy_for(s.pricing.billing, price.provider),
                               batch=s.pricing.batch, route=leg)  # fmt: skip
                per_call += sp.usd_per_call
                recorded += sp.usd_total
                per_req = per_req + sp.per_request_usd
                entry.update({"catalog_model": price.model, "recorded_usd": _money(sp.usd_total),
                              "usd_per_call": _money(sp.usd_per_call)})  # fmt: skip
        elif role_of(lkind) == "selfhost" and self_leg is None:
            self_leg, self_share = leg, share
        routes[leg] = entry
    conf = data.analysis.confidence
    lo, hi = (mean_ci(per_req, conf, data.analysis.bootstrap_resamples, data.analysis.seed)
              if n_req else (None, None))  # fmt: skip
    api_month = cm.api_month(calls, per_call)
    block.update({"small": info.get("small"), "large": info.get("large"), "routes": routes,
                  "recorded_usd": _money(recorded), "usd_per_call": _money(per_call),
                  "usd_per_call_ci": [lo, hi], "selfhost_share": self_share,
                  "api_monthly_usd": _money(api_month)})  # fmt: skip
    if self_leg is None or self_share <= 0:
        block["monthly_total_usd"] = _money(api_month)
        return block
    si = self_inputs.get(self_leg)
    if si is None:
        notes.append(f"Arm {arm!r}: its self-hosted route {self_leg!r} is not costed (see its "
                     "note), so the router's month is not either.")  # fmt: skip
        block["monthly_total_usd"] = None
        return block
    month = cm.selfhost_month(calls * cm.D(self_share), profile, si)
    block.update({"selfhost_monthly_usd": _money(month.total_usd),
                  "monthly_total_usd": _money(api_month + month.total_usd)})  # fmt: skip
    return block


def _usd_text(x: Decimal) -> str:
    return f"${float(x):.3g}"


def _plain(obj: Any) -> Any:
    from dataclasses import asdict

    return asdict(obj)


def _capacity(data: RunData, arm: str, s: CostSettings, notes: list[str]
              ) -> tuple[float | None, str]:  # fmt: skip
    h = s.selfhost
    if h.capacity_rps is not None:
        return float(h.capacity_rps), "selfhost.capacity_rps (configured)"
    if h.sweep_dir:
        cap, why = sweep_capacity(_path(h.sweep_dir), arm)
        if cap is None:
            notes.append(f"Arm {arm!r}: no capacity from {h.sweep_dir}: {why}.")
        return cap, why
    from harness.analysis.goodput import goodput_summary

    gp = goodput_summary(data).get(arm, {})
    rate = gp.get("rate_rps")
    if not (isinstance(rate, float) and rate > 0):
        notes.append(f"Arm {arm!r}: no request met the SLO, so no capacity is measured; set "
                     "selfhost.capacity_rps or selfhost.sweep_dir.")  # fmt: skip
        return None, "run goodput (none)"
    notes.append(
        f"Arm {arm!r}: capacity per replica is this run's goodput ({rate:.3g} req/s within the "
        "SLO), which only bounds capacity from below unless the run saturated the server; run "
        "a sweep and set selfhost.sweep_dir for the capacity at the SLO."
    )
    return float(rate), "run goodput at the SLO (lower bound)"


def _break_even(out: dict[str, Any], calls: Decimal, profile: tuple[Decimal, ...],
                spends: dict[str, ArmSpend], self_inputs: dict[str, cm.SelfHostInputs],
                api_arm: str | None, self_arm: str | None, retry_rate: float | None
                ) -> dict[str, Any]:  # fmt: skip
    be: dict[str, Any] = {"api_arm": api_arm, "selfhost_arm": self_arm, "monthly_calls": None,
                          "monthly_tokens": None, "monthly_api_spend_usd": None,
                          "monthly_api_spend_usd_ci": [None, None], "never": None}  # fmt: skip
    if not (api_arm and self_arm):
        be["why_none"] = "needs one costed API arm and one costed self-hosted arm"
        return be
    sp, si = spends[api_arm], self_inputs[self_arm]
    pc = _per_call(sp, retry_rate)
    tokens_per_call = sp.usage.input_per_call + sp.usage.output_per_call
    v = cm.break_even_calls(pc, profile, si)
    be["marginal_selfhost_usd_per_call"] = _money(cm.marginal_selfhost_usd_per_call(si))
    be["api_usd_per_call"] = _money(pc)
    if v is None:
        be["never"] = True
        be["why_none"] = ("at the measured capacity a self-hosted call costs more than an API "
                          "call at any volume")  # fmt: skip
        return be
    be["never"] = False
    be["monthly_calls"] = float(v)
    be["monthly_tokens"] = float(v) * tokens_per_call
    be["monthly_api_spend_usd"] = _money(cm.api_month(v, pc))
    lo, hi = out["arms"][api_arm].get("usd_per_call_ci") or (None, None)
    if lo is not None and hi is not None and lo > 0:
        # a dearer API call breaks even at a lower volume and a lower spend (monotone)
        ends = []
        for c in (hi, lo):
            ve = cm.break_even_calls(cm.D(c), profile, si)
            ends.append(None if ve is None else _money(cm.api_month(ve, cm.D(c))))
        be["monthly_api_spend_usd_ci"] = ends
    return be


def projection(calls: Decimal, growth: Decimal, per_call: Decimal, profile: tuple[Decimal, ...],
               si: cm.SelfHostInputs, shares: list[Decimal]) -> list[dict[str, Any]]:  # fmt: skip
    """12 months of compound growth: API, self-hosted and each hybrid share per month."""
    rows = []
    for k in range(12):
        v = calls * (1 + growth) ** k
        rows.append({
            "month": k + 1, "monthly_calls": float(v),
            "api_usd": _money(cm.api_month(v, per_call)),
            "selfhost_usd": _money(cm.selfhost_month(v, profile, si).total_usd),
            "hybrid_usd": {str(float(x)): _money(cm.hybrid_month(v, x, per_call, profile, si))
                           for x in shares},
        })  # fmt: skip
    return rows


def volume_curve(calls: Decimal, per_call: Decimal, profile: tuple[Decimal, ...],
                 si: cm.SelfHostInputs, shares: list[Decimal], points: int = 61
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """Monthly cost vs monthly calls, 1/1000x to 1000x the projected traffic (log spaced)."""
    base = calls if calls > 0 else Decimal(1_000_000)
    out = []
    for k in range(points):
        v = base * Decimal(10) ** (Decimal(k - (points - 1) // 2) / Decimal(10))
        out.append({"monthly_calls": float(v), "api_usd": _money(cm.api_month(v, per_call)),
                    "selfhost_usd": _money(cm.selfhost_month(v, profile, si).total_usd),
                    "hybrid_usd": {str(float(x)): _money(cm.hybrid_month(v, x, per_call,
                                                                         profile, si))
                                   for x in shares}})  # fmt: skip
    return out


def twelve_month_saving(calls: Decimal, growth: Decimal, per_call: Decimal,
                        profile: tuple[Decimal, ...], si: cm.SelfHostInputs) -> Decimal:  # fmt: skip
    """sum over 12 months of (API cost - self-hosted cost): > 0 when self-hosting saves."""
    total = Decimal(0)
    for k in range(12):
        v = calls * (1 + growth) ** k
        total += cm.api_month(v, per_call) - cm.selfhost_month(v, profile, si).total_usd
    return total


def sensitivity(s: CostSettings, sp: ArmSpend, calls: Decimal, profile: tuple[Decimal, ...],
                si: cm.SelfHostInputs, inst: GpuInstance) -> dict[str, Any]:  # fmt: skip
    """Tornado: the 12-month saving of self-hosting when one input moves, the rest fixed."""
    t, h = s.traffic, s.selfhost
    g = cm.D(t.monthly_growth)
    r = t.retry_rate if t.retry_rate is not None else sp.usage.retry_rate
    pc = _per_call(sp, t.retry_rate)

    def saving(si_=si, pc_=pc, g_=g) -> float:
        return float(twelve_month_saving(calls, g_, pc_, profile, si_))

    def with_retry(rate: float) -> Decimal:
        return sp.usd_final_mean + cm.D(rate) * sp.usd_retry_mean

    eng = cm.fixed_costs(h.engineering_hours, h.hourly_rate_usd)
    rows = []

    def add(factor: str, lo_label: str, lo: float, hi_label: str, hi: float) -> None:
        rows.append({"factor": factor, "low_label": lo_label, "low": lo,
                     "high_label": hi_label, "high": hi})  # fmt: skip

    price = si.usd_per_replica_hour
    add(
        "GPU price",
        "-30%",
        saving(replace(si, usd_per_replica_hour=price * Decimal("0.7"))),
        "+30%",
        saving(replace(si, usd_per_replica_hour=price * Decimal("1.3"))),
    )
    modes = {m: p for m, p in inst.usd_per_hour.items() if m != h.purchase}
    if modes:
        cheap = min(modes, key=lambda m: modes[m])
        dear = max(modes, key=lambda m: modes[m])
        add(
            "purchase mode",
            cheap,
            saving(replace(si, usd_per_replica_hour=modes[cheap])),
            dear,
            saving(replace(si, usd_per_replica_hour=modes[dear])),
        )
    add(
        "headroom",
        "0.1",
        saving(replace(si, headroom=Decimal("0.1"))),
        "0.5",
        saving(replace(si, headroom=Decimal("0.5"))),
    )
    add(
        "capacity per replica",
        "-30%",
        saving(cm.with_capacity(si, Decimal("0.7"))),
        "+30%",
        saving(cm.with_capacity(si, Decimal("1.3"))),
    )
    add(
        "engineering hours",
        "x0.5",
        saving(replace(si, fixed_usd=si.fixed_usd - eng / 2)),
        "x2",
        saving(replace(si, fixed_usd=si.fixed_usd + eng)),
    )
    add(
        "retry rate",
        "0",
        saving(pc_=with_retry(0.0)),
        f"{max(2 * r, 0.1):.2g}",
        saving(pc_=with_retry(max(2 * r, 0.1))),
    )
    gg = max(2 * float(g), 0.1)
    add("traffic growth", "0%/month", saving(g_=Decimal(0)), f"{gg:.0%}/month", saving(g_=cm.D(gg)))
    base = saving()
    rows.sort(key=lambda x: -abs(x["high"] - x["low"]))
    return {"output": "12-month saving of self-hosting vs the API (USD; > 0 = self-hosting "
                      "cheaper)", "base": base, "factors": rows}  # fmt: skip


def cost_section(data: RunData, summary: dict[str, Any]) -> dict[str, Any]:
    """Section compute: settings from the manifest (+ overrides); an unusable catalog or
    setting becomes ``{"error": ...}`` (the experiment checked them before traffic)."""
    try:
        return run_cost(data)[0]
    except ConfigError as exc:
        return {"error": str(exc), "arms": {}, "notes": [f"No cost figures: {exc}"]}
