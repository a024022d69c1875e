"""A tiny stand-in for `gen404 serve` (stdlib only, starts in ~50 ms): the /health, /stats,
/gpu, /presets and PUT /preset contract of docs/architecture.md. Used by the fast supervisor tests;
the acceptance tests use the real `gen404 serve --preset smoke`.

    python fake_endpoint.py --port P --preset NAME [--host 127.0.0.2] [--load-s 0.2] [--crash-after S]
                            [--keep-alive]

--keep-alive answers HTTP/1.1 and keeps connections open as uvicorn (`gen404 serve`) does; the
console benchmark uses it so its client cost is the real one. Off by default: the tests expect
a stopped stand-in to refuse the next connection at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PRESETS = ["smoke", "text_mv", "text_mv_fast", "text_mv_ultra_fast"]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--preset", default="smoke")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--load-s", type=float, default=0.2)
    p.add_argument("--crash-after", type=float, default=None)
    p.add_argument("--keep-alive", action="store_true")
    args = p.parse_args()
    started = time.time()
    state = {"preset": args.preset}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1" if args.keep_alive else "HTTP/1.0"

        def log_message(self, fmt: str, *a: object) -> None:
            sys.stdout.write("fake: " + fmt % a + "\n")

        def _json(self, code: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            loading = time.time() - started < args.load_s
            if self.path == "/health":
                self._json(
                    200,
                    {
                        "status": "loading" if loading else "ready",
                        "preset": state["preset"],
                        "device": "cpu",
                        "models": [],
                        "progress": 0.5 if loading else 1.0,
                        "message": "",
                        "pid": os.getpid(),
                        "version": "fake",
                    },
                )
            elif self.path == "/stats":
                self._json(
                    200,
                    {
                        "requests": {"ok": 3, "failed": 1, "rejected": 0},
                        "in_flight": 0,
                        "queue_depth": 0,
                        "queue_limit": 4,
                        "uptime_s": time.time() - started,
                        "recent": [
                            {
                                "finished_at": 1.0,
                                "time_s": 2.0,
                                "splats": 10,
                                "timings": {},
                                "prompt": "a",
                                "preset": state["preset"],
                                "score": None,
                            },
                            {
                                "finished_at": 2.0,
                                "time_s": 4.0,
                                "splats": 10,
                                "timings": {},
                                "prompt": "b",
                                "preset": state["preset"],
                                "score": None,
                            },
                        ],
                        "throughput_per_hour": 1200.0,
                        "gpu_memory": None,
                    },
                )
            elif self.path == "/gpu":  # GET /gpu's shape (engine/service/gpu_telemetry.py), one GPU
                self._json(
                    200,
                    {
                        "error": None,
                        "driver": "fake",
                        "taken_at": time.time(),
                        "gpus": [
                            {
                                "index": 0,
                                "name": f"fake GPU on {args.host}",
                                "util": 97.0,
                                "mem_used": 30 * 2**30,
                                "mem_total": 80 * 2**30,
                                "temp": 70.0,
                                "power": 650.0,
                                "power_limit": 700.0,
                                "sm_clock": 1980,
                                "fan": None,
                                "clock_events": [],
                            }
                        ],
                    },
                )
            elif self.path == "/presets":
                self._json(200, {"current": state["preset"], "available": PRESETS})
            else:
                self._json(404, {"error": "not found", "detail": self.path})

        def do_PUT(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path != "/preset" or body.get("name") not in PRESETS:
                self._json(404, {"error": "unknown preset", "detail": body.get("name")})
                return
            state["preset"] = body["name"]
            self._json(200, {"preset": state["preset"], "reloaded": False})

    server = ThreadingHTTPServer((args.host, args.port), Handler)
    print(f"fake endpoint on {args.host}:{args.port} preset {args.preset}", flush=True)
    if args.crash_after is not None:
        threading.Timer(args.crash_after, lambda: os._exit(3)).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
