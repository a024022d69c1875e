"""Two additions to `gen404 serve` for the console's remote view and its tune advice:

- preset references with tune overrides ("text_mv_fast+iters=300"): engine.presets and
  PUT /preset {"name", "overrides"}; /health then names the reference;
- GET /gpu: the box's NVML telemetry, behind the API key like every route but /health.

The server is a real `gen404 serve` subprocess (smoke's tiny models) whose NVML is the
module tests/support/fake_pynvml.py (GEN404_NVML_MODULE).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from engine.presets import PresetError, format_ref, load_preset, split_ref
from engine.service.gpu_telemetry import GpuTelemetry
from tests.support.fakes import FakeNvml
from tests.support.server import ServerProcess, running_server

KEY = "test-key-not-secret"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY = (
    "extends: smoke\niters: 2\nrender_size: 32\nref_size: 32\nnum_pts: 500\n"
    "densification_interval: 100\ndensity_start_iter: 0\ndensity_end_iter: 0\n"
)


def test_preset_reference_applies_tune_overrides() -> None:
    assert split_ref("text_mv_fast") == ("text_mv_fast", {})
    assert split_ref("text_mv_fast+iters=300+guidance_scale=7.5") == (
        "text_mv_fast",
        {"iters": 300, "guidance_scale": 7.5},
    )
    # normalised: tune-key order, shortest numbers
    assert format_ref("smoke", {"guidance_scale": 20.0, "iters": 12}) == "smoke+iters=12+guidance_scale=20"
    preset = load_preset("smoke+guidance_scale=20+iters=12")
    assert (preset.iters, preset.guidance_scale, preset.name) == (
        12,
        20.0,
        "smoke+iters=12+guidance_scale=20",
    )
    assert load_preset("smoke").iters == 30  # the file is untouched


@pytest.mark.parametrize(
    "ref, pattern",
    [
        ("smoke+seed=3", "KEY=VALUE with KEY one of iters"),  # not a tune key
        ("smoke+iters", "KEY=VALUE"),
        ("smoke+iters=many", "iters must be a number"),
        ("smoke+iters=0", "out of range"),  # the preset file's own range rule
        ("nope+iters=3", "unknown preset 'nope'"),
    ],
)
def test_bad_preset_references_are_preset_errors(ref: str, pattern: str) -> None:
    with pytest.raises(PresetError, match=pattern):
        load_preset(ref)


def test_gpu_telemetry_reads_nvml_and_degrades_per_field() -> None:
    fake = FakeNvml(count=2, fail={"fan"})
    snap = GpuTelemetry(nvml=fake).sample()
    assert snap["error"] is None and snap["driver"] == "550.54.15"
    assert [g["index"] for g in snap["gpus"]] == [0, 1]
    gpu = snap["gpus"][0]
    assert gpu["name"] == "NVIDIA H100 80GB HBM3" and gpu["temp"] == 61.0 and gpu["power"] == 312.0
    assert gpu["mem_total"] == 80 * 2**30 and gpu["clock_events"] == ["sw-power-cap"]
    assert gpu["fan"] is None  # that field alone


def test_gpu_telemetry_without_a_driver_is_an_answer_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEN404_NVML_MODULE", "tests.support.no_such_nvml_module")
    snap = GpuTelemetry().sample()
    assert snap["gpus"] == [] and "NVIDIA driver not available" in snap["error"]
    assert GpuTelemetry(nvml=FakeNvml(init_error=True)).sample()["gpus"] == []


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    presets = tmp_path_factory.mktemp("presets")
    (presets / "svc_tiny.yaml").write_text(TINY)
    env = {
        "GEN404_PRESETS_DIR": str(presets),
        "GEN404_API_KEY": KEY,
        "GEN404_NVML_MODULE": "tests.support.fake_pynvml",
        "FAKE_NVML_NAME": "Box B H200",
        "FAKE_NVML_TEMP": "77",
    }
    args = ["serve", "--preset", "svc_tiny", "--device", "cpu", "--shutdown-grace", "0.2"]
    with running_server(args, env=env, headers=AUTH) as proc:
        yield proc


def test_gpu_route_needs_the_key_and_reports_the_box(server: ServerProcess) -> None:
    assert httpx.get(server.url("/gpu"), timeout=5).status_code == 401
    snap = httpx.get(server.url("/gpu"), headers=AUTH, timeout=5).json()
    assert snap["error"] is None
    assert [(g["name"], g["temp"]) for g in snap["gpus"]] == [("Box B H200", 77.0)]


def test_put_preset_with_overrides_shows_the_reference(server: ServerProcess) -> None:
    r = httpx.put(server.url("/preset"), json={"name": "svc_tiny", "overrides": {"iters": 3}}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["preset"] == "svc_tiny+iters=3"
    health = server.wait_health(lambda h: h["status"] == "ready" and h["preset"] == "svc_tiny+iters=3")
    assert health["preset"] == "svc_tiny+iters=3"
    out = httpx.post(server.url("/generate/"), data={"prompt": "a lamp"}, headers=AUTH, timeout=120)
    assert out.status_code == 200 and out.headers["X-Preset"] == "svc_tiny+iters=3"

    # a reference as the name works too, and overrides merge into it
    r = httpx.put(
        server.url("/preset"), json={"name": "svc_tiny+iters=3", "overrides": {"ref_size": 16}}, headers=AUTH
    )
    assert r.json()["preset"] == "svc_tiny+iters=3+ref_size=16"

    for body, status in [
        ({"name": "svc_tiny", "overrides": {"seed": 1}}, 422),  # not a tune key
        ({"name": "svc_tiny", "overrides": {"iters": "many"}}, 422),
        ({"name": "svc_tiny", "overrides": [1]}, 422),
        ({"name": "nope", "overrides": {"iters": 3}}, 404),
    ]:
        assert httpx.put(server.url("/preset"), json=body, headers=AUTH).status_code == status, body
    server.wait_health(lambda h: h["status"] == "ready")
    assert server.health()["preset"] == "svc_tiny+iters=3+ref_size=16"  # refusals changed nothing
