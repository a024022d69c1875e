"""ModelHost (engine/service/runtime.py) in process: warm-up after load and after a switch (built
on the host's build thread), and what /health says about it. tests/test_switch.py has the rest."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class _Result:
    """What ModelHost.generate encodes: the splats (here the name of the state that made them)."""

    def __init__(self, made_by: str) -> None:
        self.splats = [made_by]
        self.timings: dict[str, float] = {}
        self.preset = None


class _FakeGenerator:
    """A Generator double for ModelHost: shares "models" with every fork; a test's subclass says
    what loading and warming up do (`on_load`, `on_warmup`, which returns the warm-up's seconds);
    a generation says whether the compiled or the uncompiled state made it."""

    device = "cpu"
    random_weights = True
    compile_failure: str | None = None

    def __init__(self, preset, device=None, random_weights=True) -> None:  # noqa: ANN001
        self.preset = preset

    def on_load(self) -> None:
        pass

    def on_warmup(self) -> float:
        return 0.5

    def load(self, progress) -> None:  # noqa: ANN001
        self.on_load()

    def warmup(self, progress) -> float:  # noqa: ANN001
        return self.on_warmup()

    def models_key(self) -> tuple:
        return ("same",)

    def fork(self, preset):  # noqa: ANN001, ANN202
        return type(self)(preset)

    def generate(self, prompt, on_step=None) -> _Result:  # noqa: ANN001
        return _Result("compiled" if self.preset.compile else "uncompiled")


def test_endpoint_warms_up_after_load_and_switch_and_reports_it() -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    calls: list[str] = []
    compile_fails_for = {"text_mv_fast"}

    class FakeGenerator(_FakeGenerator):
        def on_load(self) -> None:
            calls.append("load")

        def on_warmup(self) -> float:
            calls.append(f"warmup {self.preset.name}")
            if self.preset.name in compile_fails_for:
                self.compile_failure = "BackendCompilerFailed: no triton"
            return 1.25

    worker = Worker("test-warmup")
    # random weights: the text_mv presets' pretrained weights are not needed; no warm cache either
    # serve_early=False: the start builds the compiled state only (the serving-early start is below)
    host = ModelHost(
        worker, "text_mv_fast", factory=FakeGenerator, random_weights=True, use_cache=False, serve_early=False
    )
    try:
        host.start()
        host.builder.submit(lambda: None).result(10)
        assert host.health()["status"] == "ready" and "warm-up 1.2s" in host.health()["message"]
        assert "torch.compile failed, serving uncompiled: BackendCompilerFailed" in host.health()["message"]
        # a switch keeps the models (a fork) but warms up new shapes before it serves them
        ticket = host.switch("text_mv_ultra_fast")
        assert ticket is not None and ticket.reloaded is False
        ticket.future.result(10)
        assert calls == ["load", "warmup text_mv_fast", "warmup text_mv_ultra_fast"]
        assert "torch.compile failed" not in host.health()["message"]
        compile_fails_for.add("text_mv")
        host.switch("text_mv").future.result(10)
        health = host.health()
        assert health["status"] == "ready" and "warm-up 1.2s" in health["message"]
        assert "torch.compile failed, serving uncompiled" in health["message"]
    finally:
        worker.stop()
        host.stop()


def _serving_early_host(compiled_warmup):  # noqa: ANN001, ANN202
    """A host on text_mv_fast (a compiling preset) whose generators are doubles: the uncompiled
    one warms up at once; the compiled one runs `compiled_warmup()` as its warm-up."""
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    class FakeGenerator(_FakeGenerator):
        def on_warmup(self) -> float:
            if self.preset.compile:
                compiled_warmup()
            return 0.5

    worker = Worker("test-early")
    host = ModelHost(worker, "text_mv_fast", factory=FakeGenerator, random_weights=True, use_cache=False)
    return host, worker


@contextlib.contextmanager
def _started(compiled_warmup: Callable[[], object], timeout: float) -> Iterator[Any]:
    """A serving-early host once its start and its compiled build have both run."""
    host, worker = _serving_early_host(compiled_warmup)
    try:
        host.start()
        host.builder.submit(lambda: None).result(timeout)  # the start and the compiled build ran
        yield host
    finally:
        worker.stop()
        host.stop()


def _made_by(host) -> str:  # noqa: ANN001
    import threading

    return (
        host.worker.submit(lambda: host.generate("a chair", lambda s: s[0].encode(), threading.Event()))
        .result(10)
        .data.decode()
    )


def test_serving_early_answers_uncompiled_then_swaps_in_the_compiled_state() -> None:
    import threading

    release = threading.Event()
    host, worker = _serving_early_host(lambda: release.wait(10))
    try:
        host.start()
        deadline = 0
        while host.health()["status"] != "warming" and deadline < 500:
            threading.Event().wait(0.01)
            deadline += 1
        health = host.health()
        # answering before the compiled state exists: /health says warming, not ready
        assert health["status"] == "warming" and host.serving
        assert "answering uncompiled" in health["message"]
        assert health["switch"]["state"] == "building" and health["switch"]["target"] == "text_mv_fast"
        assert _made_by(host) == "uncompiled"
        # asking for the same preset meanwhile waits on the build under way instead of a second one
        assert host.switch("text_mv_fast") is host.switching
        release.set()
        host.switching.future.result(10)
        assert host.health()["status"] == "ready" and _made_by(host) == "compiled"
    finally:
        release.set()
        worker.stop()
        host.stop()


def test_the_compiled_build_reports_what_torch_compile_did() -> None:
    import torch

    def compile_something() -> None:
        torch._dynamo.reset()
        compiled = torch.compile(lambda x: x.sin() + 1, backend="eager")  # traced, nothing generated
        compiled(torch.ones(3))

    with _started(compile_something, timeout=30) as host:
        health = host.health()
        assert health["status"] == "ready" and health["switch"]["state"] == "done"
        stats = health["switch"]["compile"]
        assert stats["frames"] >= 1 and stats["graphs"] >= 1
        assert all(value >= 0 for value in stats.values())  # the warm-up's dynamo reset is allowed for


def test_serving_early_keeps_the_uncompiled_state_when_the_compiled_build_fails() -> None:
    def compile_fails() -> None:
        raise RuntimeError("CUDA out of memory while compiling")

    with _started(compile_fails, timeout=10) as host:
        health = host.health()
        assert health["status"] == "ready" and health["switch"]["state"] == "failed"
        assert "torch.compile build failed, serving uncompiled" in health["message"]
        assert "CUDA out of memory" in health["message"]
        assert _made_by(host) == "uncompiled"


def test_an_aot_preset_with_its_packages_on_disk_starts_compiled_without_serving_early(
    tmp_path,
    monkeypatch,  # noqa: ANN001
) -> None:
    # a past warm-up recorded every AOT package the preset calls: loading them takes seconds, so
    # the start builds the compiled state directly (no uncompiled state, no "warming")
    from engine.guidance.aot import mark_preset_ready, package_dir, preset_packages_ready
    from engine.presets import load_preset
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    monkeypatch.setenv("GEN404_WARM_CACHE_DIR", str(tmp_path / "warm"))
    presets = tmp_path / "presets"
    presets.mkdir()
    (presets / "fast_aot.yaml").write_text("extends: text_mv_fast\ncompile_backend: aot\ndevice: cpu\n")
    monkeypatch.setenv("GEN404_PRESETS_DIR", str(presets))
    preset = load_preset("fast_aot")
    root = package_dir()
    root.mkdir(parents=True)
    (root / "unet-0123.aotc").write_text("{}")  # a finished package (written atomically)
    mark_preset_ready(preset, "cpu", ["unet-0123"])
    assert preset_packages_ready(preset, "cpu")

    statuses: list[str] = []
    worker = Worker("test-aot-start")
    host = ModelHost(worker, "fast_aot", factory=_FakeGenerator, random_weights=True, use_cache=False)
    real_set = host._set

    def record(status, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        statuses.append(status)
        return real_set(status, *args, **kwargs)

    monkeypatch.setattr(host, "_set", record)
    try:
        host.start()
        host.builder.submit(lambda: None).result(10)
        assert host.health()["status"] == "ready" and _made_by(host) == "compiled"
        assert "warming" not in statuses and host.switching is None
        # without the packages the same start serves early again
        (root / "unet-0123.aotc").unlink()
        assert not preset_packages_ready(preset, "cpu")
    finally:
        worker.stop()
        host.stop()


def test_warm_up_cached_memory_goes_back_to_the_gpu_once_ready() -> None:
    """The warm-up's transient buffers stay cached by torch's allocator (nvidia-smi counts them as
    the endpoint's) unless the host hands them back when the built state goes live."""
    import pytest
    import torch

    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    transient = 512 * 2**20

    class FakeGenerator(_FakeGenerator):
        def on_warmup(self) -> float:
            buffer = torch.empty(transient, dtype=torch.uint8, device="cuda")
            buffer.fill_(1)
            del buffer  # freed, but kept in the allocator's cache
            assert torch.cuda.memory_reserved() >= transient
            return 0.1

    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_reserved()
    worker = Worker("test-release")
    host = ModelHost(worker, "text_mv_fast", factory=FakeGenerator, use_cache=False, serve_early=False)
    try:
        host.start()
        host.builder.submit(lambda: None).result(30)
        assert host.health()["status"] == "ready"
        assert torch.cuda.memory_reserved() < baseline + transient
    finally:
        worker.stop()
        host.stop()
