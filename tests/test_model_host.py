"""ModelHost (engine/service/runtime.py) in process: warm-up after load and after a switch (built
on the host's build thread), and what /health says about it. tests/test_switch.py has the rest."""

from __future__ import annotations


def test_endpoint_warms_up_after_load_and_switch_and_reports_it() -> None:
    from engine.service.queue import Worker
    from engine.service.runtime import ModelHost

    calls: list[str] = []
    compile_fails_for = {"text_mv_fast"}

    class FakeGenerator:
        device = "cpu"
        random_weights = True
        compile_failure = None

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

        def fork(self, preset):  # noqa: ANN001, ANN202
            return FakeGenerator(preset, None, True)

    worker = Worker("test-warmup")
    # random weights: the text_mv presets' pretrained weights are not needed; no warm cache either
    host = ModelHost(worker, "text_mv_fast", factory=FakeGenerator, random_weights=True, use_cache=False)
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
