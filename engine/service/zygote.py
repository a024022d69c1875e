"""The endpoints' fork server: import torch and the engine once, then fork each `gen404 serve`.

Why: a GPU endpoint spends ~10 s of its start importing torch, diffusers and transformers
(H200 box: 3.4 s + 6.8 s, benchmarks/probes/startup.py), before any weight is loaded. The
console starts this process once; a restarted or newly spawned endpoint is then a fork of it,
with those modules already imported. CUDA is never initialised here (a forked CUDA context is
unusable), so each child sets CUDA_VISIBLE_DEVICES and starts CUDA itself. Code changed on disk
after the fork server started reaches endpoints only after the console restarts it.

Protocol, one JSON object per line (console/supervisor/zygote.py is the other side):
  stdout, once:  {"ready": true, "preload_s": 9.8, "modules": [...], "cuda_initialized": false,
                  "fork_safe": true}   (false: a child could not start CUDA; the console then
                                        starts endpoints the plain way)
  stdin:         {"argv": ["serve", "--port", "10006", ...], "env": {"K": "V"}, "log": "/path"}
  stdout:        {"pid": 1234}  or  {"error": "why"}       (one answer per request, in order)
  stdout:        {"exit": 1234, "code": -9}                 (when a child ends; it is reaped here)
End of stdin (the console quit): this process exits; the endpoints live on in their own sessions.
Only `serve` may be run: the arguments go to engine.cli.main, never to a shell.

    python -m engine.service.zygote
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import selectors
import signal
import sys
import time
import traceback
from typing import Any

from engine import startup

# what an endpoint imports before it can load weights (torch-heavy first)
PRELOAD = (
    "torch",
    "diffusers",
    "engine.pipeline",
    "engine.guidance.mvdream",
    "engine.guidance.sds",
    "engine.batch_pipeline",
    "engine.warm_cache",
    "engine.service.endpoint",
    "engine.commands.serve",
    "uvicorn",
)
ALLOWED_COMMANDS = ("serve",)
MAX_LINE = 64 * 1024  # a request is an argument list, never more


def preload(names: tuple[str, ...] = PRELOAD) -> list[str]:
    """Import what can be imported; an endpoint imports anything missing itself."""
    done = []
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:  # a missing optional module must not stop the fork server
            print(f"gen404 zygote: not preloaded: {name} ({type(exc).__name__}: {exc})", file=sys.stderr)
            continue
        done.append(name)
    return done


def cuda_initialized() -> bool:
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


def fork_is_safe() -> bool:
    """Whether a forked child can start CUDA where there is a GPU: torch refuses CUDA in a child
    once the parent touched the CUDA runtime at all (e.g. a device count taken during an import),
    not only after a full CUDA init. Asked of a real child, which starts CUDA as an endpoint would
    (a box without a GPU has nothing to start: safe)."""
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.init()  # raises "Cannot re-initialize CUDA in forked subprocess"
            code = 0
        except BaseException:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def emit(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def parse_request(line: bytes) -> tuple[list[str], dict[str, str], str]:
    """(argv, env, log path) from one request line; ValueError says what is wrong with it."""
    try:
        request = json.loads(line)
    except ValueError as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(request, dict):
        raise ValueError("a request is a JSON object")
    argv, env, log = request.get("argv"), request.get("env") or {}, request.get("log")
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise ValueError("argv must be a non-empty list of strings")
    if argv[0] not in ALLOWED_COMMANDS:
        raise ValueError(f"only {', '.join(ALLOWED_COMMANDS)} may be run, not {argv[0]!r}")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in env.items()
    ):
        raise ValueError("env must map strings to strings")
    if not isinstance(log, str) or not log:
        raise ValueError("log must be a file path")
    return argv, env, log


def _name_process(name: bytes) -> None:
    """The name `ps`/`top` show (/proc/PID/comm); a fork keeps the fork server's command line."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # 15: PR_SET_NAME (Linux)


def _child(argv: list[str], env: dict[str, str], log_fd: int, keep_out: list[int]) -> None:
    """In the forked child: its own session, output to the log, then `gen404 <argv>`; never returns."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the endpoint waits for its own children
        os.setsid()  # Ctrl-C in the console's terminal does not reach it; killpg stops it whole
        _name_process(b"gen404-" + argv[0].encode()[:8])
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        for fd in {null, log_fd, *keep_out} - {0, 1, 2}:
            with contextlib.suppress(OSError):
                os.close(fd)
        os.environ.update(env)
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own descriptors
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = ["gen404", *argv]
        from engine.cli import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def spawn(argv: list[str], env: dict[str, str], log: str, keep_out: list[int]) -> int:
    """Fork one endpoint; its pid. `keep_out`: this process's descriptors the child closes."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        pid = os.fork()
        if pid == 0:
            _child(argv, env, log_fd, keep_out)
    finally:
        os.close(log_fd)
    return pid


def reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        emit({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def serve_requests() -> int:
    """The loop: one thread (a fork copies only the calling thread), select on stdin and on the
    SIGCHLD wake-up pipe."""
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)  # a handler, so the pipe is written
    stdin = sys.stdin.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    pending = b""
    while True:
        for key, _ in selector.select():
            if key.fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                reap()
                continue
            data = os.read(stdin, MAX_LINE)
            if not data:
                return 0  # the console is gone
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                if line.strip():
                    handle(line, [stdin, wake_r, wake_w, selector_fd(selector)])
            if len(pending) > MAX_LINE:
                pending = b""
                emit({"error": f"request longer than {MAX_LINE} bytes"})


def selector_fd(selector: selectors.BaseSelector) -> int:
    fileno = getattr(selector, "fileno", None)
    return int(fileno()) if callable(fileno) else -1


def handle(line: bytes, keep_out: list[int]) -> None:
    try:
        argv, env, log = parse_request(line)
    except ValueError as exc:
        emit({"error": f"bad request: {exc}"})
        return
    if cuda_initialized():  # a child would inherit an unusable CUDA context
        emit({"error": "CUDA was initialised in the fork server; start endpoints directly"})
        return
    try:
        pid = spawn(argv, env, log, [fd for fd in keep_out if fd >= 0])
    except OSError as exc:
        emit({"error": f"cannot start: {exc.strerror or exc}"})
        return
    emit({"pid": pid})


def main() -> int:
    started = time.perf_counter()
    # torch.cuda.is_available() and device_count() (which the model libraries call at import)
    # then ask NVML instead of the CUDA runtime, which would make every fork unable to use CUDA
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    startup.prepare()  # the forks inherit it
    modules = preload()
    emit(
        {
            "ready": True,
            "preload_s": round(time.perf_counter() - started, 3),
            "modules": modules,
            "cuda_initialized": cuda_initialized(),
            "fork_safe": fork_is_safe(),
        }
    )
    return serve_requests()


if __name__ == "__main__":
    sys.exit(main())
