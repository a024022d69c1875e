"""Supervisor: back-off (fake clock, fake processes), health -> unhealthy -> restart, stop is
not a crash, state file + adoption (pid reuse refused), and a real spawn (own session, log file)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from console.config import EndpointSpec
from console.endpoint_client import EndpointClient, Probe, StatsSummary
from console.mining.clock import ManualClock
from console.supervisor import (
    BackoffPolicy,
    ChildProcess,
    EndpointsChanged,
    Status,
    Supervisor,
    SupervisorEvent,
    SupervisorNotice,
    launch_endpoint,
    proc_stat,
)
from tests.support.console_testkit import fake_command, kill_group
from tests.support.ports import free_port

_pids = itertools.count(50000)


class FakeProcess:
    def __init__(self) -> None:
        self.pid = next(_pids)
        self.start_ticks = 1
        self.started_wall = time.time()
        self.code: int | None = None
        self.signals: list[int] = []

    def poll(self) -> int | None:
        return self.code

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        self.code = -sig


class FakeProber:
    def __init__(self) -> None:
        self.answers: dict[int, dict[str, Any] | None] = {}
        self.presets: list[tuple[int, str]] = []

    async def probe(self, port: int) -> Probe:
        health = self.answers.get(port)
        if health is None:
            return Probe(port=port, error="connection refused")
        return Probe(
            port=port,
            health=health,
            stats={},
            summary=StatsSummary(in_flight=0, queue=0),
        )

    async def set_preset(self, port: int, name: str) -> dict[str, Any]:
        self.presets.append((port, name))
        self.answers[port] = {"status": "ready", "preset": name}
        return {"preset": name, "reloaded": False}


def make(tmp_path: Path, **kw: Any) -> tuple[Supervisor, ManualClock, list[FakeProcess], FakeProber]:
    clock = ManualClock(start=1000.0)
    procs: list[FakeProcess] = []
    prober = FakeProber()

    def launcher(spec: EndpointSpec, log: Path) -> FakeProcess:
        procs.append(FakeProcess())
        return procs[-1]

    sup = Supervisor(
        tmp_path / "logs",
        tmp_path / "state.json",
        prober,
        launcher=launcher,
        clock=clock.now,
        port_check=lambda port: False,
        **kw,
    )
    return sup, clock, procs, prober


def test_backoff_grows_x1_5_to_15s_then_errored_after_10_quick_crashes(tmp_path: Path) -> None:
    sup, clock, procs, _ = make(tmp_path)
    sup.add(EndpointSpec(10006, "smoke"))
    ep = sup.endpoints[10006]
    delays = []
    for _ in range(9):
        clock.advance(1.0)  # crash after 1 s of uptime: a quick crash
        procs[-1].code = 1
        sup.check_processes()
        assert ep.status is Status.RESTARTING
        delays.append(ep.restart_due - clock.now())
        clock.set(ep.restart_due - 0.001)
        sup.check_processes()
        assert ep.status is Status.RESTARTING  # not yet due
        clock.set(ep.restart_due)
        sup.check_processes()
        assert ep.status is Status.STARTING
    assert delays == pytest.approx([0.1 * 1.5**i for i in range(9)])
    assert ep.restarts == 9 and len(procs) == 10
    clock.advance(1.0)
    procs[-1].code = -9
    sup.check_processes()
    assert ep.status is Status.ERRORED and "10 quick crashes" in ep.message
    clock.advance(100)
    sup.check_processes()
    assert len(procs) == 10  # errored: no more restarts


def test_backoff_caps_at_15s() -> None:
    policy = BackoffPolicy()
    assert policy.delay(1) == pytest.approx(0.1)
    assert policy.delay(2) == pytest.approx(0.15)
    assert policy.delay(20) == 15.0


def test_backoff_resets_after_30s_uptime(tmp_path: Path) -> None:
    sup, clock, procs, _ = make(tmp_path)
    sup.add(EndpointSpec(10006, "smoke"))
    ep = sup.endpoints[10006]
    for _ in range(3):
        clock.advance(1)
        procs[-1].code = 1
        sup.check_processes()
        clock.set(ep.restart_due)
        sup.check_processes()
    assert ep.quick_crashes == 3
    clock.advance(31)  # a healthy stretch
    sup.check_processes()
    assert ep.quick_crashes == 0
    procs[-1].code = 1
    sup.check_processes()
    assert ep.restart_due - clock.now() == pytest.approx(0.1)


async def test_health_failures_unhealthy_then_restart(tmp_path: Path) -> None:
    sup, clock, procs, prober = make(tmp_path, unhealthy_after=3, restart_after=5, startup_grace=60)
    sup.add(EndpointSpec(10006, "smoke"))
    ep = sup.endpoints[10006]
    await sup.probe_all()
    assert ep.status is Status.STARTING  # refused during startup grace is normal
    prober.answers[10006] = {"status": "loading", "preset": "smoke", "progress": 0.5}
    await sup.probe_all()
    assert ep.status is Status.LOADING
    prober.answers[10006] = {"status": "ready", "preset": "smoke"}
    await sup.probe_all()
    assert ep.status is Status.READY
    prober.answers[10006] = None  # hangs / stops answering
    for _ in range(2):
        await sup.probe_all()
    assert ep.status is Status.READY
    await sup.probe_all()
    assert ep.status is Status.UNHEALTHY and "3 failed health checks" in ep.message
    await sup.probe_all()
    await sup.probe_all()
    assert procs[0].signals[0] == signal.SIGTERM
    assert len(procs) == 2 and ep.restarts == 1 and ep.status is Status.STARTING
    assert "5 failed health checks" in ep.message


async def test_never_answering_restarts_after_grace(tmp_path: Path) -> None:
    sup, clock, procs, _ = make(tmp_path, restart_after=2, startup_grace=10)
    sup.add(EndpointSpec(10006, "smoke"))
    for _ in range(4):
        await sup.probe_all()
    assert len(procs) == 1
    clock.advance(11)
    await sup.probe_all()
    await sup.probe_all()
    assert len(procs) == 2


async def test_stop_is_not_a_crash_and_preset_survives_restart(tmp_path: Path) -> None:
    sup, clock, procs, prober = make(tmp_path)
    sup.add(EndpointSpec(10006, "smoke"))
    prober.answers[10006] = {"status": "ready", "preset": "smoke"}
    await sup.set_preset(10006, "text_mv_fast")
    assert prober.presets == [(10006, "text_mv_fast")]
    assert sup.views()[0].preset == "text_mv_fast"
    await sup.stop(10006)
    clock.advance(100)
    sup.check_processes()
    assert sup.endpoints[10006].status is Status.STOPPED and len(procs) == 1
    sup.start(10006)  # `r` on a stopped endpoint
    assert sup.endpoints[10006].spec.preset == "text_mv_fast"


def test_next_free_port_skips_supervised_and_busy(tmp_path: Path) -> None:
    sup, *_ = make(tmp_path)
    sup.port_check = lambda port: port == 10007
    sup.add(EndpointSpec(10006, "smoke"))
    ep = sup.spawn_next("smoke")
    assert ep.port == 10008


def test_real_spawn_own_session_log_file_and_adoption(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "logs" / f"gen-{port}.log"
    proc = launch_endpoint(EndpointSpec(port, "smoke"), log, command=fake_command)
    try:
        assert os.getsid(proc.pid) == proc.pid != os.getsid(0)  # own session: no Ctrl-C from our tty
        assert os.getpgid(proc.pid) == proc.pid
        deadline = time.time() + 10
        while time.time() < deadline and "fake endpoint on 127.0.0.1" not in log.read_text():
            time.sleep(0.05)
        assert f"fake endpoint on 127.0.0.1:{port}" in log.read_text()
        assert oct(log.stat().st_mode & 0o777) == "0o600"
        # state file -> a later supervisor adopts it, by pid AND start time
        sup = Supervisor(tmp_path / "logs", tmp_path / "state.json", EndpointClient())
        sup.endpoints[port] = sup.watch(EndpointSpec(port, "smoke"))
        sup.endpoints[port].external = False
        sup.endpoints[port].process = proc
        sup.endpoints[port].status = Status.READY
        sup.save_state()
        saved = json.loads((tmp_path / "state.json").read_text())["endpoints"][0]
        assert saved["pid"] == proc.pid and saved["start_ticks"] == proc_stat(proc.pid)[1]
        later = Supervisor(tmp_path / "logs", tmp_path / "state.json", EndpointClient())
        adopted = later.adopt_from_state()
        assert [a.port for a in adopted] == [port] and adopted[0].process.pid == proc.pid
        assert adopted[0].process.poll() is None
        # a reused pid (different start time) is never adopted nor signalled
        saved["start_ticks"] += 1
        (tmp_path / "state.json").write_text(json.dumps({"endpoints": [saved]}))
        assert (
            Supervisor(tmp_path / "logs", tmp_path / "state.json", EndpointClient()).adopt_from_state() == []
        )
        kill_group(proc.pid)
        deadline = time.time() + 5
        while proc.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        assert adopted[0].process.poll() == -1  # seen as gone through /proc
    finally:
        kill_group(proc.pid)


def test_state_file_is_private(tmp_path: Path) -> None:
    sup, *_ = make(tmp_path)
    sup.add(EndpointSpec(10006, "smoke"))
    assert oct((tmp_path / "state.json").stat().st_mode & 0o777) == "0o600"


def test_child_process_wrapper_reports_exit(tmp_path: Path) -> None:
    popen = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], start_new_session=True)
    child = ChildProcess(popen)
    popen.wait()
    assert child.poll() == 3


async def test_run_loop_restarts_a_crashed_real_process(tmp_path: Path) -> None:
    port = free_port()
    launched: list[ChildProcess] = []

    def launcher(spec: EndpointSpec, log: Path) -> ChildProcess:
        launched.append(launch_endpoint(spec, log, command=lambda s: fake_command(s, "--crash-after", "0.3")))
        return launched[-1]

    client = EndpointClient()
    sup = Supervisor(tmp_path / "logs", tmp_path / "state.json", client, launcher=launcher)
    sup.add(EndpointSpec(port, "smoke"))
    task = asyncio.create_task(sup.run(lambda: 0.2))
    try:
        deadline = time.time() + 15
        while len(launched) < 3 and time.time() < deadline:
            await asyncio.sleep(0.05)
        assert len(launched) >= 3 and sup.endpoints[port].restarts >= 2
        assert (
            "exit code 3" in sup.endpoints[port].message or sup.endpoints[port].status is not Status.STOPPED
        )
    finally:
        await sup.shutdown(stop_endpoints=True)
        await asyncio.wait_for(task, 5)
        await client.aclose()
        for p in launched:
            kill_group(p.pid)
    assert all(p.poll() is not None for p in launched)


def test_serve_command_is_an_argv_bound_to_loopback() -> None:
    from console.supervisor import serve_command

    argv = serve_command(EndpointSpec(10007, "text_mv_fast", "1"))
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    assert argv[-7:] == ["serve", "--port", "10007", "--preset", "text_mv_fast", "--host", "127.0.0.1"]
    assert Path(argv[0]).name in ("gen404", Path(sys.executable).name)


def test_gpu_pinning_sets_cuda_visible_devices(tmp_path: Path) -> None:
    port = free_port()
    script = "import os,sys; print('CVD=' + os.environ.get('CUDA_VISIBLE_DEVICES', '-'), flush=True)"
    log = tmp_path / "gpu.log"
    proc = launch_endpoint(
        EndpointSpec(port, "smoke", "1"), log, command=lambda s: [sys.executable, "-c", script]
    )
    deadline = time.time() + 10
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert "CVD=1" in log.read_text()


async def test_changes_are_published_and_r_gives_an_errored_endpoint_a_fresh_start(tmp_path: Path) -> None:
    """Crashes reach listeners as SupervisorNotice; restart_or_start (the `r` key) revives an
    errored endpoint with its quick-crash count reset, so one crash does not error it again."""
    sup, clock, procs, _ = make(tmp_path, policy=BackoffPolicy(max_quick_crashes=2))
    events: list[SupervisorEvent] = []
    unsubscribe = sup.changes.subscribe(events.append)
    ep = sup.add(EndpointSpec(10006, "smoke"))
    for _ in range(2):
        clock.advance(1.0)
        procs[-1].code = 1
        sup.check_processes()
        if ep.restart_due is not None:
            clock.set(ep.restart_due)
            sup.check_processes()
    assert ep.status is Status.ERRORED and ep.quick_crashes == 2
    notices = [e.text for e in events if isinstance(e, SupervisorNotice)]
    assert any("crashed (exit code 1)" in t for t in notices) and any("errored" in t for t in notices)
    sup.publish_views()
    changed = [e for e in events if isinstance(e, EndpointsChanged)]
    assert changed and changed[-1].views[0].status == "errored"
    await sup.restart_or_start(10006)
    assert ep.status is Status.STARTING and ep.quick_crashes == 0 and len(procs) == 3
    clock.advance(1.0)
    procs[-1].code = 1
    sup.check_processes()
    assert ep.status is Status.RESTARTING  # one quick crash again, not two
    unsubscribe()
    count = len(events)
    sup.publish_views()
    assert len(events) == count
