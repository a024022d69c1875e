"""Remote endpoints: two real `gen404 serve --preset smoke` processes on two loopback addresses
stand for two boxes. 127.0.0.1 is this machine (its endpoint watched like any local one);
127.0.0.2 is "box B", with an API key and NVML faked through GEN404_NVML_MODULE, so its GPU
reaches the console only through its endpoint's GET /gpu.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import httpx
import pytest

from console import alerts
from console.config import ConfigError, ConsoleConfig, EndpointSpec, RemoteSpec, load_config, load_file
from console.gpu import NvmlSampler, ProcessUsage
from console.remote import RemoteEndpoints, snapshot_from_json
from console.snapshot import run_once
from console.ui_messages import RemotesUpdated
from console.widgets.endpoints import REMOTE_MARK, EndpointsTable
from console.widgets.gpu import GpuPane
from engine.service.gpu_telemetry import GpuTelemetry
from tests.support.console_app import offline_console, quiet_config
from tests.support.console_testkit import screen_text, wait_until
from tests.support.fakes import FakeNvml
from tests.support.ports import free_port
from tests.support.server import ServerProcess, running_server

from .test_console_app import view

KEY = "box-b-key-7f3a"  # a test key; the assertions check it never reaches the screen
SERVE = ["serve", "--preset", "smoke", "--device", "cpu", "--shutdown-grace", "0.2"]


@pytest.fixture
def box_a(console_env: Path) -> Iterator[ServerProcess]:
    with running_server(SERVE, env={"OMP_NUM_THREADS": "1"}) as server:
        yield server


@pytest.fixture
def box_b(console_env: Path) -> Iterator[ServerProcess]:
    env = {
        "GEN404_API_KEY": KEY,
        "GEN404_NVML_MODULE": "tests.support.fake_pynvml",
        "FAKE_NVML_NAME": "Box B H200",
        "FAKE_NVML_TEMP": "77",
        "OMP_NUM_THREADS": "1",
    }
    auth = {"Authorization": f"Bearer {KEY}"}
    with running_server(SERVE, env=env, headers=auth, host="127.0.0.2") as server:
        yield server


def test_remote_endpoints_from_flags_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEN404_API_KEY", "from-env")
    monkeypatch.setenv("BOX6_KEY", "from-box6-var")
    cfg = load_config(["--endpoint", "http://127.0.0.2:10007", "--endpoint", "10006:smoke"])
    assert [s.port for s in cfg.endpoints] == [10006]  # a URL flag leaves the local list alone
    assert cfg.remotes == [RemoteSpec("http://127.0.0.2:10007", "from-env")]
    assert "from-env" not in repr(cfg.remotes) + repr(cfg)  # keys stay out of repr (and logs)

    path = tmp_path / "console.yaml"
    path.write_text(
        "api_key: from-file\nendpoints:\n  - {port: 10006}\n  - {url: 'http://10.0.0.5:10006/'}\n"
        "  - {url: 'https://box6:10008', api_key_env: BOX6_KEY}\n"
    )
    cfg = load_file(path, ConsoleConfig())
    assert [s.port for s in cfg.endpoints] == [10006]
    assert [(r.url, r.api_key, r.name) for r in cfg.remotes] == [
        ("http://10.0.0.5:10006", "from-file", "10.0.0.5:10006"),
        ("https://box6:10008", "from-box6-var", "box6:10008"),
    ]
    for bad in ("http://u:p@h:1", "http://h", "ftp://h:1", "http://h:1/path"):
        with pytest.raises(ConfigError, match="http://HOST:PORT"):
            load_config(["--endpoint", bad])


def test_gpu_json_becomes_a_snapshot_with_unknown_fields_ignored() -> None:
    snap = snapshot_from_json(
        {"error": None, "driver": "550", "taken_at": 1.0, "gpus": [{"index": 0, "temp": 70.0, "new": 1}]}
    )
    assert snap.driver == "550" and snap.gpus[0].temp == 70.0 and snap.gpus[0].name is None


def test_gpu_route_json_reads_back_as_the_local_sampler_s_snapshot() -> None:
    """GET /gpu (engine/service/gpu_telemetry.py) and the console's own sampler are one sampler:
    the remote's JSON, read back, gives the local readings field by field (no per-process ones)."""
    served = GpuTelemetry(nvml=FakeNvml(count=2, fail={"fan"})).sample()
    assert all("processes" not in g for g in served["gpus"])  # the remote box's pids mean nothing here
    remote = snapshot_from_json(served)
    local = NvmlSampler(nvml=FakeNvml(count=2, fail={"fan"})).sample()
    assert (remote.error, remote.driver) == (local.error, local.driver) == (None, "550.54.15")
    for r, g in zip(remote.gpus, local.gpus, strict=True):
        fields = {k for k in asdict(g) if k not in ("util_history", "mem_history", "processes")}
        assert {k: getattr(r, k) for k in fields} == {k: getattr(g, k) for k in fields}
    assert remote.gpus[0].fan is None and remote.gpus[0].temp == 61.0 and remote.gpus[1].index == 1


def test_a_remote_box_gpu_alert_names_the_box() -> None:
    hot = snapshot_from_json({"gpus": [{"index": 0, "temp": 90.0, "clock_events": []}]})
    cool = snapshot_from_json({"gpus": [{"index": 0, "temp": 60.0, "clock_events": []}]})
    found = alerts.collect(cool, [], remote_gpus=[("10.0.0.5", hot)])
    assert [(a.source, a.kind) for a in found] == [("10.0.0.5 GPU0", "thermal")]


async def test_remote_rows_get_no_local_gpu_share_and_keep_the_gpu_pane(tmp_path: Path) -> None:
    """A remote pid is another box's process: the same number here must not lend it this
    machine's per-process VRAM; and the GPU pane (hidden on a box without GPUs) stays while it
    lists another box's GPUs."""
    config = quiet_config(endpoints=[], log_dir=tmp_path / "logs", refresh=0.5)
    app = offline_console(config, NvmlSampler(FakeNvml(count=0)), tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        await wait_until(pilot, lambda: app.gpu_snapshot is not None)
        assert app.query_one("#body").has_class("-no-gpu")
        remote = view(10006, host="10.0.0.5", pid=4242)
        box = snapshot_from_json({"gpus": [{"index": 0, "name": "far GPU", "temp": 60.0}]})
        app.post_message(RemotesUpdated([remote], [("10.0.0.5", box)]))
        await wait_until(pilot, lambda: app.remote_views == [remote])
        app.process_usage = {4242: ProcessUsage(mem_bytes=20 * 2**30, sm_util=50.0)}
        app.show_endpoints([view(10007, pid=4242)])
        table = app.query_one(EndpointsTable)
        assert table.cell_text(10007, "vram") == "20.0G"
        assert table.cell_text("10.0.0.5:10006", "vram") == "N/A"
        assert REMOTE_MARK in str(table.border_title)
        assert not app.query_one("#body").has_class("-no-gpu")
        assert "far GPU" in app.query_one(GpuPane).text


@pytest.mark.slow
async def test_two_boxes_watched_side_by_side(
    box_a: ServerProcess, box_b: ServerProcess, tmp_path: Path
) -> None:
    remote_key = f"127.0.0.2:{box_b.port}"
    config = quiet_config(
        endpoints=[EndpointSpec(box_a.port, "smoke")],
        remotes=[RemoteSpec(f"http://127.0.0.2:{box_b.port}", KEY)],
        log_dir=tmp_path / "logs",
        refresh=0.25,
        spawn=False,
    )
    # this machine has one (fake) GPU; box B's comes only through its endpoint's GET /gpu
    app = offline_console(config, NvmlSampler(FakeNvml()), tmp_path, gpus=1)
    app.supervise = True  # watch box A's endpoint (spawn=False: nothing is started)
    async with app.run_test(size=(200, 50)) as pilot:
        table = app.query_one(EndpointsTable)
        gpus = app.query_one(GpuPane)
        try:
            await wait_until(
                pilot,
                lambda: (
                    table.cell_text(box_a.port, "status") == "ready"
                    and table.cell_text(remote_key, "status") == "ready"
                ),
                timeout=60,
            )
            assert table.cell_text(remote_key, "name") == f"{remote_key} {REMOTE_MARK}"
            assert table.cell_text(remote_key, "preset") == "smoke"
            assert table.cell_text(remote_key, "done") == "0"  # /stats answered: the key was sent
            assert REMOTE_MARK not in table.cell_text(box_a.port, "name")

            await wait_until(pilot, lambda: "Box B H200" in gpus.text)
            text = gpus.text
            assert text.index("NVIDIA H100") < text.index("box 127.0.0.2") < text.index("Box B H200")
            assert "77°C" in text  # box B's reading, not this machine's 61 °C

            # stop/restart stay on the box that runs it
            table.select_port(remote_key)
            await pilot.pause()
            assert app.selected_view() is not None and app.selected_view().remote
            await pilot.press("x")
            await pilot.press("r")
            await pilot.pause(0.5)
            assert box_b.proc.poll() is None and box_b.health()["status"] == "ready"

            # a preset switch goes through PUT /preset with the key
            await pilot.press("1")
            await wait_until(pilot, lambda: table.cell_text(remote_key, "preset") == "text_mv_ultra_fast")
            assert box_b.health()["preset"] == "text_mv_ultra_fast"
            assert box_a.health()["preset"] == "smoke"  # the other box untouched
            assert KEY not in screen_text(app)
        finally:
            await app.remotes.shutdown()
            await app.supervisor.shutdown(stop_endpoints=False)


@pytest.mark.slow
async def test_a_wrong_key_is_reported_not_shown(box_b: ServerProcess) -> None:
    remotes = RemoteEndpoints([RemoteSpec(f"http://127.0.0.2:{box_b.port}", "wrong-key")])
    try:
        await remotes.poll()
        (view,) = remotes.views()
        assert view.status == "ready"  # /health needs no key
        assert view.done is None  # /stats refused
        ((host, snap),) = remotes.gpus()
        assert host == "127.0.0.2" and not snap.gpus and "401" in (snap.error or "")
        assert "wrong-key" not in (snap.error or "") + view.message
    finally:
        await remotes.shutdown()
    with pytest.raises(httpx.HTTPStatusError):
        httpx.get(box_b.url("/gpu"), headers={"Authorization": "Bearer wrong-key"}).raise_for_status()


@pytest.mark.slow
def test_once_json_lists_remote_endpoints_and_their_gpus(
    box_b: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    dead = free_port()  # nothing listens there: that box is down
    config = ConsoleConfig(
        endpoints=[],
        remotes=[
            RemoteSpec(f"http://127.0.0.2:{box_b.port}", KEY),
            RemoteSpec(f"http://127.0.0.2:{dead}", KEY),
        ],
    )
    code = run_once(config, as_json=True, sampler=NvmlSampler(FakeNvml(init_error=True)))
    out = capsys.readouterr().out
    data = json.loads(out)
    assert code == 1  # one endpoint is down
    by_port = {e["port"]: e for e in data["endpoints"]}
    assert by_port[box_b.port]["remote"] is True and by_port[box_b.port]["status"] == "ready"
    assert by_port[box_b.port]["host"] == "127.0.0.2" and by_port[box_b.port]["done"] == 0
    assert by_port[dead]["status"] == "down" and "not answering" in by_port[dead]["error"]
    (box,) = data["remote_gpus"]
    assert box["host"] == "127.0.0.2" and [g["name"] for g in box["gpus"]] == ["Box B H200"]
    assert KEY not in out

    run_once(config, as_json=False, sampler=NvmlSampler(FakeNvml(init_error=True)))
    text = capsys.readouterr().out
    assert "box 127.0.0.2 GPU0 Box B H200" in text and f"127.0.0.2:{dead}" in text
