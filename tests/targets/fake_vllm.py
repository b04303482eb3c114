"""A stand-in for ``vllm serve MODEL --host H --port P [args]`` in launcher tests.

Extra flags: ``--exit-code N`` (exit during startup), ``--startup-delay S``,
``--ignore-sigterm`` (forces the launcher's SIGKILL path), ``--child`` (spawn a child in the
same process group, which must die with it), ``--api-key`` (printed with the other arguments
at startup, as vLLM does), ``--print-env NAME`` (print that environment variable at startup),
``--echo`` (serve streaming completions whose text echoes the request's Authorization header
and path, query included; every 4th request fails with HTTP 400 quoting them too).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
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
    p.add_argument("--print-env", action="append", default=[])
    p.add_argument("--echo", action="store_true")
    a = p.parse_args()
    print(f"fake vllm starting {a.model}", flush=True)
    print(f"non-default args: {vars(a)}", flush=True)  # as vLLM does, key included
    print(f"argv: {' '.join(sys.argv[1:])}", flush=True)
    for name in a.print_env:
        print(f"env {name}={os.environ.get(name)}", flush=True)
    served = {"n": 0}
    lock = threading.Lock()
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
        protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length

        def _send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/health":
                self._send(200, b"")
            elif self.path == "/v1/models":
                self._send(200, json.dumps({"data": [{"id": a.model}]}).encode())
            elif self.path == "/metrics":
                self._send(200, b"vllm:num_requests_running 0\n", "text/plain")
            else:
                self._send(404, b"")

        def do_POST(self) -> None:  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            req = json.loads(self.rfile.read(n) or b"{}")
            route = self.path.split("?", 1)[0]
            if not a.echo or not route.endswith("/completions"):
                self._send(404, b"")
                return
            with lock:
                served["n"] += 1
                nth = served["n"]
            echo = f"you sent {self.headers.get('Authorization')} to {self.path}"
            if nth % 4 == 0:
                err = {"error": {"message": f"bad request: {echo}", "code": 400}}
                self._send(400, json.dumps(err).encode())
                return
            chat = route.endswith("/chat/completions")

            def chunk(text: str | None, finish: str | None = None) -> dict:
                if chat:
                    choice = {"index": 0, "delta": {"content": text or ""}, "finish_reason": finish}
                else:
                    choice = {"index": 0, "text": text or "", "finish_reason": finish}
                return {"id": f"c{nth}", "model": req.get("model"), "choices": [choice]}

            words = echo.split(" ")
            events = [chunk(w if i == 0 else " " + w) for i, w in enumerate(words)]
            events.append(chunk(None, "stop"))
            usage = {"prompt_tokens": 5, "completion_tokens": len(words)}
            events.append({"id": f"c{nth}", "choices": [], "usage": usage})
            body = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
            self._send(200, body.encode(), "text/event-stream")

        def log_message(self, *args: object) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 128
    srv = ThreadingHTTPServer((a.host, a.port), H)
    print("ready", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
