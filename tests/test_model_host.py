"""ModelHost (engine/service/runtime.py) in process: warm-up after load and after a switch, and
what /health says about it."""

from __future__ import annotations


def test_endpoint_warms_up_after_load_and_switch_and_reports_it() -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    calls: list[str] = []
    compile_fails_for = {"text_mv_fast"}

    class FakeGenerator:
        device = "cpu"
        random_weights = True

        def __init__(self, preset, device, random_weights) -> None:  # noqa: ANN001
            self.preset = preset

        def load(self, progress) -> None:  # noqa: ANN001
            calls.append("load")

        def warmup(self, progress) -> float:  # noqa: ANN001
            calls.append(f"warmup {self.preset.name}")
            if self.preset.name in compile_fails_for:
                self.compile_failure = "BackendCompilerFailed: no triton"
            return 1.25

        def models_key(self) -> tuple:
            return ("same",)

        def set_preset(self, preset, progress) -> bool:  # noqa: ANN001
            self.preset = preset
            return False

    worker = Worker("test-warmup")
    try:
        host = ModelHost(worker, "text_mv_fast", factory=FakeGenerator)
        host.start()
        worker.submit(lambda: None).result(10)
        assert host.health()["status"] == "ready" and "warm-up 1.2s" in host.health()["message"]
        assert "torch.compile failed, serving uncompiled: BackendCompilerFailed" in host.health()["message"]
        # a switch keeps the models but warms up new shapes; /health tells that warm-up's outcome
        host._generator.compile_failure = None  # as if compile worked for the next preset
        assert host.switch("text_mv_ultra_fast") is False  # same models: no reload, new shapes
        worker.submit(lambda: None).result(10)
        assert calls == ["load", "warmup text_mv_fast", "warmup text_mv_ultra_fast"]
        assert "torch.compile failed" not in host.health()["message"]
        compile_fails_for.add("text_mv")
        assert host.switch("text_mv") is False
        worker.submit(lambda: None).result(10)
        health = host.health()
        assert health["status"] == "ready" and "warm-up 1.2s" in health["message"]
        assert "torch.compile failed, serving uncompiled" in health["message"]
    finally:
        worker.stop()
