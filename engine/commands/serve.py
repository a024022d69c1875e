"""`gen404 serve`: one generation endpoint process (the HTTP contract in docs/endpoints.md).

Runs uvicorn programmatically so this module owns shutdown: SIGTERM/SIGINT stop accepting,
fail the waiting line with 503, give an in-flight generation `--shutdown-grace` seconds, and
exit 0. The socket is bound here first, so a busy port is a one-line error, not a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, Generator
from typing import Any

from engine.cli import CliError
from engine.scoring.weights import DEFAULT_MODEL

DEFAULT_PORT = 10006  # the subnet's reference generation service
DEFAULT_PRESET = "text_mv_fast"
LOG_FORMAT = "%(asctime)s | %(levelname)s | %(name)s | %(message)s"
WORKER_EXIT_WAIT_S = 2.0
# uvicorn's limit_concurrency counts open connections, idle keep-alive ones included, and past it
# answers EVERY new request with a bare 503 (no Retry-After), even requests on connections it
# already holds: a burst of more connections than the limit was refused wholesale. Admission is
# the queue's job (503 + Retry-After at once); this is only a backstop against a connection flood
# (bodies are capped at 64 KiB, so this many in flight stay under ~100 MB).
CONNECTION_LIMIT = 1024


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", help="run a generation endpoint (POST /generate/) for the miner")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default {DEFAULT_PORT})")
    p.add_argument(
        "--preset", default=DEFAULT_PRESET, help=f"preset to load at start (default {DEFAULT_PRESET})"
    )
    p.add_argument(
        "--queue", type=int, default=4, help="requests that may wait behind the running one (default 4)"
    )
    p.add_argument(
        "--device", choices=("auto", "cpu", "cuda"), default="auto", help="torch device (default auto)"
    )
    p.add_argument(
        "--random-weights", action="store_true", help="full-size models with random weights (benchmarks)"
    )
    p.add_argument(
        "--api-key", help="require Authorization: Bearer KEY (prefer env GEN404_API_KEY: argv is visible)"
    )
    p.add_argument("--insecure", action="store_true", help="allow a non-loopback bind without an API key")
    p.add_argument(
        "--shutdown-grace", type=float, default=10.0, help="seconds an in-flight generation gets on stop"
    )
    p.add_argument(
        "--self-score",
        action="store_true",
        help="score each result after its response as a validator would (gen404 score); in /stats",
    )
    p.add_argument(
        "--score-model",
        default=DEFAULT_MODEL,
        help=f"with --self-score: open_clip model (default {DEFAULT_MODEL})",
    )
    p.add_argument(
        "--score-size", type=int, default=518, help="with --self-score: view size in px (default 518)"
    )
    p.add_argument("--score-views", type=int, default=16, help="with --self-score: views (default 16)")
    p.add_argument(
        "--no-warm-cache",
        action="store_true",
        help="neither load nor save compiled artefacts under the state dir (engine/warm_cache.py)",
    )
    p.add_argument(
        "--wait-for-compile",
        action="store_true",
        help="answer nothing until the compiled state is ready (default: a compiling preset answers"
        " uncompiled, /health 'warming', while torch.compile builds beside it)",
    )
    p.add_argument(
        "--no-compile-helpers",
        action="store_true",
        help="compile a cold start in this process only (default: the UNet and the VAE encoder"
        " compile in two helper processes at once, ~5 GB of GPU memory each while they run, as"
        " measured on an H200 with text_mv_fast)",
    )
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    p.set_defaults(func=run)


def build_scorer(args: argparse.Namespace) -> Any:
    """Self-scoring hook (`--self-score`): a callable `scorer(prompt, splats) -> float` (the
    validator's final score, engine.scoring.scorer) or None. It runs on its own thread after each
    response and its score appears in /stats recent[].score (see EndpointConfig.scorer). Models
    load now, so missing weights stop the start with one line."""
    if not getattr(args, "self_score", False):
        return None
    from engine.scoring.scorer import load_scorer, self_score_hook
    from engine.scoring.weights import WeightsMissing

    try:
        scorer = load_scorer(
            model=args.score_model,
            size=args.score_size,
            views=args.score_views,
            device=args.device,
            random_weights=args.random_weights,
        )
    except (WeightsMissing, ValueError) as exc:
        raise CliError(str(exc)) from None
    return self_score_hook(scorer)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on accepted sockets only when the
    # listening socket says TCP; without it Nagle + delayed ACK add 40 ms to every keep-alive
    # response whose headers and body go out in separate writes.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise CliError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _log_bytecode_cache() -> None:
    """Say where the libraries' bytecode comes from when gen404 keeps it (a box where Python
    would compile them at every start); silent on a box where Python caches it itself."""
    from engine import bytecode_cache

    found = bytecode_cache.state()
    if found == bytecode_cache.ACTIVE:
        logging.getLogger("gen404.serve").info("bytecode cache: reading %s", bytecode_cache.tree())
    elif found == bytecode_cache.EMPTY:
        logging.getLogger("gen404.serve").info(
            "bytecode cache: this box compiles torch's Python at every start; filled for the next start once ready"
        )


def run(args: argparse.Namespace) -> int:  # returns only on errors before serving
    from engine.presets import PresetError, load_preset
    from engine.service.runtime import fault_spec_from_env
    from engine.service.security import BindRefused, check_bind, resolve_api_key

    if args.queue < 0:
        raise CliError("--queue must be >= 0")
    api_key = resolve_api_key(args.api_key)
    try:
        check_bind(args.host, api_key, args.insecure)
    except BindRefused as exc:
        raise CliError(str(exc)) from None
    try:
        load_preset(args.preset)  # unknown or malformed: a usage error before anything starts
        faults = fault_spec_from_env()
    except (PresetError, ValueError) as exc:
        raise CliError(str(exc)) from None

    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)
    faulthandler.enable()  # a crash in native code (CUDA, a compiled package) leaves its Python stack in the log
    _log_bytecode_cache()
    sock = _bind(args.host, args.port)

    import uvicorn

    from engine.service.endpoint import EndpointConfig, create_app

    config = EndpointConfig(
        preset=args.preset,
        device=args.device,
        random_weights=args.random_weights,
        queue=args.queue,
        api_key=api_key,
        faults=faults,
        shutdown_grace_s=args.shutdown_grace,
        scorer=build_scorer(args),
        warm_cache=not args.no_warm_cache,
        serve_early=not args.wait_for_compile,
        compile_helpers=not args.no_compile_helpers,
    )
    app = create_app(config)
    uv_config = uvicorn.Config(
        app,
        log_config=None,  # keep our logging setup
        log_level=args.log_level,
        access_log=args.log_level == "debug",  # the console polls /health every second
        timeout_graceful_shutdown=int(args.shutdown_grace) + 5,
        limit_concurrency=CONNECTION_LIMIT,
    )
    server = _make_server(uv_config, app.state.endpoint.begin_shutdown)
    port = sock.getsockname()[1]
    print(
        f"gen404 serve: http://{args.host}:{port} preset {args.preset}, queue {args.queue}"
        + (", API key required" if api_key else ""),
        file=sys.stderr,
        flush=True,
    )
    server.run(sockets=[sock])
    endpoint = app.state.endpoint
    endpoint.worker.stop()
    if not endpoint.worker.join(timeout=WORKER_EXIT_WAIT_S):
        logging.getLogger("gen404.serve").warning("generation still running at exit; leaving it")
    # Leave without interpreter teardown: with a generation still inside torch it can abort
    # (SIGABRT), and even when idle, tearing down torch takes seconds on a busy CPU, which a
    # supervisor restarting us would wait for. Everything worth keeping is flushed first.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if server.started else 1)  # not started: uvicorn already logged why


def _make_server(config: Any, on_exit: Callable[[], None]) -> Any:
    """A uvicorn.Server whose signal handling starts our drain and then exits 0.

    (Stock uvicorn re-raises the caught signal after a graceful stop, which turns a clean
    SIGTERM into exit status -15; a supervisor should see 0.)
    """
    import asyncio

    import uvicorn

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            handled = (signal.SIGINT, signal.SIGTERM)
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

        def handle_exit(self, sig: int, frame: Any) -> None:
            first = not self.should_exit
            super().handle_exit(sig, frame)  # a second SIGINT forces the exit
            if first:
                with contextlib.suppress(RuntimeError):  # no loop running yet: nothing to drain
                    asyncio.get_running_loop().call_soon_threadsafe(on_exit)

    return Server(config)
