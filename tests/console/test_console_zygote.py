"""Endpoints forked from the preloaded fork server (engine/service/zygote.py and its console side,
console/supervisor/zygote.py): real processes, a real `gen404 serve --preset smoke` endpoint."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from console.config import EndpointSpec
from console.endpoint_client import EndpointClient
from console.supervisor import Supervisor
from console.supervisor.processes import proc_stat
from console.supervisor.zygote import PreloadedLauncher, Zygote, ZygoteError
from engine.service.zygote import parse_request
from tests.support.ports import free_port


def test_the_fork_server_runs_serve_only_from_a_well_formed_request() -> None:
    ok = {"argv": ["serve", "--port", "10006"], "env": {"CUDA_VISIBLE_DEVICES": "1"}, "log": "/tmp/x.log"}
    assert parse_request(json.dumps(ok).encode()) == (ok["argv"], ok["env"], ok["log"])
    bad = [
        (b"serve --port 1", "not JSON"),
        (json.dumps({**ok, "argv": ["generate", "a chair"]}).encode(), "only serve may be run"),
        (json.dumps({**ok, "argv": "serve --port 1"}).encode(), "argv must be"),
        (json.dumps({**ok, "env": {"X": 1}}).encode(), "env must map strings"),
        (json.dumps({**ok, "log": ""}).encode(), "log must be"),
    ]
    for line, why in bad:
        with pytest.raises(ValueError, match=why):
            parse_request(line)


def test_the_launcher_starts_the_plain_way_until_the_fork_server_is_ready(tmp_path: Path) -> None:
    started: list[int] = []

    def plain(spec: EndpointSpec, log_path: Path) -> object:
        started.append(spec.port)
        return object()

    launcher = PreloadedLauncher(Zygote(tmp_path / "zygote.log"), fallback=plain)  # never started
    launcher(EndpointSpec(10006, "smoke"), tmp_path / "gen-10006.log")
    assert started == [10006] and launcher.forked == 0


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rfind(")") + 2 :].split()[1])


async def _until(check, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def _health(port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return {}


@pytest.mark.slow
async def test_a_killed_endpoint_comes_back_forked_from_the_preloaded_parent(
    console_env: Path, reaper: list[int]
) -> None:
    zygote = Zygote(console_env / "zygote.log")
    zygote.start()

    def forbid(spec: EndpointSpec, log_path: Path) -> object:
        raise AssertionError("started the plain way: the fork server should have been used")

    launcher = PreloadedLauncher(zygote, fallback=forbid)
    client = EndpointClient()
    supervisor = Supervisor(console_env / "logs", None, client, launcher=launcher)
    task = asyncio.ensure_future(supervisor.run(lambda: 0.25))
    port = free_port()
    try:
        await _until(lambda: zygote.ready, 180, "the fork server's imports")
        assert zygote.ready_info is not None and zygote.ready_info["cuda_initialized"] is False
        assert zygote.ready_info["fork_safe"] is True
        assert "torch" in zygote.ready_info["modules"]
        supervisor.add(EndpointSpec(port, "smoke"))
        first = supervisor.endpoints[port].process
        assert first is not None
        reaper.append(first.pid)
        assert _parent(first.pid) == zygote._proc.pid  # forked, not exec'd by the console
        await _until(lambda: _health(port).get("status") == "ready", 120, "the forked endpoint")
        assert Path(f"/proc/{first.pid}/comm").read_text().strip() == "gen404-serve"  # what ps shows
        answer = httpx.post(f"http://127.0.0.1:{port}/generate/", data={"prompt": "a chair"}, timeout=120)
        assert answer.status_code == 200 and answer.content.startswith(b"ply\n")
        assert "gen404 (forked) serve --port" in (console_env / "logs" / f"gen-{port}.log").read_text()

        os.kill(first.pid, signal.SIGKILL)
        await _until(lambda: first.poll() is not None, 10, "the exit report")
        assert first.poll() == -signal.SIGKILL  # the fork server reaped it and said how it ended
        await _until(
            lambda: (p := supervisor.endpoints[port].process) is not None and p.pid != first.pid,
            30,
            "the restart",
        )
        second = supervisor.endpoints[port].process
        assert second is not None
        reaper.append(second.pid)
        await _until(lambda: _health(port).get("status") == "ready", 120, "the restarted endpoint")
        assert launcher.forked == 2 and supervisor.endpoints[port].restarts == 1
        assert proc_stat(second.pid) is not None and _parent(second.pid) == zygote._proc.pid
    finally:
        await supervisor.shutdown(stop_endpoints=True)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await client.aclose()
        zygote.close()


@pytest.mark.slow
async def test_the_console_starts_endpoints_the_plain_way_when_the_fork_server_fails(tmp_path: Path) -> None:
    zygote = Zygote(tmp_path / "zygote.log")
    zygote.start()
    plain: list[int] = []

    def fallback(spec: EndpointSpec, log_path: Path) -> object:
        plain.append(spec.port)
        return object()

    launcher = PreloadedLauncher(zygote, fallback=fallback)
    try:
        await _until(lambda: zygote.ready, 180, "the fork server's imports")
        # a request it refuses: an error naming why, and it keeps serving the next one
        with pytest.raises(ZygoteError, match="only serve may be run"):
            zygote.spawn(["generate", "a chair"], {}, tmp_path / "x.log")
        assert zygote.ready
        # a log that cannot be written (a directory): this start goes the plain way, which runs
        # the endpoint with its output discarded and reports it (processes.launch_endpoint)
        (tmp_path / "gen-10006.log").mkdir()
        launcher(EndpointSpec(10006, "smoke"), tmp_path / "gen-10006.log")
        assert plain == [10006] and launcher.forked == 0 and zygote.ready
        # the fork server killed: every later start is a plain one, none waits on it
        assert zygote._proc is not None
        os.kill(zygote._proc.pid, signal.SIGKILL)
        await _until(lambda: not zygote.ready, 10, "the console to see the fork server gone")
        started = time.monotonic()
        launcher(EndpointSpec(10007, "smoke"), tmp_path / "gen-10007.log")
        assert plain == [10006, 10007] and time.monotonic() - started < 1.0
        assert zygote.failure == "the fork server exited"
    finally:
        zygote.close()
