"""`gen404 compress | decompress | inspect` through the real dispatcher."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from engine.cli import main
from engine.formats import spz


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_compress_writes_the_reference_payload(vectors_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "h.spz"
    assert main(["compress", str(vectors_dir / "hamburger.ply"), "-o", str(out), "--level", "3"]) == 0
    assert (
        sha(spz.payload(out.read_bytes()))
        == "285c0966d481192e2b469b616eec9278b8dfe188e7b1082a2ab9c226e9a442d6"
    )
    assert "wrote" in capsys.readouterr().out


def test_decompress_with_normals_matches_reference(vectors_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.ply"
    assert main(["decompress", str(vectors_dir / "robocop.spz"), "-o", str(out), "--normals"]) == 0
    assert sha(out.read_bytes()) == "4e79f41502a34332890fe5f30335a79924b3a2ff0aa69e37a569fee6562c810b"


def test_decompress_default_output_name_and_no_normals(vectors_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "lut.spz"
    src.write_bytes((vectors_dir / "lut256_sh3.spz").read_bytes())
    assert main(["decompress", str(src)]) == 0
    assert (tmp_path / "lut.ply").read_bytes() == (vectors_dir / "lut256_sh3.ply").read_bytes()


def test_inspect_json_reports_count_degree_bbox_and_gate(vectors_dir: Path, capsys) -> None:
    assert main(["inspect", str(vectors_dir / "robocop.spz"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["format"], info["version"], info["splats"], info["sh_degree"]) == ("spz", 2, 267_776, 0)
    assert info["gate"] == {"passed": True, "reason": "ok: 267776 Gaussians, 0.0% transparent"}
    assert all(lo < hi for lo, hi in zip(info["bbox"]["min"], info["bbox"]["max"], strict=True))
    assert 0 < info["opacity"]["mean"] < 1 and info["opacity"]["max"] == 1.0  # +inf logits -> alpha 1
    assert 0 < info["scale"]["min"] <= info["scale"]["median"] <= info["scale"]["max"]


def test_inspect_text_shows_the_failing_gate_reason(vectors_dir: Path, capsys) -> None:
    assert main(["inspect", str(vectors_dir / "synth_sh3.ply")]) == 0
    out = capsys.readouterr().out
    assert "format    PLY" in out and "1,000, SH degree 3" in out
    assert "gate      FAIL: too few Gaussians: 1000 < 7000" in out


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        ("compress", b"ply\ncomment hi\n", "comments"),
        ("compress", b"", "empty"),
        ("decompress", b"ply\n", "not zstd"),
        ("decompress", b"\x28\xb5\x2f\xfd\x08" + bytes(20), "corrupt zstd"),
        ("inspect", b"hello", "unknown format"),
        ("inspect", b"ply\nformat ascii 1.0\n", "ascii"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(
    tmp_path: Path, capsys, command: str, content: bytes, message: str
) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(content)
    out = tmp_path / "out.bin"
    argv = [command, str(src)] + ([] if command == "inspect" else ["-o", str(out)])
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith(f"gen404 {command}: error:")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]  # no output, no temp file


def test_missing_input_file(tmp_path: Path, capsys) -> None:
    assert main(["inspect", str(tmp_path / "nope.spz")]) == 2
    assert "cannot read" in capsys.readouterr().err
