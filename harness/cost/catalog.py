"""Dated price catalogs: hosted-API token prices and GPU instance prices.

Two API catalog formats are read:

- ours (YAML, ``catalogs/api_prices.yaml``): ``models: {NAME: {provider, input, cached_input,
  cache_write, output, batch_multiplier, as_of, source, usage}}``, prices in USD per 1M tokens;
- LiteLLM's ``model_prices_and_context_window.json`` (JSON): ``input_cost_per_token``,
  ``output_cost_per_token``, ``cache_read_input_token_cost``,
  ``cache_creation_input_token_cost``, ``input_cost_per_token_batches``,
  ``output_cost_per_token_batches``, ``litellm_provider``, in USD per token. That file carries
  no dates: every entry gets the file's modification date as ``as_of`` and its path as
  ``source``.

Prices are :class:`~decimal.Decimal` (``Decimal(str(x))`` of what the file says), so sums of
token counts times prices are exact. ``usage`` says how the provider's usage counts cached
prompt tokens in the recorded usage: ``includes_cached`` (the default: the harness records
OpenAI-compatible usage, whose ``prompt_tokens`` include the cached ones, also for Claude
behind an OpenAI-compatible endpoint) or ``excludes_cached`` (an endpoint that passes
Anthropic's native ``input_tokens``, which leave cache reads out).

A bad entry (missing or negative price, no date, an unknown field) is a
:class:`CatalogError` naming the file and the entry.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import yaml

from harness.config import ConfigError
from harness.cost.settings import PURCHASE_MODES

MILLION = Decimal(1_000_000)
USAGE_SEMANTICS = ("includes_cached", "excludes_cached")
_API_FIELDS = {"provider", "input", "cached_input", "cache_write", "output", "batch_multiplier",
               "as_of", "source", "usage", "notes"}  # fmt: skip
_GPU_FIELDS = {"gpu", "gpus", "gpu_memory_gb", "usd_per_hour", "as_of", "source", "notes"}


class CatalogError(ConfigError):
    """A price catalog cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class ApiPrice:
    """One model's token prices, USD per 1M tokens, and where they come from."""

    model: str
    provider: str
    input: Decimal
    cached_input: Decimal  # cache reads
    cache_write: Decimal
    output: Decimal
    batch_input: Decimal
    batch_output: Decimal
    as_of: dt.date
    source: str
    usage: str  # USAGE_SEMANTICS

    def prices(self, batch: bool = False) -> tuple[Decimal, Decimal, Decimal]:
        """(input, cached input, output) USD per 1M tokens; with ``batch`` the batch prices,
        cached input scaled by the same batch discount as input."""
        if not batch:
            return self.input, self.cached_input, self.output
        scale = self.batch_input / self.input if self.input > 0 else Decimal(1)
        return self.batch_input, self.cached_input * scale, self.batch_output

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "provider": self.provider,
            "usd_per_1m": {
                "input": float(self.input),
                "cached_input": float(self.cached_input),
                "cache_write": float(self.cache_write),
                "output": float(self.output),
                "batch_input": float(self.batch_input),
                "batch_output": float(self.batch_output),
            },
            "as_of": self.as_of.isoformat(),
            "source": self.source,
            "usage": self.usage,
        }


@dataclass(frozen=True)
class GpuInstance:
    """One self-hosting instance type (a replica runs on one), USD per hour by purchase mode."""

    name: str
    gpu: str
    gpus: int
    usd_per_hour: dict[str, Decimal]
    as_of: dt.date
    source: str

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "gpu": self.gpu,
            "gpus": self.gpus,
            "usd_per_hour": {k: float(v) for k, v in self.usd_per_hour.items()},
            "as_of": self.as_of.isoformat(),
            "source": self.source,
        }


def _price(value: Any, where: str, *, required: bool = True) -> Decimal | None:
    if value is None:
        if required:
            raise CatalogError(f"{where}: missing price")
        return None
    if isinstance(value, bool):
        raise CatalogError(f"{where}: expected a number, got {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation:
        raise CatalogError(f"{where}: expected a number, got {value!r}") from None
    if not d.is_finite() or d < 0:
        raise CatalogError(f"{where}: price must be a finite number >= 0, got {value!r}")
    return d


def _date(value: Any, where: str) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except (TypeError, ValueError):
        raise CatalogError(f"{where}: expected a date YYYY-MM-DD, got {value!r}") from None


def _read(path: Path, what: str) -> Any:
    if not path.is_file():
        raise CatalogError(f"{path}: {what} not found")
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CatalogError(
            f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {first}"
        ) from None


def _usage_for(provider: str, given: Any, where: str) -> str:
    if given is None:
        return "includes_cached"
    if given not in USAGE_SEMANTICS:
        raise CatalogError(f"{where}.usage: {given!r} is not one of {', '.join(USAGE_SEMANTICS)}")
    return str(given)


def _entries(path: Path, doc: Any, section: str, known: set[str], what: str
             ) -> Iterator[tuple[str, str, dict[str, Any]]]:  # fmt: skip
    """(name, where, entry) of our YAML format's ``section`` mapping, each entry a mapping
    of ``known`` fields only; ``where`` names the file and the entry for errors."""
    if not isinstance(doc, dict) or not isinstance(doc.get(section), dict):
        raise CatalogError(f"{path}: expected a mapping with a '{section}' mapping")
    for name, e in doc[section].items():
        where = f"{path}: {section}.{name}"
        if not isinstance(e, dict):
            raise CatalogError(f"{where}: expected a mapping{what}")
        unknown = sorted(set(e) - known)
        if unknown:
            raise CatalogError(f"{where}: unknown field(s) {', '.join(unknown)}")
        yield str(name), where, e


def _provenance(e: dict[str, Any], where: str) -> tuple[dt.date, str]:
    """An entry's (as_of, source): both required."""
    if "as_of" not in e or not e.get("source"):
        raise CatalogError(f"{where}: every entry needs as_of (a date) and source")
    return _date(e["as_of"], f"{where}.as_of"), str(e["source"])


def _ours(path: Path, doc: Any) -> dict[str, ApiPrice]:
    out = {}
    for name, where, e in _entries(path, doc, "models", _API_FIELDS, " of prices"):
        inp = _price(e.get("input"), f"{where}.input")
        outp = _price(e.get("output"), f"{where}.output")
        assert inp is not None and outp is not None
        cached = _price(e.get("cached_input"), f"{where}.cached_input", required=False)
        write = _price(e.get("cache_write"), f"{where}.cache_write", required=False)
        mult = _price(e.get("batch_multiplier", 1), f"{where}.batch_multiplier")
        assert mult is not None
        as_of, source = _provenance(e, where)
        provider = str(e.get("provider") or "unknown")
        out[name] = ApiPrice(
            model=name,
            provider=provider,
            input=inp,
            cached_input=cached if cached is not None else inp,
            cache_write=write if write is not None else inp,
            output=outp,
            batch_input=inp * mult,
            batch_output=outp * mult,
            as_of=as_of,
            source=source,
            usage=_usage_for(provider, e.get("usage"), where),
        )
    return out


class ApiCatalog(dict[str, ApiPrice]):
    """Model name -> price; ``skipped`` holds the entries of a LiteLLM file that could not be
    used (no token prices, bad values), with the reason, so a lookup can name it."""

    def __init__(self) -> None:
        super().__init__()
        self.skipped: dict[str, str] = {}


def _litellm(path: Path, doc: Any, out: ApiCatalog) -> None:
    """Entries of LiteLLM's file; one that has no usable token prices (image, audio models, a
    missing or negative price) is skipped and remembered, not fatal: the file holds
    thousands of models and only those an arm uses must be right."""
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: expected a JSON object of models (LiteLLM format)")
    as_of = dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).date()
    for name, e in doc.items():
        if name == "sample_spec" or not isinstance(e, dict):
            continue
        where = f"{path}: {name}"
        try:
            out[str(name)] = _litellm_entry(name, e, where, as_of, path)
            out.skipped.pop(str(name), None)
        except CatalogError as exc:
            out.pop(str(name), None)
            out.skipped[str(name)] = str(exc)


def _litellm_entry(name: str, e: dict[str, Any], where: str, as_of: dt.date, path: Path
                   ) -> ApiPrice:  # fmt: skip
    """One LiteLLM entry (USD per token) as an :class:`ApiPrice` (USD per 1M tokens)."""
    per_tok = {
        k: _price(e.get(k), f"{where}.{k}", required=k in ("input_cost_per_token",
                                                             "output_cost_per_token"))
        for k in ("input_cost_per_token", "output_cost_per_token",
                  "cache_read_input_token_cost", "cache_creation_input_token_cost",
                  "input_cost_per_token_batches", "output_cost_per_token_batches")
    }  # fmt: skip
    inp = per_tok["input_cost_per_token"] * MILLION  # type: ignore[operator]
    outp = per_tok["output_cost_per_token"] * MILLION  # type: ignore[operator]

    def m(key: str, default: Decimal, per_tok: dict[str, Decimal | None] = per_tok) -> Decimal:
        v = per_tok[key]
        return v * MILLION if v is not None else default

    provider = str(e.get("litellm_provider") or "unknown")
    return ApiPrice(
        model=str(name),
        provider=provider,
        input=inp,
        cached_input=m("cache_read_input_token_cost", inp),
        cache_write=m("cache_creation_input_token_cost", inp),
        output=outp,
        batch_input=m("input_cost_per_token_batches", inp),
        batch_output=m("output_cost_per_token_batches", outp),
        as_of=as_of,
        source=f"{path} (LiteLLM format; as_of = file date)",
        usage=_usage_for(provider, None, where),
    )


def load_api_catalog(paths: list[Path]) -> ApiCatalog:
    """Every model of the catalogs in ``paths``, later files overriding earlier ones."""
    out = ApiCatalog()
    for path in paths:
        doc = _read(path, "API price catalog")
        is_ours = isinstance(doc, dict) and isinstance(doc.get("models"), dict)
        if is_ours or path.suffix != ".json":
            for name, price in _ours(path, doc).items():
                out[name] = price
                out.skipped.pop(name, None)
        else:
            _litellm(path, doc, out)
    return out


def load_gpu_catalog(path: Path) -> dict[str, GpuInstance]:
    """The instance types of a GPU catalog (YAML: ``instances: {NAME: {...}}``)."""
    doc = _read(path, "GPU price catalog")
    out = {}
    for name, where, e in _entries(path, doc, "instances", _GPU_FIELDS, ""):
        prices = e.get("usd_per_hour")
        if not isinstance(prices, dict) or "on_demand" not in prices:
            raise CatalogError(f"{where}.usd_per_hour: needs at least on_demand (USD per hour)")
        bad = sorted(set(prices) - set(PURCHASE_MODES))
        if bad:
            raise CatalogError(f"{where}.usd_per_hour: unknown purchase mode(s) {', '.join(bad)}")
        gpus = e.get("gpus")
        if not isinstance(gpus, int) or isinstance(gpus, bool) or gpus < 1:
            raise CatalogError(f"{where}.gpus: expected an integer >= 1, got {gpus!r}")
        as_of, source = _provenance(e, where)
        usd = {k: _price(v, f"{where}.usd_per_hour.{k}") for k, v in prices.items()}
        out[name] = GpuInstance(
            name=name,
            gpu=str(e.get("gpu") or "?"),
            gpus=gpus,
            usd_per_hour=usd,  # type: ignore[arg-type]
            as_of=as_of,
            source=source,
        )
    return out


def lookup_model(catalog: dict[str, ApiPrice], model: str) -> ApiPrice | None:
    """The catalog entry for ``model``; a simulated model ``sim-X`` is priced as ``X``.
    A model whose LiteLLM entry was skipped raises :class:`CatalogError` saying why."""
    if model in catalog:
        return catalog[model]
    skipped = getattr(catalog, "skipped", {})
    if model in skipped:
        raise CatalogError(f"{skipped[model]} (the entry for {model!r} cannot be used)")
    if model.startswith("sim-") and model[4:] in catalog:
        return catalog[model[4:]]
    return None


def stale_entries(dates: dict[str, dt.date], today: dt.date, max_age_days: int) -> list[str]:
    """Names whose ``as_of`` is more than ``max_age_days`` before ``today``."""
    return sorted(k for k, d in dates.items() if (today - d).days > max_age_days)
