"""Degraded surroundings: NVML failing mid-run, a malformed preset at switch time, and a state
directory the console cannot write (a regular file in the way, a full disk).

Full disk is real: the endpoint's log is a symlink to /dev/full, where every write fails with
ENOSPC. "Read-only" is a state dir whose parent is a regular file (ENOTDIR): chmod would not
stop root, and mounting a tiny tmpfs needs privileges a CI box may not have.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from console.app import Gen404Console
from console.config import EndpointSpec
from console.endpoint_client import EndpointClient, EndpointError
from console.gpu import NvmlSampler
from console.supervisor import Status, Supervisor, SupervisorNotice, launch_endpoint
from console.widgets.banner import Banner
from console.widgets.gpu import GpuPane
from engine.formats.ply import read_ply
from tests.support.console_app import offline_console, quiet_config
from tests.support.fakes import FakeNvml
from tests.support.ports import free_port
from tests.support.reliability_kit import AUTH, MIN_SPLATS, Figures, signal_if_alive, wait_for
from tests.support.server import REPO_ROOT, ServerProcess

# A stand-in endpoint process for the file-system cases: real, cheap, and it writes output.
SLEEPER = "import sys, time; print('endpoint output', flush=True); time.sleep(60)"


def sleeper_command(spec: EndpointSpec) -> list[str]:
    return [sys.executable, "-c", SLEEPER]


def sleeper_launcher(spec: EndpointSpec, log_path: Path) -> object:
    return launch_endpoint(spec, log_path, command=sleeper_command)


class NoProbe:
    """A prober that is never reached in these tests (no probe round is run)."""

    async def probe(self, port: int) -> object:
        raise AssertionError("not probed")

    async def set_preset(self, port: int, name: str) -> dict:
        raise AssertionError("not used")


@pytest.fixture
def blocked_dir(tmp_path: Path) -> Path:
    """A directory path that cannot be created: its parent is a regular file (ENOTDIR)."""
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n")
    return blocker / "state"


@pytest.fixture
def kill_list() -> Iterator[list[tuple[int, int | None]]]:
    procs: list[tuple[int, int | None]] = []
    yield procs
    for pid, ticks in procs:
        signal_if_alive(pid, ticks, signal.SIGKILL)


# ---------------------------------------------------------------- NVML


async def test_nvml_failing_mid_run_degrades_and_recovers(tmp_path: Path, figures: Figures) -> None:
    """The console's real sampling loop (a thread worker) against an NVML that breaks while it
    runs: some fields, then the whole GPU; each shows N/A or a message, and all comes back."""
    nvml = FakeNvml()
    config = quiet_config(endpoints=[], refresh=0.25, log_dir=tmp_path / "logs")
    app = offline_console(config, NvmlSampler(nvml=nvml), tmp_path, gpus=1)
    async with app.run_test(size=(160, 45)) as pilot:
        pane = app.query_one(GpuPane)

        async def shows(text: str, timeout: float = 10.0) -> str:
            deadline = time.monotonic() + timeout
            while text not in pane.text:
                assert time.monotonic() < deadline, f"GPU pane never showed {text!r}: {pane.text!r}"
                await pilot.pause(0.05)
            return pane.text

        healthy = await shows("61°C")
        assert "H100" in healthy and "N/A" not in healthy
        nvml.fail = {"temp", "power", "clock_events"}  # fields fail one by one
        partial = await shows("N/A")
        assert "61°C" not in partial and "H100" in partial and "1980" in partial
        nvml.lost = True  # the GPU falls off the bus: every call fails
        lost_at = time.monotonic()
        lost = await shows("No GPU monitoring")
        assert "NVML" in lost
        nvml.lost = False
        nvml.fail = set()
        await shows("61°C")
        recovered_s = time.monotonic() - lost_at
        calls = nvml.calls
        await pilot.pause(0.6)
        assert nvml.calls > calls  # still sampling
        workers = [w for w in app.workers if w.group == "gpu"]
        assert workers and all(w.is_running for w in workers)
    figures.record("nvml.lost_then_recovered_s", recovered_s)


# ---------------------------------------------------------------- presets


def test_malformed_preset_at_switch_time_is_refused_and_the_old_one_kept(
    endpoint: ServerProcess, presets_dir: Path
) -> None:
    """alt.yaml was valid when the endpoint started; it is broken when someone switches to it."""
    alt = presets_dir / "alt.yaml"
    good = alt.read_text()
    cases = {
        "yaml": "extends: tiny\niters: [1, 2\n",  # not YAML
        "value": "extends: tiny\nbatch_size: 3\n",  # YAML, but not a valid preset
        "type": "extends: tiny\niters: many\n",
    }
    try:
        for name, text in cases.items():
            alt.write_text(text)
            r = httpx.put(endpoint.url("/preset"), json={"name": "alt"}, headers=AUTH, timeout=30)
            assert r.status_code == 422, (name, r.text)
            body = r.json()
            assert body["error"] == "preset 'alt' is invalid; keeping 'tiny'", body
            assert "alt.yaml" in body["detail"], body  # names the file to fix
            # the console's client turns it into one readable line
            with pytest.raises(EndpointError, match=r"preset 'alt' refused \(422: .*keeping 'tiny'"):
                _console_set_preset(endpoint.port, "alt")
        assert httpx.get(endpoint.url("/presets"), headers=AUTH).json()["current"] == "tiny"
        assert endpoint.health()["status"] == "ready"
        r = httpx.post(endpoint.url("/generate/"), data={"prompt": "a small boat"}, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.headers["X-Preset"] == "tiny"
        assert len(read_ply(r.content)) >= MIN_SPLATS
        alt.write_text(good)  # fixed: the same switch now works
        r = httpx.put(endpoint.url("/preset"), json={"name": "alt"}, headers=AUTH, timeout=30)
        assert r.status_code == 200 and r.json()["reloaded"] is False
    finally:
        alt.write_text(good)
        httpx.put(endpoint.url("/preset"), json={"name": "tiny"}, headers=AUTH, timeout=30)
    assert httpx.get(endpoint.url("/presets"), headers=AUTH).json()["current"] == "tiny"


def _console_set_preset(port: int, name: str) -> dict:
    import asyncio

    async def go() -> dict:
        client = EndpointClient()
        try:
            # the console sends no key; this endpoint wants one: add it the way a proxy would
            client._client.headers.update(AUTH)
            return await client.set_preset(port, name)
        finally:
            await client.aclose()

    return asyncio.run(go())


# ---------------------------------------------------------------- state directory


def test_unwritable_state_file_is_reported_and_supervision_goes_on(
    blocked_dir: Path, tmp_path: Path, kill_list: list
) -> None:
    """ENOTDIR on the state file: the endpoint still starts, crashes are still handled."""
    sup = Supervisor(tmp_path / "logs", blocked_dir / "endpoints.json", NoProbe(), launcher=sleeper_launcher)
    events: list[str] = []

    def record(event: object) -> None:
        if isinstance(event, SupervisorNotice):
            events.append(event.text)

    sup.changes.subscribe(record)
    ep = sup.add(EndpointSpec(free_port(), "tiny"))
    assert ep.process is not None and ep.status is Status.STARTING
    kill_list.append((ep.process.pid, ep.process.start_ticks))
    assert "not a directory" in sup.problems["state"].lower()
    assert "will not be adopted" in sup.problems["state"]
    assert any("cannot write" in e for e in events)
    os.kill(ep.process.pid, signal.SIGKILL)  # the crash path writes the state file too
    wait_for(lambda: sup.check_processes(), 5, what="the crash to be noticed")
    assert ep.status is Status.RESTARTING and "signal 9" in ep.message


def test_state_file_on_a_full_disk_is_reported_then_cleared(
    tmp_path: Path, kill_list: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ENOSPC in-process (os.open raising), then the disk has room again: the problem clears."""
    state = tmp_path / "state" / "endpoints.json"
    sup = Supervisor(tmp_path / "logs", state, NoProbe(), launcher=sleeper_launcher)
    real_open = os.open

    def full_disk(path: object, flags: int, mode: int = 0o777, **kw: object) -> int:
        if str(path).endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, mode, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", full_disk)
    ep = sup.add(EndpointSpec(free_port(), "tiny"))
    assert ep.process is not None
    kill_list.append((ep.process.pid, ep.process.start_ticks))
    assert "No space left on device" in sup.problems["state"]
    monkeypatch.setattr(os, "open", real_open)
    sup.save_state()
    assert "state" not in sup.problems
    assert json.loads(state.read_text())["endpoints"][0]["pid"] == ep.process.pid


def test_endpoint_log_on_a_full_disk_runs_the_endpoint_anyway(tmp_path: Path, kill_list: list) -> None:
    """A real /dev/full log (every write: ENOSPC): the endpoint starts with its output discarded
    and the supervisor says so. Before the fix the launch failed and the endpoint never ran."""
    logs = tmp_path / "logs"
    logs.mkdir()
    port = free_port()
    (logs / f"gen-{port}.log").symlink_to("/dev/full")
    sup = Supervisor(logs, tmp_path / "state.json", NoProbe(), launcher=sleeper_launcher)
    ep = sup.add(EndpointSpec(port, "tiny"))
    assert ep.process is not None and ep.status is Status.STARTING
    kill_list.append((ep.process.pid, ep.process.start_ticks))
    time.sleep(0.3)
    assert ep.process.poll() is None  # its own print() went to /dev/null, not into ENOSPC
    problem = sup.problems[f"log {port}"]
    assert "No space left on device" in problem and "output discarded" in problem


def test_console_once_with_an_unusable_state_dir_runs(blocked_dir: Path, tmp_path: Path) -> None:
    """Real subprocess: `gen404-console --once --json` with GEN404_STATE_DIR under a regular file.
    Before the fix it died in startup with a NotADirectoryError traceback."""
    env = {**os.environ, "GEN404_STATE_DIR": str(blocked_dir), "GEN404_CONFIG_DIR": str(tmp_path / "c")}
    cmd = [sys.executable, "-c", "import sys; from console.app import main; sys.exit(main())"]
    port = free_port()  # nothing listens: the snapshot reports it down (exit 1), it does not crash
    proc = subprocess.run(
        [*cmd, "--once", "--json", "--port", str(port)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    data = json.loads(proc.stdout)
    assert [e["port"] for e in data["endpoints"]] == [port] and data["endpoints"][0]["status"] == "down"
    assert proc.returncode == 1


async def test_console_with_an_unusable_state_dir_starts_endpoints_and_says_so(
    blocked_dir: Path, kill_list: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Textual console itself: it starts, spawns its endpoint (output discarded), and the
    banner names both files it cannot write."""
    monkeypatch.setenv("GEN404_STATE_DIR", str(blocked_dir))
    port = free_port()
    app = Gen404Console(
        quiet_config(endpoints=[EndpointSpec(port, "tiny")], refresh=0.25),
        sampler=NvmlSampler(nvml=FakeNvml()),
        launcher=sleeper_launcher,
        gpu_count=lambda: (0, None),
        have_weights=lambda: False,
    )
    async with app.run_test(size=(160, 45)) as pilot:
        deadline = time.monotonic() + 15
        while len(app.supervisor.problems) < 2 or app.query_one(Banner).messages == []:
            assert time.monotonic() < deadline, app.supervisor.problems
            await pilot.pause(0.05)
        ep = app.supervisor.endpoints[port]
        assert ep.process is not None
        kill_list.append((ep.process.pid, ep.process.start_ticks))
        assert ep.running
        await pilot.pause(0.3)
        banner = "\n".join(app.query_one(Banner).messages)
        assert "output discarded" in banner and "will not be adopted" in banner
        assert str(blocked_dir) in banner
        await app.supervisor.shutdown(stop_endpoints=True)
        assert not ep.running
