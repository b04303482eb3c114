"""Command line: ``harness sim --profile vllm|cloud --port N`` (also ``python -m harness.sim``).

Prints exactly one line to stdout once listening, ``harness-sim listening on
http://HOST:PORT`` (flushed), and logs to stderr. SIGTERM/SIGINT stop it cleanly. With
``--exit-with-parent`` it also exits when the process that started it dies (used by
:class:`harness.sim.process.SimProcess` so that no simulator outlives a killed test run).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from .params import PROFILES, ParamError
from .settings import load_settings, parse_param_arg

log = logging.getLogger("harness.sim")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="harness sim",
        description="OpenAI-compatible LLM simulator (vLLM engine model or hosted-API model).",
    )
    ap.add_argument(
        "--profile",
        choices=PROFILES,
        default=None,
        help="engine model (default: the config file's, else vllm)",
    )
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 binds an ephemeral port")
    ap.add_argument("--config", default=None, help="YAML: profile, seed, params, scenario")
    ap.add_argument("--seed", type=int, default=None, help="content and latency seed (default 0)")
    ap.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a parameter (repeatable), e.g. --param itl_ms=5",
    )
    ap.add_argument(
        "--clock-origin-ns",
        type=int,
        default=None,
        help="experiment clock origin (UTC ns) for the scenario timeline; default: seconds "
        "since start until POST /admin/clock sets one",
    )
    ap.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="experiment-clock seconds per wall second (with --clock-origin-ns)",
    )
    ap.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    ap.add_argument("--exit-with-parent", action="store_true", help=argparse.SUPPRESS)
    return ap


async def _serve(settings, host: str, port: int, watch_parent: bool) -> None:
    from .server import SimServer

    srv = SimServer(settings)
    bound_host, bound_port = await srv.start(host, port)
    sys.stdout.write(f"harness-sim listening on http://{bound_host}:{bound_port}\n")
    sys.stdout.flush()
    log.info("profile=%s seed=%d model=%s", settings.profile, settings.seed, settings.params.model)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if watch_parent:
        parent = os.getppid()

        def check_parent() -> None:
            if os.getppid() != parent:
                log.warning("parent process gone; exiting")
                stop.set()
            else:
                loop.call_later(1.0, check_parent)

        loop.call_later(1.0, check_parent)
    await stop.wait()
    await srv.close()


def main(argv: list[str] | None = None) -> int:
    """Run the simulator until SIGTERM/SIGINT; 2 on a configuration error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        overrides = dict(parse_param_arg(a) for a in args.param)
        settings = load_settings(
            args.profile,
            args.config,
            overrides,
            args.seed,
            clock_origin_ns=args.clock_origin_ns,
            time_scale=args.time_scale,
        )
    except ParamError as exc:
        print(f"harness sim: error: {exc}", file=sys.stderr)
        return 2
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is a dependency where it installs
        runner = asyncio.run
    try:
        runner(_serve(settings, args.host, args.port, args.exit_with_parent))
    except ParamError as exc:  # e.g. a malformed eval file, found when the server starts
        print(f"harness sim: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(
            f"harness sim: error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr
        )
        return 1
    return 0
