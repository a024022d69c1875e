"""engine/warm_cache.py: compiled artefacts saved after a warm-up and loaded by the next start;
stale (another torch, GPU, preset shape) and corrupt files are detected, removed and reported."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path

import pytest
import torch

from engine import warm_cache
from engine.presets import load_preset
from engine.warm_cache import MAGIC, CacheCorrupt, WarmCache, decode, encode


@pytest.fixture()
def preset():  # noqa: ANN201
    return dataclasses.replace(load_preset("smoke"), name="wc_test", compile=True)


def _compile_something() -> None:
    """A real inductor compile on the CPU (C++ kernel), so save_cache_artifacts has artefacts."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x) * 2 + x.cos()

    compiled = torch.compile(f, dynamic=False)
    x = torch.arange(37, dtype=torch.float32)
    assert torch.allclose(compiled(x), f(x))


def test_round_trip_of_real_artefacts_then_hit(tmp_path: Path, preset) -> None:  # noqa: ANN001
    cache = WarmCache(preset, "cpu", root=tmp_path)
    assert cache.load().state == "miss"
    torch._dynamo.reset()
    _compile_something()
    outcome = cache.save()
    assert outcome.startswith("saved ") and cache.path.is_file(), outcome
    header, payload = decode(cache.path.read_bytes())
    assert header["key"] == cache.key and len(payload) > 0
    assert (
        header["key"]["torch"] == torch.__version__ and header["key"]["preset"]["ref_size"] == preset.ref_size
    )

    report = WarmCache(preset, "cpu", root=tmp_path).load()
    assert report.state == "hit", report
    assert cache.path.is_file()


def test_corrupt_file_is_reported_removed_and_not_fatal(tmp_path: Path, preset) -> None:  # noqa: ANN001
    cache = WarmCache(preset, "cpu", root=tmp_path)
    good = encode(cache.key, b"x" * 100)
    flipped = bytearray(good)
    flipped[-10] ^= 0xFF  # one bit of the payload
    for data in (b"", b"garbage", MAGIC + struct.pack("<I", 5) + b"{not", bytes(flipped), good[:-1]):
        cache.path.write_bytes(data)
        report = cache.load()
        assert report.state == "corrupt", (data[:20], report)
        assert "removed" in report.detail and not cache.path.exists()


def test_payload_torch_refuses_is_corrupt(tmp_path: Path, preset) -> None:  # noqa: ANN001
    cache = WarmCache(preset, "cpu", root=tmp_path)
    cache.path.write_bytes(encode(cache.key, b"not a torch cache artefact"))  # checksum is right
    report = cache.load()
    assert report.state == "corrupt" and "torch refused it" in report.detail and not cache.path.exists()


def test_cache_from_another_torch_or_preset_shape_is_stale(tmp_path: Path, preset) -> None:  # noqa: ANN001
    cache = WarmCache(preset, "cpu", root=tmp_path)
    other_torch = {**cache.key, "torch": "2.0.0"}
    cache.path.write_bytes(encode(other_torch, b"artefacts"))
    report = cache.load()
    assert report.state == "stale" and "torch '2.0.0' -> " in report.detail and not cache.path.exists()

    bigger = WarmCache(dataclasses.replace(preset, ref_size=64), "cpu", root=tmp_path)
    assert bigger.path == cache.path  # one file per preset and device kind
    cache.path.write_bytes(encode(cache.key, b"artefacts"))
    report = bigger.load()
    assert report.state == "stale" and "preset" in report.detail


def test_decode_checks_magic_header_and_checksum() -> None:
    data = encode({"a": 1}, b"payload")
    header, payload = decode(data)
    assert payload == b"payload" and header["key"] == {"a": 1}
    assert json.loads(data[len(MAGIC) + 4 : len(MAGIC) + 4 + struct.unpack_from("<I", data, len(MAGIC))[0]])
    with pytest.raises(CacheCorrupt, match="magic"):
        decode(b"XXXXXXXX" + data[8:])
    with pytest.raises(CacheCorrupt, match="checksum"):
        decode(data + b"!")


def test_cache_dir_follows_the_state_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("GEN404_WARM_CACHE_DIR", raising=False)
    monkeypatch.setenv("GEN404_STATE_DIR", str(tmp_path / "state"))
    assert warm_cache.cache_dir() == tmp_path / "state" / "warm-cache"
    monkeypatch.setenv("GEN404_WARM_CACHE_DIR", str(tmp_path / "wc"))
    assert warm_cache.cache_dir() == tmp_path / "wc"


def test_unwritable_cache_dir_is_reported_not_raised(tmp_path: Path, preset) -> None:  # noqa: ANN001
    blocker = tmp_path / "file"
    blocker.write_text("a regular file where the cache directory should be")
    cache = WarmCache(preset, "cpu", root=blocker / "warm-cache")
    report = cache.load()
    assert report.state == "disabled" and "cannot read" in report.detail
    torch._dynamo.reset()
    _compile_something()
    assert cache.save().startswith("not saved")


def test_matches_reads_only_the_header_and_touches_nothing(tmp_path: Path, preset) -> None:  # noqa: ANN001
    # what a start asks before it spawns compile helpers: is this machine's cache on disk?
    cache = WarmCache(preset, "cpu", root=tmp_path)
    assert not cache.matches()  # no file
    cache.path.write_bytes(encode(dict(cache.key, torch="0.0"), b"artefacts"))
    assert not cache.matches() and cache.path.exists()  # another setup's file, left for load()
    cache.path.write_bytes(b"GEN404W")
    assert not cache.matches()  # not a cache file
    data = encode(cache.key, b"\0" * 100_000)
    assert len(data) - 100_000 < warm_cache.HEADER_MAX  # the header fits what matches() reads
    cache.path.write_bytes(data[:-1])  # a payload failing its checksum is load()'s to find
    assert cache.matches() and cache.path.read_bytes() == data[:-1]
