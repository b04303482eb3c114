"""Simulator settings: profile, seed, parameters and the scenario timeline, from YAML + CLI.

A config file looks like::

    profile: cloud
    seed: 0
    params: {itl_ms: 12, accuracy: 0.92}
    scenario:
      - at_s: 600            # seconds after the simulator started
        note: provider silently updates its model
        params: {accuracy: 0.84}

Command-line ``--param k=v`` overrides ``params`` (values parse as YAML scalars or lists:
``0.5``, ``true``, ``null``, ``[500, 503]``). Every name and value is checked against the
profile's dataclass in :mod:`harness.sim.params`; problems raise :class:`ParamError` naming
the file and the key.
"""

from __future__ import annotations

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
    validate_updates,
)


@dataclass(frozen=True)
class ScenarioStep:
    """At ``at_s`` seconds after start, apply ``params`` (like ``POST /admin/config``)."""

    at_s: float
    params: dict[str, Any]
    note: str = ""


@dataclass
class SimSettings:
    profile: str
    seed: int = 0
    params: CommonParams = field(default_factory=CommonParams)
    scenario: list[ScenarioStep] = field(default_factory=list)


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


def _scenario(profile: str, raw: Any, where: str) -> list[ScenarioStep]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ParamError(f"{where}: 'scenario' must be a list of {{at_s, params}} entries")
    steps = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or "at_s" not in entry or "params" not in entry:
            raise ParamError(f"{where}: scenario[{i}] must have 'at_s' and 'params', got {entry!r}")
        extra = set(entry) - {"at_s", "params", "note"}
        if extra:
            raise ParamError(f"{where}: scenario[{i}] has unknown keys {sorted(extra)}")
        try:
            at_s = float(entry["at_s"])
        except (TypeError, ValueError):
            raise ParamError(
                f"{where}: scenario[{i}].at_s must be seconds, got {entry['at_s']!r}"
            ) from None
        if at_s < 0:
            raise ParamError(f"{where}: scenario[{i}].at_s must be >= 0")
        try:
            clean = validate_updates(profile, entry["params"], running=True)
            apply_params(default_params(profile), clean, running=True)  # range checks
        except ParamError as exc:
            raise ParamError(f"{where}: scenario[{i}]: {exc}") from None
        steps.append(ScenarioStep(at_s, clean, str(entry.get("note", ""))))
    return sorted(steps, key=lambda s: s.at_s)


def load_settings(
    profile: str | None = None,
    config_file: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    seed: int | None = None,
) -> SimSettings:
    """Merge defaults <- config file <- ``overrides``; ``profile`` / ``seed`` given here win
    over the file's. Raises :class:`ParamError` with the file and key on any problem."""
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
    return SimSettings(prof, s, params, _scenario(prof, data.get("scenario"), where))
