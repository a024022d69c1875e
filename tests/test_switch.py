"""Atomic preset switches in the endpoint's model host (engine/service/runtime.py + switch.py),
in process with real tiny-MVDream Generators on the CPU: the new preset is built beside the
serving one, requests meanwhile run on the old preset, and a failed build changes nothing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.formats.ply import read_ply, write_ply
from engine.gate import check_gate
from engine.pipeline import Generator
from engine.service.queue import Worker
from engine.service.runtime import ModelHost, SwitchRefused, parse_faults
from engine.service.switch import PhaseClock

PRESETS = {
    "sw_a": "extends: smoke\niters: 2\nnum_pts: 100\nmax_gaussians: 200\nrender_size: 16\nref_size: 16\n"
    "densification_interval: 100\ndensity_start_iter: 100\ndensity_end_iter: 100\n",
    "sw_b": "extends: sw_a\nguidance_scale: 30\nref_size: 24\n",  # same models, new shapes
    "sw_seed": "extends: sw_a\nseed: 5\n",  # random weights are seeded by the preset: other models
    "sw_boom": "extends: sw_a\nguidance_scale: 20\n",  # the injected switch fault names it
    "sw_pretrained": "extends: sw_a\nguidance: mvdream\nweights: pretrained\nmvdream_id: nobody/no-such-model\n",
}


class GatedGenerator(Generator):
    """A real Generator whose warm-up waits for the test: the build is then visibly "in progress"."""

    gate = threading.Event()
    warming = threading.Event()

    def warmup(self, progress: Any = None, force: bool = False) -> float:
        GatedGenerator.warming.set()
        assert GatedGenerator.gate.wait(60), "the test never opened the gate"
        return super().warmup(progress, force=True)


def factory(preset: Any, device: str | None, random_weights: bool) -> Generator:
    return GatedGenerator(preset, device="cpu", random_weights=random_weights, sync_timings=False)


@pytest.fixture()
def presets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name, text in PRESETS.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(tmp_path))
    monkeypatch.setenv("GEN404_MODELS_DIR", str(tmp_path / "models"))  # empty: nothing pretrained
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("GEN404_WARM_CACHE_DIR", str(tmp_path / "warm"))
    return tmp_path


@pytest.fixture()
def host(presets: Path) -> Iterator[ModelHost]:
    GatedGenerator.gate.set()
    worker = Worker("test-switch")
    host = ModelHost(
        worker, "sw_a", device="cpu", faults=parse_faults("switch:OutOfMemoryError@sw_boom"), factory=factory
    )
    host.start()
    host.builder.submit(lambda: None).result(120)  # the start's build is done
    assert host.status == "ready", host.message
    try:
        yield host
    finally:
        GatedGenerator.gate.set()
        worker.stop()
        host.stop()


def generate(host: ModelHost) -> Any:
    return host.worker.submit(lambda: host.generate("a chair", write_ply, threading.Event())).result(120)


def test_start_reports_its_phases(host: ModelHost) -> None:
    health = host.health()
    assert health["phase"] is None and health["phase_elapsed_s"] is None
    assert list(health["phases"]) == ["importing libraries", "loading weights", "warming up"]
    assert health["phases"]["loading weights"] > 0 and health["switch"] is None
    assert health["cache"] is None  # sw_a compiles nothing: no warm cache to load or save


def test_requests_run_on_the_old_preset_until_the_new_one_is_warm(host: ModelHost) -> None:
    old_unet = host._generator.guidance.unet
    GatedGenerator.gate.clear()
    GatedGenerator.warming.clear()
    ticket = host.switch("sw_b")
    assert ticket is not None and not ticket.reloaded  # same models: shared, not loaded again
    assert GatedGenerator.warming.wait(60)
    # mid-build: /health is ready on the old preset; the switch shows its phase
    health = host.health()
    assert health["status"] == "ready" and health["preset"] == "sw_a"
    assert health["switch"]["state"] == "building" and health["switch"]["phase"] == "warming up"
    output = generate(host)
    assert output.preset == "sw_a" and check_gate(read_ply(output.data)).passed
    with pytest.raises(SwitchRefused) as refused:
        host.switch("sw_seed")  # one build at a time
    assert refused.value.status == 409 and "sw_b" in str(refused.value)
    assert host.switch("sw_b") is ticket  # asking again joins the build under way

    GatedGenerator.gate.set()
    assert ticket.future.result(120).state == "done"
    assert host.health()["preset"] == "sw_b" and host.health()["switch"]["state"] == "done"
    assert list(ticket.to_dict()["phases"]) == ["sharing models", "warming up"]
    output = generate(host)
    assert output.preset == "sw_b" and check_gate(read_ply(output.data)).passed
    assert host._generator.guidance.unet is old_unet  # one copy of the weights
    assert host._generator.guidance.ref_size == 24


def test_other_models_are_loaded_beside_the_old_ones(host: ModelHost) -> None:
    old_unet = host._generator.guidance.unet
    ticket = host.switch("sw_seed")
    assert ticket is not None and ticket.reloaded
    assert ticket.future.result(120).state == "done"
    assert host._generator.guidance.unet is not old_unet
    assert "loading weights" in ticket.to_dict()["phases"]
    assert generate(host).preset == "sw_seed"


def test_failed_build_keeps_the_old_preset_serving(host: ModelHost) -> None:
    ticket = host.switch("sw_boom")  # GEN404_FAULT_INJECT: CUDA out of memory while building
    assert ticket is not None
    assert ticket.future.result(120).state == "failed"
    assert ticket.status == 500 and "CUDA out of memory" in ticket.error
    assert "still serving 'sw_a'" in ticket.error
    health = host.health()
    assert health["status"] == "ready" and health["preset"] == "sw_a"
    assert health["switch"]["state"] == "failed" and "CUDA out of memory" in health["switch"]["error"]
    assert generate(host).preset == "sw_a"
    # the fault was one-shot per preset name match: a switch elsewhere still works
    assert host.switch("sw_b").future.result(120).state == "done"


def test_missing_weights_are_refused_before_anything_is_built(host: ModelHost) -> None:
    with pytest.raises(SwitchRefused) as refused:
        host.switch("sw_pretrained")
    assert refused.value.status == 424
    assert "nobody/no-such-model not found locally" in str(refused.value)
    assert "gen404 models pull --preset sw_pretrained" in str(refused.value)
    assert host.switching is None and host.health()["preset"] == "sw_a"
    assert generate(host).preset == "sw_a"


class CaptureSensitiveGenerator(Generator):
    """Warm-up fails off the generation thread, as a CUDA-graph capture can beside a running
    generation: the switch must then be built on the generation thread."""

    def warmup(self, progress: Any = None, force: bool = False) -> float:
        if threading.current_thread().name != "test-capture":
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        return super().warmup(progress, force=True)


def test_a_capture_failure_beside_serving_is_built_again_on_the_generation_thread(presets: Path) -> None:
    worker = Worker("test-capture")
    host = ModelHost(worker, "sw_a", device="cpu", factory=factory)
    GatedGenerator.gate.set()
    try:
        host.start()
        host.builder.submit(lambda: None).result(120)
        assert host.status == "ready", host.message
        host._active.generator.__class__ = CaptureSensitiveGenerator  # its forks warm up that way
        ticket = host.switch("sw_b")
        assert ticket is not None and ticket.future.result(120).state == "done", ticket.error
        note = ticket.to_dict()["note"]
        assert "built on the generation thread" in note and "stream is capturing" in note
        assert generate(host).preset == "sw_b"
    finally:
        worker.stop()
        host.stop()


def test_switch_to_the_serving_preset_is_nothing(host: ModelHost) -> None:
    assert host.switch("sw_a") is None


def test_phase_clock_adds_up_phases_in_order() -> None:
    clock = PhaseClock()
    clock.enter("a")
    snap = clock.snapshot()
    assert snap["phase"] == "a" and snap["phase_elapsed_s"] >= 0
    clock.enter("b")
    clock.enter("a")
    clock.finish()
    snap = clock.snapshot()
    assert snap["phase"] is None and list(snap["phases"]) == ["a", "b"]


# A fresh interpreter: which modules are imported when an AOT start begins decoding its packages.
_PRELOAD_ORDER = """
import sys, threading
from types import SimpleNamespace
from engine.guidance import aot
from engine.service.switch import PhaseClock, build_ready

assert "engine.guidance.tiny" not in sys.modules
seen, decoded = [], threading.Event()

def preload_preset(preset, device, root=None, stop=None):
    seen.append("engine.guidance.tiny" in sys.modules and "diffusers.models" in sys.modules)
    assert stop.wait(60)  # the weights failed: told to stop
    seen.append(stop.is_set())
    decoded.set()
    return []

def make_generator(progress):
    raise KeyboardInterrupt  # the weights would load here, beside the decoding

aot.preload_preset = preload_preset
preset = SimpleNamespace(name="p", compile=True, compile_backend="aot", guidance="tiny_mvdream", device="cpu")
try:
    build_ready(preset, "cpu", make_generator, PhaseClock(), lambda *a: None)
except KeyboardInterrupt:
    pass
assert decoded.wait(60)
print(seen)
"""


def test_an_aot_start_imports_the_model_libraries_before_decoding_beside_the_weights() -> None:
    # diffusers' lazy modules imported from two threads at once broke a start in CI ("cannot
    # import name 'AutoencoderKL' from 'diffusers'"): the decoding thread starts after them. And
    # when the weights fail to load, the decoding is told to stop
    import subprocess
    import sys

    from tests.support.server import REPO_ROOT

    done = subprocess.run(
        [sys.executable, "-c", _PRELOAD_ORDER], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[True, True]"
