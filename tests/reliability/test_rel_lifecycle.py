"""Endpoint life cycle under faults: a preset switch that fails while requests keep coming, and a
warm cache on disk that is corrupt or was made by another torch version (real `gen404 serve`
subprocesses on loopback, CPU, tiny presets; the compiled ones use inductor's C++ backend)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from engine.formats.ply import read_ply
from engine.warm_cache import decode, encode
from tests.support.reliability_kit import MIN_SPLATS, Figures
from tests.support.server import ServerProcess, running_server

SERVE = ["serve", "--device", "cpu", "--queue", "4"]
# compiled twins of `tiny` (two shapes): what a GPU preset does at warm-up, on the CPU
COMPILED = {
    "tinyc": "extends: tiny\ncompile: true\n",
    "tinyc2": "extends: tinyc\nref_size: 24\nguidance_scale: 30\n",
    "tinya": "extends: tinyc\ncompile_backend: aot\n",  # ahead-of-time packages instead
    "needs_weights": "extends: tiny\nguidance: mvdream\nweights: pretrained\nmvdream_id: nobody/absent\n",
}


@pytest.fixture(scope="module")
def presets(presets_dir: Path) -> Path:
    for name, text in COMPILED.items():
        (presets_dir / f"{name}.yaml").write_text(text)
    return presets_dir


def _post(server: ServerProcess, prompt: str) -> httpx.Response:
    return httpx.post(server.url("/generate/"), data={"prompt": prompt}, timeout=120)


def _valid_ply(response: httpx.Response) -> bool:
    return response.status_code == 200 and len(read_ply(response.content)) >= MIN_SPLATS


def test_failed_switch_keeps_serving_requests_in_flight_and_after(
    presets: Path, tmp_path: Path, figures: Figures
) -> None:
    env = {
        "GEN404_FAULT_INJECT": "switch:OutOfMemoryError@alt",  # the build fails as on a full GPU
        "GEN404_MODELS_DIR": str(tmp_path / "models"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),
    }
    with running_server([*SERVE, "--preset", "tiny"], env=env) as server:
        answers: list[httpx.Response] = []
        stop = threading.Event()

        def client() -> None:  # back to back, through the whole switch
            while not stop.is_set():
                answers.append(_post(server, "a chair during a failing switch"))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        time.sleep(0.3)
        started = time.monotonic()
        response = httpx.put(server.url("/preset"), json={"name": "alt"}, timeout=120)
        put_s = time.monotonic() - started
        time.sleep(0.3)
        stop.set()
        thread.join(120)

        assert response.status_code == 500
        error = response.json()["error"]
        assert "CUDA out of memory" in error and "still serving 'tiny'" in error
        assert answers and all(_valid_ply(r) and r.headers["x-preset"] == "tiny" for r in answers)
        health = server.health()
        assert health["status"] == "ready" and health["preset"] == "tiny"
        assert health["switch"]["state"] == "failed" and health["switch"]["target"] == "alt"
        after = _post(server, "a chair after the failed switch")
        assert _valid_ply(after) and after.headers["x-preset"] == "tiny"

        # missing weights: refused up front (engine/models.py's lookup), nothing built
        missing = httpx.put(server.url("/preset"), json={"name": "needs_weights"}, timeout=30)
        assert missing.status_code == 424 and "nobody/absent not found locally" in missing.json()["error"]
        assert server.health()["switch"]["target"] == "alt"  # no new switch was started
        figures.record("failed_switch_put_s", put_s)
        figures.record("failed_switch_requests_during", len(answers))
        assert server.output().count("gen404 serve: error: switch to 'alt' failed") == 1


def _start_compiled(name: str, cache_dir: Path) -> Any:
    env = {"GEN404_WARM_CACHE_DIR": str(cache_dir)}
    return running_server([*SERVE, "--preset", name], env=env, timeout=300)


def _health_cache(server: ServerProcess) -> dict[str, Any]:
    cache = server.health()["cache"]
    assert isinstance(cache, dict), server.health()
    return cache


def test_corrupt_and_other_torch_caches_are_rebuilt_and_reported(
    presets: Path, tmp_path: Path, figures: Figures
) -> None:
    cache_dir = tmp_path / "warm-cache"
    first, second = cache_dir / "tinyc.cpu.warmcache", cache_dir / "tinyc2.cpu.warmcache"
    # 1. a fresh box: both caches are built (tinyc at start, tinyc2 by a switch compiled on the
    #    build thread while the compiled tinyc keeps answering a client on the generation thread)
    with _start_compiled("tinyc", cache_dir) as server:
        cache = _health_cache(server)
        assert cache["state"] == "miss" and cache["saved"].startswith("saved "), cache
        answers: list[httpx.Response] = []
        stop = threading.Event()

        def client() -> None:
            while not stop.is_set():
                answers.append(_post(server, "a chair while tinyc2 compiles"))

        thread = threading.Thread(target=client, daemon=True)
        thread.start()
        time.sleep(0.3)
        put = httpx.put(server.url("/preset"), json={"name": "tinyc2"}, timeout=300)
        stop.set()
        thread.join(120)
        assert put.status_code == 200, put.text
        assert answers and all(_valid_ply(r) for r in answers)
        served = [r.headers["x-preset"] for r in answers]
        assert served[0] == "tinyc" and set(served) <= {"tinyc", "tinyc2"}
        waits = [float(r.headers["x-queue-time"]) for r in answers]
        switch = server.health()["switch"]
        assert switch["state"] == "done" and switch["phases"]["compiling"] > 0
        figures.record("compiled_switch_build_s", switch["elapsed_s"])
        figures.record("compiled_switch_requests_during", served.count("tinyc"))
        figures.record("compiled_switch_max_queue_s", max(waits))
        assert _health_cache(server)["state"] == "miss" and second.is_file()
        assert _valid_ply(_post(server, "a compiled chair"))
    assert first.is_file() and second.is_file()

    # 2. damage both: a flipped payload byte, and a header written by another torch
    data = bytearray(first.read_bytes())
    data[-100] ^= 0xFF
    first.write_bytes(bytes(data))
    header, payload = decode(second.read_bytes())
    second.write_bytes(encode({**header["key"], "torch": "1.13.1"}, payload))

    started = time.monotonic()
    with _start_compiled("tinyc", cache_dir) as server:
        ready_s = time.monotonic() - started
        cache = _health_cache(server)
        assert cache["state"] == "corrupt" and "checksum" in cache["detail"], cache
        assert cache["saved"].startswith("saved ")  # rebuilt by the warm-up
        assert _valid_ply(_post(server, "a chair after a corrupt cache"))
        put = httpx.put(server.url("/preset"), json={"name": "tinyc2"}, timeout=300)
        assert put.status_code == 200, put.text
        cache = _health_cache(server)
        assert cache["state"] == "stale" and "torch '1.13.1' -> " in cache["detail"], cache
        assert _valid_ply(_post(server, "a chair after a stale cache"))
    # both files are whole again and carry this torch's key
    for path in (first, second):
        header, _ = decode(path.read_bytes())
        assert header["key"]["torch"] != "1.13.1"
    figures.record("corrupt_cache_start_to_ready_s", ready_s)


def test_an_aot_preset_builds_its_packages_once_then_starts_ready_without_serving_early(
    presets: Path, tmp_path: Path, figures: Figures
) -> None:
    cache_dir = tmp_path / "warm-cache"
    # 1. a fresh box: answers uncompiled while the packages are built beside it
    started = time.monotonic()
    with _start_compiled("tinya", cache_dir) as server:
        first_s = time.monotonic() - started
        # served early: the compiled state was built beside the uncompiled one (its record
        # turns "done" just after the swap that made the endpoint ready)
        health = server.wait_health(lambda h: (h.get("switch") or {}).get("state") in ("done", "failed"))
        assert health["switch"]["state"] == "done" and "failed" not in health["message"], health
        assert [r["state"] for r in health["aot"]] == ["built", "built"], health["aot"]
        assert _valid_ply(_post(server, "a chair on AOT packages"))
    packages = sorted(p.name for p in (cache_dir / "aot").iterdir())
    assert sum(name.endswith(".aotc") for name in packages) == 2  # UNet, VAE encoder
    assert any(name.startswith("preset-tinya-") for name in packages)  # what the warm-up recorded
    # 2. the next start loads them: no uncompiled state first, no build beside it
    started = time.monotonic()
    with _start_compiled("tinya", cache_dir) as server:
        second_s = time.monotonic() - started
        health = server.health()
        assert health["switch"] is None and health["status"] == "ready", health
        assert "loading compiled packages" in health["phases"] and "compiling" not in health["phases"]
        assert {r["name"]: r["state"] for r in health["aot"]} == {"unet": "loaded", "vae-encoder": "loaded"}
        response = _post(server, "a chair on loaded packages")
        assert _valid_ply(response) and response.headers["x-preset"] == "tinya"
    assert second_s < first_s
    figures.record("aot_first_start_to_ready_s", first_s)
    figures.record("aot_second_start_to_ready_s", second_s)
