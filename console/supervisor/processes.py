"""Endpoint processes through /proc: probe a pid (alive, start time), spawn `gen404 serve`, adopt.

Each endpoint is `gen404 serve --port P --preset NAME --host 127.0.0.1`, spawned with exec (an
argument list, never a shell) in its own session, so Ctrl-C in the console's terminal does not
reach it; stdout and stderr go to ``<log_dir>/gen-<port>.log``. The process start time from
/proc/<pid>/stat identifies a process, so a reused pid is never mistaken for one of ours.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from console.config import EndpointSpec

LOG_ROTATE_BYTES = 20 * 1024 * 1024


def proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = raw[raw.rfind(")") + 2 :].split()  # fields from 3 (state) on; comm may hold spaces
    try:
        return rest[0], int(rest[19])  # field 22: starttime
    except (IndexError, ValueError):
        return None


def proc_alive(pid: int, start_ticks: int | None) -> bool:
    stat = proc_stat(pid)
    if stat is None or stat[0] in ("Z", "X"):
        return False
    return start_ticks is None or stat[1] == start_ticks


def proc_started_wall(start_ticks: int) -> float | None:
    """Wall-clock start of a process from its start ticks (boot time from /proc/stat)."""
    try:
        for line in Path("/proc/stat").read_text().splitlines():
            if line.startswith("btime "):
                return int(line.split()[1]) + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        return None
    return None


def signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if os.getpgid(pid) == pid:  # our endpoints lead their own session/group
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)


class ChildProcess:
    """An endpoint this console spawned (a subprocess.Popen in its own session)."""

    def __init__(self, popen: subprocess.Popen[bytes], log_error: str | None = None) -> None:
        self._popen = popen
        self.log_error = log_error  # set when its output could not go to the log file
        self.pid = popen.pid
        stat = proc_stat(popen.pid)
        self.start_ticks = stat[1] if stat else None
        self.started_wall = time.time()

    def poll(self) -> int | None:
        return self._popen.poll()

    def signal(self, sig: int) -> None:
        if self._popen.poll() is None:
            signal_group(self.pid, sig)


class AdoptedProcess:
    """An endpoint spawned by an earlier console: watched through /proc (not our child)."""

    def __init__(self, pid: int, start_ticks: int | None) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self.started_wall = (proc_started_wall(start_ticks) if start_ticks else None) or time.time()

    def poll(self) -> int | None:
        return None if proc_alive(self.pid, self.start_ticks) else -1

    def signal(self, sig: int) -> None:
        if proc_alive(self.pid, self.start_ticks):  # never signal a reused pid
            signal_group(self.pid, sig)


def serve_args(spec: EndpointSpec, host: str = "127.0.0.1") -> list[str]:
    """The `gen404` arguments that run one endpoint."""
    return ["serve", "--port", str(spec.port), "--preset", spec.preset, "--host", host]


def serve_command(spec: EndpointSpec, host: str = "127.0.0.1") -> list[str]:
    """`gen404 serve ...` from the console's own environment (the venv's script, else -m)."""
    script = Path(sys.executable).parent / "gen404"
    head = [str(script)] if script.exists() else [sys.executable, "-m", "engine.cli"]
    return [*head, *serve_args(spec, host)]


def endpoint_env_changes(spec: EndpointSpec) -> dict[str, str]:
    """What an endpoint's environment adds to the console's: unbuffered output, its GPU."""
    changes = {"PYTHONUNBUFFERED": "1"}
    if spec.gpu is not None:
        changes["CUDA_VISIBLE_DEVICES"] = spec.gpu
    return changes


def _open_log(path: Path) -> int:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        if path.stat().st_size > LOG_ROTATE_BYTES:
            path.replace(path.with_name(path.name + ".1"))
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _write_header(fd: int, argv: Sequence[str]) -> None:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    os.write(fd, f"\n=== gen404-console {stamp}: {' '.join(argv)}\n".encode())


def write_log_header(path: Path, argv: Sequence[str]) -> None:
    """Rotate the endpoint's log if it grew too big and mark a new start in it (OSError if not)."""
    fd = _open_log(path)
    try:
        _write_header(fd, argv)
    finally:
        os.close(fd)


def launch_endpoint(
    spec: EndpointSpec, log_path: Path, command: Callable[[EndpointSpec], Sequence[str]] = serve_command
) -> ChildProcess:
    argv = list(command(spec))
    env = {**os.environ, **endpoint_env_changes(spec)}
    # A full disk or an unusable state directory must not stop mining: the endpoint then runs
    # with its output discarded, and the supervisor reports why (Supervisor.problems).
    fd: int | None = None
    log_error = None
    try:
        fd = _open_log(log_path)
        _write_header(fd, argv)
    except OSError as exc:
        if fd is not None:
            os.close(fd)
            fd = None
        log_error = f"{spec.name}: cannot write its log {log_path} ({exc.strerror or exc}); output discarded"
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=fd if fd is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C in the console's terminal does not reach it
            close_fds=True,
        )
    finally:
        if fd is not None:
            os.close(fd)
    return ChildProcess(popen, log_error)


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False
