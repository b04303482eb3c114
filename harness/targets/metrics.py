"""Scrape a vLLM (or simulator) server's Prometheus ``/metrics`` into long-format rows.

Rows follow ``schema.METRICS_SCHEMA``: ``run_id, arm, t (UTC ns), name, labels, value`` with
labels as sorted ``k=v,k=v``. Kept: every ``vllm:*`` sample (gauges, counters, histogram and
summary ``_sum``/``_count``); dropped: histogram ``_bucket`` series and ``_created``
timestamps. The parser is a small implementation of the Prometheus text exposition format
(0.0.4): comments, escaped label values, optional timestamps, ``NaN``/``+Inf``.

:class:`MetricsScraper` runs in a ``threading.Thread`` with ``urllib``: a real thread without
monkey-patching, a greenlet with it; either way it never blocks the load.
"""

from __future__ import annotations

import logging
import threading
import urllib.request
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from harness.config import TargetConfig
from harness.targets import clock

log = logging.getLogger(__name__)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n"}


def _parse_labels(s: str) -> list[tuple[str, str]]:
    """Parse ``a="x",b="y\\"z"`` (the text between braces)."""
    out = []
    i, n = 0, len(s)
    while i < n:
        while i < n and s[i] in " ,":
            i += 1
        if i >= n:
            break
        eq = s.index("=", i)
        key = s[i:eq].strip()
        i = eq + 1
        while s[i] == " ":
            i += 1
        if s[i] != '"':
            raise ValueError(f"label {key}: expected a quoted value")
        i += 1
        val = []
        while s[i] != '"':
            if s[i] == "\\":
                val.append(_ESCAPES.get(s[i + 1], s[i + 1]))
                i += 2
            else:
                val.append(s[i])
                i += 1
        out.append((key, "".join(val)))
        i += 1
    return out


def parse_prometheus(
    text: str, prefixes: tuple[str, ...] = ("vllm:",)
) -> list[tuple[str, str, float]]:
    """``(name, labels "k=v,..." sorted, value)`` for each kept sample (see module docstring).

    ``prefixes=()`` keeps every metric. Malformed lines are skipped.
    """
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] == "#":
            continue
        if prefixes and not line.startswith(prefixes):
            continue
        try:
            brace = line.find("{")
            space = line.find(" ")
            if brace != -1 and (space == -1 or brace < space):
                end = line.rindex("}")
                name = line[:brace]
                labels = _parse_labels(line[brace + 1 : end])
                rest = line[end + 1 :].split()
            else:
                name, *rest = line.split()
                labels = []
            if name.endswith(("_bucket", "_created")):
                continue
            value = float(rest[0])
        except (ValueError, IndexError):
            continue
        label_str = ",".join(f"{k}={v}" for k, v in sorted(labels))
        out.append((name, label_str, value))
    return out


def metrics_url(base_url: str) -> str:
    """``http://host:port/v1`` -> ``http://host:port/metrics`` (vLLM serves it at the root)."""
    u = urlsplit(base_url)
    path = u.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((u.scheme, u.netloc, path + "/metrics", "", ""))


class MetricsScraper:
    """Scrapes ``/metrics`` every ``interval_s`` and hands rows to ``on_rows``.

    ``start()`` / ``stop()``; ``scrape_once()`` for a single synchronous scrape. Failures are
    counted (``errors``) and logged once, never raised into the run.
    """

    def __init__(
        self,
        arm: str,
        target: TargetConfig,
        *,
        run_id: str,
        interval_s: float | None = None,
        on_rows: Callable[[list[dict[str, Any]]], Any],
        prefixes: tuple[str, ...] = ("vllm:",),
        timeout_s: float = 5.0,
    ) -> None:
        if not target.base_url:
            raise ValueError(f"arms.{arm}: no base_url to scrape")
        self.arm = arm
        self.run_id = run_id
        self.url = metrics_url(target.base_url)
        self.interval_s = float(interval_s if interval_s is not None else target.metrics_interval_s)
        self.on_rows = on_rows
        self.prefixes = prefixes
        self.timeout_s = timeout_s
        self.scrapes = 0
        self.errors = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scrape_once(self) -> list[dict[str, Any]]:
        """One scrape; returns (and hands to ``on_rows``) the rows."""
        with _OPENER.open(self.url, timeout=self.timeout_s) as resp:
            text = resp.read().decode("utf-8", "replace")
        t = clock.now_ns()
        rows = [
            {"run_id": self.run_id, "arm": self.arm, "t": t, "name": n, "labels": lab, "value": v}
            for n, lab, v in parse_prometheus(text, self.prefixes)
        ]
        self.scrapes += 1
        if rows:
            self.on_rows(rows)
        return rows

    def _loop(self) -> None:
        next_t = clock.perf_ns()
        while not self._stop.is_set():
            try:
                self.scrape_once()
            except Exception as exc:
                self.errors += 1
                if self.errors == 1:
                    log.warning("arm %s: scraping %s failed: %s", self.arm, self.url, exc)
            next_t += int(self.interval_s * 1e9)
            delay = (next_t - clock.perf_ns()) / 1e9
            if delay < 0:  # fell behind: skip missed ticks instead of bursting
                next_t = clock.perf_ns()
                delay = 0.0
            self._stop.wait(delay)

    def start(self) -> MetricsScraper:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._loop, name=f"metrics-{self.arm}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop scraping (after one last scrape, so the end of the run is covered)."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join(timeout_s)
        self._thread = None
        try:
            self.scrape_once()
        except Exception:
            pass

    def __enter__(self) -> MetricsScraper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
