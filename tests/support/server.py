"""Start real server subprocesses for tests (gen404 serve, gen404 validator, ...).

Reusable by any test module:

    with running_server(["serve", "--preset", "smoke"], env=...) as server:
        httpx.get(server.url("/health"))

The process gets a free loopback port (`--port` is appended), its output goes to a file
(a full pipe would stall it), and it is always stopped in `finally`: SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


def gen404_cmd(*args: str) -> list[str]:
    """`gen404 ARGS` run with this interpreter (no reliance on PATH or the entry point).

    Not `-m engine.cli`: that runs the CLI as __main__, a second copy of the module whose
    CliError the subcommands' imports would not match."""
    return [sys.executable, "-c", "import sys; from engine.cli import main; sys.exit(main())", *args]


@dataclass
class ServerProcess:
    proc: subprocess.Popen
    port: int
    log_path: Path
    headers: dict[str, str]
    probe: str = "/health"  # the path that answers once the server is up
    host: str = "127.0.0.1"  # any loopback address (127.0.0.2 stands for a second box)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return self.base_url + path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self, timeout: float = 2.0) -> Any:
        return httpx.get(self.url(self.probe), headers=self.headers, timeout=timeout).json()

    def stats(self, timeout: float = 5.0) -> Any:
        return httpx.get(self.url("/stats"), headers=self.headers, timeout=timeout).json()

    def wait_health(self, accept: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        """Poll /health until `accept(health)`; fail with the server's output otherwise."""
        return self._wait("/health", self.health, accept, timeout)

    def wait_stats(self, accept: Callable[[dict[str, Any]], bool], timeout: float = 60.0) -> dict[str, Any]:
        """Poll /stats until `accept(stats)`; fail with the server's output otherwise."""
        return self._wait("/stats", self.stats, accept, timeout)

    def _wait(
        self, path: str, read: Callable[[], Any], accept: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.output()}")
            try:
                last = read()
                if accept(last):
                    return last
            except httpx.HTTPError as exc:
                last = exc
            time.sleep(0.02)
        raise AssertionError(f"{path} never satisfied the condition; last: {last!r}\n{self.output()}")

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM, wait, SIGKILL if needed; returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return int(self.proc.returncode)


@contextlib.contextmanager
def running_server(
    args: list[str],
    env: Mapping[str, str] | None = None,
    ready: Callable[[dict[str, Any]], bool] | None = lambda h: h.get("status") == "ready",
    timeout: float = 90.0,
    headers: Mapping[str, str] | None = None,
    cmd: Callable[..., list[str]] = gen404_cmd,
    probe: str = "/health",
    host: str = "127.0.0.1",
) -> Iterator[ServerProcess]:
    """Run `gen404 ARGS --port P` until the block ends; waits for /health (and `ready`).

    Another loopback `host` (127.0.0.2: a second box in the tests) adds `--host HOST`."""
    port = free_port()
    bind = ["--host", host] if host != "127.0.0.1" else []
    fd, log_name = tempfile.mkstemp(prefix="gen404-server-", suffix=".log")
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with os.fdopen(fd, "wb") as log:
        proc = subprocess.Popen(
            cmd(*args, "--port", str(port), *bind),
            cwd=REPO_ROOT,
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = ServerProcess(proc, port, Path(log_name), dict(headers or {}), probe, host)
    accept = ready or (lambda h: True)

    def started(health: dict[str, Any]) -> bool:
        if accept(health):
            return True
        if isinstance(health, dict) and health.get("status") == "error":  # stays failed: say so now
            raise AssertionError(f"the start failed: {health.get('message')}\n{server.output()}")
        return False

    try:
        server.wait_health(started, timeout)
        yield server
    finally:
        server.stop()
        with contextlib.suppress(OSError):
            os.unlink(log_name)
