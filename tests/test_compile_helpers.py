"""Compile helpers (engine/service/compile_helpers.py): a cold compile split over real processes.

The crux is that a helper's artefacts are the endpoint's: a `gen404 models warm --part` process
compiles one model into inductor's disk caches, and the endpoint's own compile of that model then
hits them (CPU here, inductor's C++ backend, tiny models). The rest is how a start waits for its
helpers, reports them, and what happens to a helper whose endpoint dies.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.service import compile_helpers
from tests.support.reliability_kit import write_presets

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def compiled_tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A compiled tiny preset and private caches, in this process's environment and a child's."""
    presets = tmp_path / "presets"
    presets.mkdir()
    write_presets(presets)  # `tiny`: one step on a few points
    (presets / "tinyc.yaml").write_text("extends: tiny\ncompile: true\ndevice: cpu\n")
    env = {
        "GEN404_PRESETS_DIR": str(presets),
        "GEN404_WARM_CACHE_DIR": str(tmp_path / "warm"),
        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def test_the_endpoint_compile_hits_what_a_helper_compiled(compiled_tiny: dict[str, str]) -> None:
    import torch

    from engine import compile_stats
    from engine.pipeline import Generator
    from engine.presets import load_preset
    from engine.service.switch import warm_up

    argv = compile_helpers.helper_argv("tinyc", "cpu", random_weights=False)("vae")
    done = subprocess.run(
        argv, cwd=REPO, env=os.environ | compiled_tiny, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "tinyc: warm in" in done.stdout and "vae into inductor's caches: compile" in done.stdout
    assert not (Path(compiled_tiny["GEN404_WARM_CACHE_DIR"]) / "tinyc.cpu.warmcache").exists()

    torch._dynamo.reset()
    before = compile_stats.snapshot()
    generator = Generator(load_preset("tinyc"), "cpu")
    generator.compile_parts = ("vae",)  # the UNet's compile would only cost the test time here
    warm_up(generator, lambda fraction, message="": None)
    stats = compile_stats.since(before)
    assert generator.compile_failure is None and stats is not None
    # the VAE encoder (one AOTAutograd entry, a forward and a backward graph): every entry is the
    # helper's; nothing compiled again, the backward included
    assert (stats["aot_autograd_hits"], stats["aot_autograd_misses"]) == (1, 0), stats
    assert (stats["fx_graph_hits"], stats["fx_graph_misses"]) == (2, 0), stats
    assert stats["inductor_codegen_s"] == 0, stats  # code is generated only on a miss


def test_an_aot_helper_builds_its_part_s_package_which_the_endpoint_loads(
    compiled_tiny: dict[str, str], tmp_path: Path
) -> None:
    from torch._dynamo.utils import counters

    from engine.pipeline import Generator
    from engine.presets import load_preset
    from engine.service.switch import warm_up

    presets = Path(compiled_tiny["GEN404_PRESETS_DIR"])
    (presets / "tinya.yaml").write_text("extends: tinyc\ncompile_backend: aot\n")
    argv = compile_helpers.helper_argv("tinya", "cpu", random_weights=False)("vae")
    done = subprocess.run(
        argv, cwd=REPO, env=os.environ | compiled_tiny, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "vae into its AOT package (vae-encoder built)" in done.stdout, done.stdout[-2000:]
    aot_dir = Path(compiled_tiny["GEN404_WARM_CACHE_DIR"]) / "aot"
    assert [p.name.split("-")[0] for p in aot_dir.glob("*.aotc")] == ["vae"]
    assert not list(aot_dir.glob("preset-*"))  # one part is not the preset's set: not recorded

    traced = dict(counters["stats"])
    generator = Generator(load_preset("tinya"), "cpu")
    generator.compile_parts = ("vae",)
    warm_up(generator, lambda fraction, message="": None)
    assert generator.compile_failure is None
    assert [(r["name"], r["state"]) for r in generator.guidance.aot_reports()] == [("vae-encoder", "loaded")]
    assert dict(counters["stats"]) == traced  # loaded: nothing traced in this process


def _roomy_gpu(device: Any) -> tuple[int, str]:
    return 64 << 30, "GPU-test"  # 64 GiB free


def _record_statuses(host: Any) -> list[str]:
    seen: list[str] = []
    real_set = host._set

    def record(status: str, *args: Any, **kwargs: Any) -> None:
        if not seen or seen[-1] != status:
            seen.append(status)
        real_set(status, *args, **kwargs)

    host._set = record
    return seen


def test_region_helpers_build_their_shards_and_the_endpoint_loads_them(compiled_tiny: dict[str, str]) -> None:
    # a whole-model AOT preset's bridge (runtime.ModelHost._bridge): its file says nothing of
    # regions; the helpers are told (--regions) and the endpoint serves it block by block
    import dataclasses

    from engine.guidance.regions import blocks_by_shard
    from engine.pipeline import Generator
    from engine.presets import load_preset
    from engine.service.switch import warm_up

    presets = Path(compiled_tiny["GEN404_PRESETS_DIR"])
    (presets / "tinya.yaml").write_text("extends: tinyc\ncompile_backend: aot\n")
    argv = compile_helpers.helper_argv("tinya", "cpu", random_weights=False, regions=True)
    # one shard of each model's two in helpers, side by side; the endpoint builds the other shards
    outcomes = compile_helpers.CompileHelpers(argv, parts=("unet:1/2", "vae:1/2")).wait(timeout=600)
    assert all(o.startswith("built in") for o in outcomes.values()), outcomes
    aot_dir = Path(compiled_tiny["GEN404_WARM_CACHE_DIR"]) / "aot"
    built = sorted(p.name.rsplit("-", 1)[0] for p in aot_dir.glob("*.aotc"))  # less the key's digest
    assert not list(aot_dir.glob("preset-*"))  # shards are not the preset's set: not recorded

    bridge = dataclasses.replace(load_preset("tinya"), compile_regions=True)
    generator = Generator(bridge, "cpu")  # the endpoint: every block of both
    warm_up(generator, lambda fraction, message="": None)
    assert generator.compile_failure is None
    guidance = generator.guidance
    shard1 = [
        f"{prefix}.{name}"
        for prefix, model in (("unet", guidance.unet), ("vae-encoder", guidance.vae.encoder))
        for name, _, owner in blocks_by_shard(model, 2)
        if owner == 1
    ]
    assert built == sorted(shard1)  # the helpers built their shards' blocks, nothing else
    # their packages match the endpoint's calls, made after blocks packaged here (other strides)
    states = {r["name"]: r["state"] for r in guidance.aot_reports()}
    assert {name for name, state in states.items() if state == "loaded"} == set(shard1)
    assert {state for name, state in states.items() if name not in shard1} == {"built"}


def _block_aware(fail_whole: bool = False, fail_blocks: bool = False) -> type:
    """A _FakeGenerator class whose generations also say whether block packages made them, and
    whose warm-up of the whole models, or of the blocks, fails if told."""
    from tests.test_model_host import _FakeGenerator, _Result

    class Generator(_FakeGenerator):
        def on_warmup(self) -> float:
            if fail_whole and self.preset.compile and not self.preset.compile_regions:
                raise RuntimeError("CUDA out of memory (injected)")
            if fail_blocks and self.preset.compile and self.preset.compile_regions:
                raise RuntimeError("block compile failed (injected)")
            return 0.1

        def generate(self, prompt, on_step=None) -> _Result:  # noqa: ANN001
            made = "compiled" if self.preset.compile else "uncompiled"
            return _Result(f"{made} blocks" if self.preset.compile_regions else made)

    return Generator


@contextlib.contextmanager
def _bridged_host(
    compiled_tiny: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    release: Path,
    fail_whole: bool = False,
    fail_blocks: bool = False,
) -> Iterator[tuple[Any, list[tuple[str, bool]]]]:
    """A ModelHost on a whole-model AOT tiny preset, as on a 16-core GPU box with room for five
    helpers: real helper processes, the block ones done at once, the whole-model ones waiting for
    `release`. Yields the host (not started) and each spawned (part, regions); stops both after."""
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    presets = Path(compiled_tiny["GEN404_PRESETS_DIR"])
    (presets / "tinya.yaml").write_text("extends: tinyc\ncompile_backend: aot\n")
    monkeypatch.setattr(compile_helpers, "wanted", lambda *args: True)  # on CUDA only: forced here
    monkeypatch.setattr(compile_helpers, "cores", lambda: 16)
    monkeypatch.setattr("engine.guidance.aot.supported", lambda: True)
    spawned: list[tuple[str, bool]] = []
    wait = f"import pathlib, time\nwhile not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)"

    def argv(preset: str, device: str, random: bool, regions: bool = False) -> Any:
        def one(part: str) -> list[str]:
            spawned.append((part, regions))
            return [sys.executable, "-c", "pass" if regions else wait]

        return one

    host = ModelHost(
        Worker("test-bridge"), "tinya", factory=_block_aware(fail_whole, fail_blocks), random_weights=True
    )
    host.helper_argv = argv
    host.gpu_room = _roomy_gpu
    try:
        yield host, spawned
    finally:
        release.touch()
        host.worker.stop()
        host.stop()


def _wait_for(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_cold_aot_start_serves_block_packages_then_swaps_in_the_whole_models(
    compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.test_model_host import _made_by

    release = tmp_path / "release"
    with _bridged_host(compiled_tiny, monkeypatch, release) as (host, spawned):
        statuses = _record_statuses(host)
        host.start()
        # the block packages first, in five helpers (the UNet in three shards)
        _wait_for(lambda: host.health()["status"] == "ready")
        assert statuses == ["loading", "warming", "ready"]
        assert spawned[:5] == [(p, True) for p in ("unet:0/3", "unet:1/3", "unet:2/3", "vae:0/2", "vae:1/2")]
        assert _made_by(host) == "compiled blocks"
        # then the whole models, in two helpers, while the blocks serve and /health says so
        _wait_for(lambda: (host.health()["switch"] or {}).get("phase") == "compiling in helpers")
        assert spawned[5:] == [("unet", False), ("vae", False)]
        health = host.health()
        assert health["preset"] == "tinya" and health["status"] == "ready"
        assert health["switch"]["state"] == "building" and health["switch"]["kind"] == "upgrade"
        assert "whole-model packages building beside the block packages" in health["message"]
        assert _made_by(host) == "compiled blocks"
        release.touch()
        host.switching.future.result(30)
        assert _made_by(host) == "compiled"
        assert host.health()["status"] == "ready" and "block" not in host.health()["message"]
        assert host.switch("tinya") is None  # the preset as its file says: nothing left to build


def test_a_miner_s_switch_cancels_the_whole_model_build_instead_of_waiting_for_it(
    compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # one build at a time: any other switch meanwhile is refused (409), but the whole-model build
    # after a start on block packages takes minutes on a GPU and only saves 1.7%; it yields
    from tests.test_model_host import _made_by

    with _bridged_host(compiled_tiny, monkeypatch, tmp_path / "release") as (host, spawned):
        host.start()
        _wait_for(lambda: len(spawned) == 7 and bool(host._helpers.running()))
        upgrade, whole_helpers = host.switching, host._helpers
        assert upgrade.kind == "upgrade" and upgrade.state == "building"
        ticket = host.switch("tiny")  # helpers still compiling (they wait for a release never given)
        assert ticket is not None and ticket is not upgrade
        ticket.future.result(30)
        assert ticket.state == "done" and host.health()["preset"] == "tiny"
        assert _made_by(host) == "uncompiled"
        assert upgrade.state == "failed" and upgrade.status == 409
        assert "cancelled for the switch to 'tiny'" in upgrade.error
        assert whole_helpers.running() == []  # stopped, not waited for


def test_a_restart_with_block_packages_on_disk_serves_them_at_once_then_upgrades(
    compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # killed before its whole-model packages were built: the next start loads the blocks (no
    # uncompiled stand-in, no block helpers) and compiles the whole models again
    from tests.test_model_host import _made_by

    release = tmp_path / "release"
    with _bridged_host(compiled_tiny, monkeypatch, release) as (host, spawned):
        host._compiled_state_on_disk = lambda preset: preset.compile_regions
        statuses = _record_statuses(host)
        host.start()
        _wait_for(lambda: host.health()["status"] == "ready")
        assert statuses == ["loading", "ready"] and _made_by(host) == "compiled blocks"
        _wait_for(lambda: len(spawned) == 2)
        assert spawned == [("unet", False), ("vae", False)]
        release.touch()
        host.switching.future.result(30)
        assert _made_by(host) == "compiled"


@pytest.mark.parametrize("blocks_fail", [False, True])
def test_a_failed_whole_model_build_keeps_what_serves_and_names_it(
    blocks_fail: bool, compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # the whole models' warm-up fails; before it, the block packages' too (then the uncompiled
    # stand-in keeps serving)
    from tests.test_model_host import _made_by

    release = tmp_path / "release"
    release.touch()  # the whole-model helpers end at once; the endpoint's warm-up of them fails
    bridged = _bridged_host(compiled_tiny, monkeypatch, release, fail_whole=True, fail_blocks=blocks_fail)
    with bridged as (host, spawned):
        host.start()
        _wait_for(
            lambda: len(spawned) == 7 and host.switching is not None and host.switching.state == "failed"
        )
        health = host.health()
        # the uncompiled stand-in is the bridge (block packages' preset) with compile off
        serving = "uncompiled blocks" if blocks_fail else "compiled blocks"
        assert health["status"] == "ready" and _made_by(host) == serving
        named = "uncompiled" if blocks_fail else "block packages"
        assert f"serving {named}: the whole-model packages failed" in health["message"]
        assert "CUDA out of memory (injected)" in health["message"]


def test_no_bridge_without_room_for_more_than_two_helpers() -> None:
    gib = 1 << 30
    assert compile_helpers.bridge_worthwhile(140 * gib, cores=16)  # five helpers
    assert not compile_helpers.bridge_worthwhile(140 * gib, cores=8)  # two: the whole models' own
    assert not compile_helpers.bridge_worthwhile(22 * gib, cores=16)


def test_region_helper_parts_follow_the_gpu_s_room_and_the_cpu_s_cores() -> None:
    gib = 1 << 30
    parts = compile_helpers.helper_parts
    # an H200 box (16 cores): five helpers, the UNet (the longer compile) in three shards
    assert parts(True, 140 * gib, cores=16) == ("unet:0/3", "unet:1/3", "unet:2/3", "vae:0/2", "vae:1/2")
    assert len(parts(True, 140 * gib, cores=64)) == compile_helpers.MAX_HELPERS
    assert parts(True, 140 * gib, cores=12) == ("unet:0/2", "unet:1/2", "vae:0/2", "vae:1/2")
    assert parts(True, 140 * gib, cores=9) == ("unet:0/2", "unet:1/2", "vae")
    assert parts(True, 26 * gib, cores=16) == ("unet:0/2", "unet:1/2", "vae")  # room for one more
    assert parts(True, 22 * gib, cores=16) == ("unet", "vae")
    assert parts(True, 140 * gib, cores=8) == ("unet", "vae")
    assert parts(False, 140 * gib, cores=16) == ("unet", "vae")  # whole models


def test_helpers_share_the_cores_between_their_compile_workers() -> None:
    show = "import os, sys; print(os.environ['TORCHINDUCTOR_COMPILE_THREADS']); sys.exit(1)"
    outcomes = compile_helpers.CompileHelpers(
        lambda part: [sys.executable, "-c", show], parts=("unet:0/2", "unet:1/2", "vae")
    ).wait(timeout=60)
    threads = {o.rsplit(": ", 1)[1] for o in outcomes.values()}  # "failed (exit 1) after N s: <line>"
    assert threads == {str(compile_helpers.compile_threads(3))}
    # twice the cores in all, two at least
    assert compile_helpers.compile_threads(5) == max(2, 2 * compile_helpers.cores() // 5)
    assert compile_helpers.compile_threads(10**6) == 2


def test_a_cold_start_waits_for_its_helpers_then_builds_and_reports_them(
    compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost
    from tests.test_model_host import _FakeGenerator, _made_by

    marker = tmp_path / "unet-done"
    scripts = {  # real processes in the helpers' place: one builds (slowly), one fails
        "unet": f"import pathlib, time; time.sleep(1.0); pathlib.Path({str(marker)!r}).touch()",
        "vae": "import sys; print('loading the VAE failed: CUDA out of memory'); sys.exit(1)",
    }
    seen_by_build: list[bool] = []

    class Built(_FakeGenerator):
        def on_warmup(self) -> float:
            if self.preset.compile:
                seen_by_build.append(marker.exists())  # the compiled build ran after the helpers
            return 0.1

    monkeypatch.setattr(compile_helpers, "wanted", lambda *args: True)  # on CUDA only: forced here
    worker = Worker("test-helpers")
    host = ModelHost(worker, "tinyc", factory=Built, random_weights=True)
    host.helper_argv = lambda preset, device, random, regions=False: (
        lambda part: [sys.executable, "-c", scripts[part]]
    )
    host.gpu_room = _roomy_gpu
    statuses = _record_statuses(host)
    try:
        host.start()
        host.builder.submit(lambda: None).result(30)
        host.switching.future.result(30)
        assert statuses == ["loading", "warming", "ready"] and _made_by(host) == "compiled"
        assert seen_by_build == [True]
        switch = host.health()["switch"]
        assert "compiling in helpers" in switch["phases"]
        assert switch["phases"]["compiling in helpers"] >= 0.9  # the slow helper's second
        note = switch["note"]
        assert "unet built in" in note
        assert "vae failed (exit 1)" in note and "CUDA out of memory" in note
    finally:
        worker.stop()
        host.stop()


def test_a_cold_switch_compiles_in_helpers_while_the_old_preset_serves(
    compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost
    from tests.test_model_host import _FakeGenerator, _made_by

    release = tmp_path / "release"
    wait_for_release = (
        f"import pathlib, time\nwhile not pathlib.Path({str(release)!r}).exists(): time.sleep(0.02)"
    )
    monkeypatch.setattr(compile_helpers, "wanted", lambda *args: True)
    worker = Worker("test-switch-helpers")
    host = ModelHost(worker, "tiny", factory=_FakeGenerator, random_weights=True)
    host.helper_argv = lambda preset, device, random, regions=False: (
        lambda part: [sys.executable, "-c", wait_for_release]
    )
    host.gpu_room = _roomy_gpu
    try:
        host.start()
        host.builder.submit(lambda: None).result(30)
        assert host.health()["status"] == "ready" and _made_by(host) == "uncompiled"
        ticket = host.switch("tinyc")
        deadline = time.monotonic() + 30
        while host._helpers is None or not host._helpers.running():
            assert time.monotonic() < deadline
            time.sleep(0.02)
        # helpers compiling: the old preset still serves, the switch says what it waits on
        assert _made_by(host) == "uncompiled" and host.health()["preset"] == "tiny"
        assert host.health()["switch"]["phase"] == "compiling in helpers"
        release.touch()
        ticket.future.result(30)
        assert host.health()["preset"] == "tinyc" and _made_by(host) == "compiled"
        assert "unet built in" in ticket.note and "vae built in" in ticket.note
    finally:
        release.touch()
        worker.stop()
        host.stop()


@pytest.mark.parametrize("crowded", ["memory", "lock"])
def test_a_crowded_gpu_compiles_in_process_without_helpers(
    crowded: str, compiled_tiny: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # too little free memory, or another endpoint's helpers already on this GPU: no helpers, and
    # the start compiles as it did before them
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost
    from engine.warm_cache import cache_dir
    from tests.test_model_host import _FakeGenerator, _made_by

    monkeypatch.setattr(compile_helpers, "wanted", lambda *args: True)
    spawned: list[str] = []
    held = compile_helpers.gpu_lock(cache_dir(), "GPU-test") if crowded == "lock" else None
    worker = Worker("test-crowded")
    host = ModelHost(worker, "tinyc", factory=_FakeGenerator, random_weights=True)
    host.helper_argv = lambda preset, device, random, regions=False: (
        lambda part: spawned.append(part) or [sys.executable]
    )
    host.gpu_room = (lambda device: (12 << 30, "GPU-test")) if crowded == "memory" else _roomy_gpu
    try:
        host.start()
        host.builder.submit(lambda: None).result(30)
        host.switching.future.result(30)
        assert host.health()["status"] == "ready" and _made_by(host) == "compiled"
        assert spawned == [] and host._helpers is None
        assert "compiling in helpers" not in host.health()["switch"]["phases"]
    finally:
        worker.stop()
        host.stop()
        if held is not None:
            held.close()


def test_one_set_of_helpers_per_gpu_across_processes(tmp_path: Path) -> None:
    first = compile_helpers.gpu_lock(tmp_path, "GPU-1234/a")
    assert first is not None
    probe = (
        "import sys; from pathlib import Path; from engine.service.compile_helpers import gpu_lock;"
        f" print(gpu_lock(Path({str(tmp_path)!r}), sys.argv[1]) is not None)"
    )

    def other_process_gets(gpu: str) -> str:
        run = subprocess.run([sys.executable, "-c", probe, gpu], cwd=REPO, capture_output=True, text=True)
        return run.stdout.strip()

    assert other_process_gets("GPU-1234/a") == "False"  # held here
    assert other_process_gets("GPU-5678") == "True"  # another GPU: its own lock
    first.close()
    assert other_process_gets("GPU-1234/a") == "True"  # released with the file


def test_free_memory_rule() -> None:
    assert compile_helpers.memory_refusal(64 << 30) is None
    assert compile_helpers.memory_refusal(12 << 30) == "12.0 GiB free on the GPU, helpers need 20"


def test_only_a_cold_compile_on_cuda_wants_helpers() -> None:
    assert compile_helpers.wanted(True, "cuda", compiled_on_disk=False)
    assert not compile_helpers.wanted(True, "cuda", compiled_on_disk=True)
    assert not compile_helpers.wanted(True, "cpu", compiled_on_disk=False)
    assert not compile_helpers.wanted(False, "cuda", compiled_on_disk=False)


def test_each_helper_is_timed_to_its_own_exit() -> None:
    helpers = compile_helpers.CompileHelpers(
        lambda part: [sys.executable, "-c", f"import time; time.sleep({3.0 if part == 'unet' else 0.0})"]
    )
    outcomes = helpers.wait()
    seconds = {part: float(outcome.split()[2]) for part, outcome in outcomes.items()}  # "built in N s"
    assert seconds["vae"] < 2.5 <= 3.0 <= seconds["unet"]


def test_stopping_the_endpoint_stops_a_helper_still_compiling() -> None:
    helpers = compile_helpers.CompileHelpers(
        lambda part: [sys.executable, "-c", "import time; time.sleep(60)"]
    )
    assert sorted(helpers.running()) == ["unet", "vae"]
    helpers.stop()
    assert helpers.running() == []
    outcomes = compile_helpers.CompileHelpers(
        lambda part: [sys.executable, "-c", "import time; time.sleep(60)"], parts=("unet",)
    ).wait(timeout=0.5)
    assert outcomes == {"unet": "stopped after 0 s"}


def test_a_helper_leaves_when_its_endpoint_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "helper.pid"
    helper = textwrap.dedent(
        f"""
        import os, pathlib, time
        from engine.service.compile_helpers import exit_with_parent
        exit_with_parent(poll_s=0.05)
        partial = pathlib.Path({str(pid_file)!r} + ".partial")
        partial.write_text(str(os.getpid()))
        os.replace(partial, {str(pid_file)!r})  # whole: the test reads it as soon as it exists
        time.sleep(60)
        """
    )
    endpoint = (
        f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {helper!r}]); time.sleep(60)"
    )
    parent = subprocess.Popen([sys.executable, "-c", endpoint], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)  # what a crash under the console is
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by init) counts as gone
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(")")[-1].split()[0] != "Z"
