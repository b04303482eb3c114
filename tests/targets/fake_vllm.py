"""A stand-in for ``vllm serve MODEL --host H --port P [args]`` in launcher tests.

Extra flags: ``--exit-code N`` (exit during startup), ``--startup-delay S``,
``--ignore-sigterm`` (forces the launcher's SIGKILL path), ``--child`` (spawn a child in the
same process group, which must die with it), ``--api-key`` (printed with the other arguments
at startup, as vLLM does).
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--exit-code", type=int, default=None)
    p.add_argument("--startup-delay", type=float, default=0.0)
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--child", action="store_true")
    p.add_argument("--api-key", default=None)
    a = p.parse_args()
    print(f"fake vllm starting {a.model}", flush=True)
    print(f"non-default args: {vars(a)}", flush=True)  # as vLLM does, key included
    if a.exit_code is not None:
        print("CUDA error: no GPU found (fake)", flush=True)
        sys.exit(a.exit_code)
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, lambda *_: print("ignoring SIGTERM", flush=True))
    if a.child:
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
        print(f"child pid {child.pid}", flush=True)
    time.sleep(a.startup_delay)

    class H(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                body = b""
            elif self.path == "/v1/models":
                body = json.dumps({"data": [{"id": a.model}]}).encode()
            else:
                self.send_response(404)
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 128
    srv = ThreadingHTTPServer((a.host, a.port), H)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
