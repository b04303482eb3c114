"""Simulator settings: profile, seed, parameters and the scenario timeline, from YAML + CLI.

A config file looks like::

    profile: cloud
    seed: 0
    params: {itl_ms: 12, accuracy: 0.92}
    scenario:
      - at_s: 600            # experiment seconds (see below)
        note: provider silently updates its model
        params: {accuracy: 0.84}
      - at_day: 15           # experiment days (86400 s; fractions allowed)
        params: {system_fingerprint: fp_b}
      - from_day: 0          # a ramp: one step every `every_day` from `from_day` to
        to_day: 30           # `to_day` (both included), each numeric param linearly
        every_day: 1         # interpolated from its first value to its second
        params: {rate_limited_rate: [0.01, 0.08]}

Scenario times are on the simulator's experiment clock: seconds since it started (scale 1)
until ``POST /admin/clock`` (or ``--clock-origin-ns``) sets an origin and a time scale, then
``(now - origin) * time_scale`` (see :class:`harness.sim.server.SimServer`). A ramp may also
be written in seconds (``from_s``, ``to_s``, ``every_s``).

Command-line ``--param k=v`` overrides ``params`` (values parse as YAML scalars or lists:
``0.5``, ``true``, ``null``, ``[500, 503]``). Every name and value is checked against the
profile's dataclass in :mod:`harness.sim.params`; problems raise :class:`ParamError` naming
the file and the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .params import (
    PROFILES,
    CommonParams,
    ParamError,
    apply_params,
    default_params,
    is_numeric_param,
    param_names,
    validate_updates,
)

DAY_S = 86400.0  # one experiment-clock day
MAX_RAMP_STEPS = 10_000


@dataclass(frozen=True)
class ScenarioStep:
    """At ``at_s`` experiment seconds, apply ``params`` (like ``POST /admin/config``)."""

    at_s: float
    params: dict[str, Any]
    note: str = ""


@dataclass
class SimSettings:
    profile: str
    seed: int = 0
    params: CommonParams = field(default_factory=CommonParams)
    scenario: list[ScenarioStep] = field(default_factory=list)
    # The experiment clock set at start (``--clock-origin-ns`` / ``--time-scale``); None: the
    # scenario runs on seconds since start until ``POST /admin/clock`` sets one.
    clock_origin_ns: int | None = None
    time_scale: float = 1.0


def parse_param_arg(arg: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value parses as YAML (``0.5``, ``[1, 2]``)."""
    key, sep, raw = arg.partition("=")
    if not sep or not key.strip():
        raise ParamError(f"--param {arg!r}: expected key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _number(where: str, i: int, key: str, value: Any, what: str) -> float:
    """``scenario[i].key`` as a finite number >= 0, or a ParamError naming it."""
    if isinstance(value, bool):
        value = None
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ParamError(f"{where}: scenario[{i}].{key} must be {what}, got {value!r}") from None
    if not math.isfinite(f) or f < 0:
        raise ParamError(f"{where}: scenario[{i}].{key} must be {what} >= 0, got {value!r}")
    return f


def _checked(profile: str, params: Any, where: str, i: int) -> dict[str, Any]:
    """One step's params, coerced and range-checked as ``POST /admin/config`` would."""
    try:
        clean = validate_updates(profile, params, running=True)
        apply_params(default_params(profile), clean, running=True)  # range checks
    except ParamError as exc:
        raise ParamError(f"{where}: scenario[{i}]: {exc}") from None
    return clean


_STEP_KEYS = {"at_s", "at_day", "params", "note"}
_RAMP_UNITS = {"day": DAY_S, "s": 1.0}


def _ramp(profile: str, entry: dict, where: str, i: int) -> list[ScenarioStep]:
    """A ramp entry expanded into steps: at ``from + k * every`` (k = 0, 1, ...) and at
    ``to``, each numeric param at ``a + (b - a) * (t - from) / (to - from)`` for its
    ``[a, b]`` (ints rounded)."""
    unit = "day" if "from_day" in entry else "s"
    keys = {f"from_{unit}", f"to_{unit}", f"every_{unit}", "params", "note"}
    missing = sorted(keys - {"note"} - set(entry))
    if missing:
        raise ParamError(
            f"{where}: scenario[{i}] is a ramp and needs from_{unit}, to_{unit}, every_{unit} "
            f"and params; missing {missing}"
        )
    extra = set(entry) - keys
    if extra:
        raise ParamError(
            f"{where}: scenario[{i}] (a ramp) has unknown keys {sorted(extra)}; "
            f"expected {sorted(keys)}"
        )
    scale = _RAMP_UNITS[unit]
    what = "days" if unit == "day" else "seconds"
    lo = _number(where, i, f"from_{unit}", entry[f"from_{unit}"], what)
    hi = _number(where, i, f"to_{unit}", entry[f"to_{unit}"], what)
    every = _number(where, i, f"every_{unit}", entry[f"every_{unit}"], what)
    if hi <= lo:
        raise ParamError(f"{where}: scenario[{i}].to_{unit} ({hi:g}) must be after from_{unit}")
    if every <= 0:
        raise ParamError(f"{where}: scenario[{i}].every_{unit} must be > 0")
    n = math.floor((hi - lo) / every + 1e-9)
    if n + 2 > MAX_RAMP_STEPS:
        raise ParamError(
            f"{where}: scenario[{i}] expands to {n + 2} steps (at most {MAX_RAMP_STEPS}); "
            f"raise every_{unit}"
        )
    params = entry["params"]
    if not isinstance(params, dict) or not params:
        raise ParamError(f"{where}: scenario[{i}].params must map parameter -> [start, end]")
    ends: dict[str, tuple[float, float, bool]] = {}
    for name, value in params.items():
        if name not in param_names(profile):
            _checked(profile, {name: value}, where, i)  # raises: unknown parameter, known: ...
        if not is_numeric_param(profile, name):
            raise ParamError(
                f"{where}: scenario[{i}].params.{name}: a ramp interpolates numbers only; "
                f"{name!r} is not a number (set it in an at_s / at_day step)"
            )
        if not isinstance(value, list | tuple) or len(value) != 2:
            raise ParamError(
                f"{where}: scenario[{i}].params.{name}: a ramp takes [start, end], got {value!r}"
            )
        a, b = (_checked(profile, {name: v}, where, i)[name] for v in value)
        if a is None or b is None:
            raise ParamError(
                f"{where}: scenario[{i}].params.{name}: a ramp needs two numbers, got {value!r}"
            )
        ends[name] = (float(a), float(b), isinstance(a, int) and isinstance(b, int))
    times = [lo + k * every for k in range(n + 1)]
    if hi - times[-1] > 1e-9 * max(1.0, hi):
        times.append(hi)
    note = str(entry.get("note", ""))
    steps = []
    for k, t in enumerate(times):
        frac = (t - lo) / (hi - lo)
        values: dict[str, Any] = {}
        for name, (a, b, whole) in ends.items():
            v = a + (b - a) * frac
            values[name] = round(v) if whole else v
        label = f"{note} (ramp {k + 1}/{len(times)})" if note else f"ramp {k + 1}/{len(times)}"
        steps.append(ScenarioStep(t * scale, _checked(profile, values, where, i), label))
    return steps


def _scenario(profile: str, raw: Any, where: str) -> list[ScenarioStep]:
    """The timeline: ``at_s`` / ``at_day`` steps and expanded ramps, sorted by time (steps
    at the same time keep their order in the file)."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ParamError(
            f"{where}: 'scenario' must be a list of {{at_s | at_day, params}} entries or ramps"
        )
    steps = []
    for i, entry in enumerate(raw):
        if isinstance(entry, dict) and ("from_day" in entry or "from_s" in entry):
            steps.extend(_ramp(profile, entry, where, i))
            continue
        if not isinstance(entry, dict) or "params" not in entry:
            raise ParamError(
                f"{where}: scenario[{i}] must have 'at_s' or 'at_day' and 'params' (or be a "
                f"ramp: from_day, to_day, every_day, params), got {entry!r}"
            )
        extra = set(entry) - _STEP_KEYS
        if extra:
            raise ParamError(
                f"{where}: scenario[{i}] has unknown keys {sorted(extra)}; "
                "expected at_s or at_day, params, note"
            )
        if ("at_s" in entry) == ("at_day" in entry):
            raise ParamError(f"{where}: scenario[{i}] must have exactly one of 'at_s', 'at_day'")
        if "at_s" in entry:
            at_s = _number(where, i, "at_s", entry["at_s"], "seconds")
        else:
            at_s = _number(where, i, "at_day", entry["at_day"], "days") * DAY_S
        clean = _checked(profile, entry["params"], where, i)
        steps.append(ScenarioStep(at_s, clean, str(entry.get("note", ""))))
    return sorted(steps, key=lambda s: s.at_s)


def load_settings(
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
    clock_origin_ns: int | None = None,
    time_scale: float = 1.0,
) -> SimSettings:
    """Merge defaults <- config file <- ``overrides``; ``profile`` / ``seed`` given here win
    over the file's; ``clock_origin_ns`` / ``time_scale`` set the experiment clock at start.
    Raises :class:`ParamError` with the file and key on any problem."""
    data: dict[str, Any] = {}
    where = "command line"
    if config_file is not None:
        where = str(config_file)
        try:
            data = yaml.safe_load(Path(config_file).read_text()) or {}
        except OSError as exc:
            raise ParamError(f"cannot read simulator config {where}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ParamError(f"{where}: invalid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise ParamError(f"{where}: expected a mapping with profile/seed/params/scenario")
        extra = set(data) - {"profile", "seed", "params", "scenario"}
        if extra:
            raise ParamError(
                f"{where}: unknown keys {sorted(extra)}; expected profile, seed, params, scenario"
            )
    prof = profile or data.get("profile") or "vllm"
    if prof not in PROFILES:
        raise ParamError(
            f"{where}: unknown profile {prof!r}; expected one of {', '.join(PROFILES)}"
        )
    params = default_params(prof)
    try:
        apply_params(params, data.get("params") or {})
    except ParamError as exc:
        raise ParamError(f"{where}: params: {exc}") from None
    if overrides:
        apply_params(params, overrides)
    s = data.get("seed", 0) if seed is None else seed
    if not isinstance(s, int) or isinstance(s, bool):
        raise ParamError(f"{where}: seed must be an integer, got {s!r}")
    scenario = _scenario(prof, data.get("scenario"), where)
    if clock_origin_ns is not None:
        clock_origin_ns, time_scale = check_clock(clock_origin_ns, time_scale)
    return SimSettings(prof, s, params, scenario, clock_origin_ns, time_scale)


def check_clock(origin_ns: Any, time_scale: Any) -> tuple[int, float]:
    """``(origin_ns, time_scale)`` of an experiment clock, checked: the origin an integer of
    UTC nanoseconds, the scale a finite number > 0; else a ParamError naming the field."""
    if isinstance(origin_ns, bool) or not isinstance(origin_ns, int):
        raise ParamError(f"clock: origin_ns must be an integer (UTC ns), got {origin_ns!r}")
    if isinstance(time_scale, bool) or not isinstance(time_scale, int | float):
        raise ParamError(f"clock: time_scale must be a number, got {time_scale!r}")
    if not math.isfinite(time_scale) or time_scale <= 0:
        raise ParamError(f"clock: time_scale must be a finite number > 0, got {time_scale!r}")
    return origin_ns, float(time_scale)
