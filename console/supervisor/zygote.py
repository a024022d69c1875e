"""Endpoints forked from a preloaded parent: the console's side of engine/service/zygote.py.

`PreloadedLauncher` is a Launcher (spec, log path -> process handle) for the Supervisor. It
starts the fork server once, in the background; while that is still importing (~10 s on the H200
box), or if it died or refused, an endpoint starts the plain way (processes.launch_endpoint).
Once it is ready, a restart after a crash, or an endpoint spawned with `n`, skips the imports.

No torch here: the fork server is another process, started by module name.
"""

from __future__ import annotations

import contextlib
import json
import queue
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from console.config import EndpointSpec
from console.supervisor.model import ProcessHandle
from console.supervisor.processes import (
    AdoptedProcess,
    endpoint_env_changes,
    launch_endpoint,
    proc_stat,
    serve_args,
    write_log_header,
)

REPLY_TIMEOUT_S = 5.0  # a fork answers in milliseconds; the supervisor's loop must not hang on it


def zygote_command() -> list[str]:
    return [sys.executable, "-m", "engine.service.zygote"]


class ZygoteError(RuntimeError):
    pass


class ForkedEndpoint(AdoptedProcess):
    """An endpoint forked by the fork server: not our child, so watched through /proc as an
    adopted one is; its exit code comes from the fork server, which reaps it (-1 when that is
    not known)."""

    def __init__(self, pid: int, exits: dict[int, int], server_alive: Callable[[], bool]) -> None:
        stat = proc_stat(pid)
        super().__init__(pid, stat[1] if stat else None)
        self._exits = exits
        self._server_alive = server_alive

    def poll(self) -> int | None:
        if self.pid in self._exits:
            return self._exits[self.pid]
        if super().poll() is None:
            return None
        stat = proc_stat(self.pid)
        if stat is not None and stat[0] == "Z" and stat[1] == self.start_ticks and self._server_alive():
            return None  # dead, not yet reaped: the fork server reports its code in milliseconds
        return self._exits.get(self.pid, -1)


class Zygote:
    """The fork server process and the thread that reads its answers."""

    def __init__(self, log_path: Path, command: Callable[[], Sequence[str]] = zygote_command) -> None:
        self.log_path = log_path
        self._command = command
        self._proc: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()  # one request and its answer at a time
        self.ready_info: dict[str, Any] | None = None
        self.exits: dict[int, int] = {}
        self.failure: str | None = None

    def start(self) -> None:
        """Start it (once); returns at once, the imports run in the background."""
        if self._proc is not None:
            return
        self.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                list(self._command()),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                start_new_session=True,
                close_fds=True,
            )
        assert self._proc.stdout is not None
        threading.Thread(
            target=self._read, args=(self._proc.stdout,), name="gen404-zygote", daemon=True
        ).start()

    def _read(self, stream: IO[bytes]) -> None:
        for raw in stream:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            if not isinstance(message, dict):
                continue
            if message.get("ready"):
                self.ready_info = message
                if message.get("cuda_initialized") or message.get("fork_safe") is False:
                    self.failure = "a forked endpoint could not start CUDA: endpoints start the plain way"
            elif "exit" in message:
                self.exits[int(message["exit"])] = int(message.get("code", -1))
            else:
                self._replies.put(message)
        self.failure = self.failure or "the fork server exited"

    @property
    def ready(self) -> bool:
        proc = self._proc
        return (
            self.ready_info is not None and self.failure is None and proc is not None and proc.poll() is None
        )

    def spawn(self, argv: list[str], env: dict[str, str], log: Path) -> ForkedEndpoint:
        proc = self._proc
        if not self.ready or proc is None or proc.stdin is None:
            raise ZygoteError(self.failure or "the fork server is not ready")
        request = json.dumps({"argv": argv, "env": env, "log": str(log)}) + "\n"
        with self._lock:
            try:
                proc.stdin.write(request.encode())
                proc.stdin.flush()
                reply = self._replies.get(timeout=REPLY_TIMEOUT_S)
            except (OSError, queue.Empty) as exc:
                self.failure = f"the fork server did not answer ({type(exc).__name__})"
                raise ZygoteError(self.failure) from None
        if "pid" not in reply:
            raise ZygoteError(str(reply.get("error", "no pid")))
        return ForkedEndpoint(int(reply["pid"]), self.exits, lambda: proc.poll() is None)

    def close(self) -> None:
        """Let it go: end of its stdin makes it exit (the endpoints it forked run on)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            if proc.stdin is not None:
                proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class PreloadedLauncher:
    """Launcher: fork from the preloaded server when it is ready, else start the plain way."""

    def __init__(
        self, zygote: Zygote, fallback: Callable[[EndpointSpec, Path], ProcessHandle] = launch_endpoint
    ):
        self.zygote = zygote
        self.fallback = fallback
        self.forked = 0  # endpoints started through the fork server (shown in tests and benches)

    def __call__(self, spec: EndpointSpec, log_path: Path) -> ProcessHandle:
        if self.zygote.ready:
            argv = serve_args(spec)
            try:
                write_log_header(log_path, ["gen404 (forked)", *argv])
                process = self.zygote.spawn(argv, endpoint_env_changes(spec), log_path)
            except (OSError, ZygoteError):
                pass  # started the plain way below; the fork server's log says why
            else:
                self.forked += 1
                return process
        return self.fallback(spec, log_path)

    def close(self) -> None:
        self.zygote.close()


def preloaded_launcher(log_dir: Path) -> PreloadedLauncher:
    """The console's launcher: a fork server logging to <log_dir>/zygote.log, started now."""
    zygote = Zygote(log_dir / "zygote.log")
    with contextlib.suppress(OSError):
        zygote.start()
    return PreloadedLauncher(zygote)


__all__ = ["ForkedEndpoint", "PreloadedLauncher", "Zygote", "ZygoteError", "preloaded_launcher"]
