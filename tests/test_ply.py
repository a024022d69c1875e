"""Gaussian PLY: reading by property name, the 404 layout byte for byte, the subnet's refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.formats import ply, spz
from engine.formats.ply import MAX_VERTICES, PlyError, read_ply, write_ply
from engine.splats import Splats

FIELDS = ("positions", "sh_dc", "sh_rest", "opacities", "scales", "rotations")


@pytest.fixture(scope="module")
def hamburger(vectors_dir: Path) -> bytes:
    return (vectors_dir / "hamburger.ply").read_bytes()


@pytest.fixture(scope="module")
def synth(vectors_dir: Path) -> bytes:
    return (vectors_dir / "synth_sh3.ply").read_bytes()


def make_ply(names: list[str], rows: np.ndarray, header_extra: str = "", count: int | None = None) -> bytes:
    n = len(rows) if count is None else count
    lines = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    lines += [f"property float {name}" for name in names]
    head = "\n".join(lines) + "\n" + header_extra + "end_header\n"
    return head.encode() + np.asarray(rows, "<f4").tobytes()


BASE = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2"]
BASE += ["rot_0", "rot_1", "rot_2", "rot_3"]


def assert_same(a: Splats, b: Splats) -> None:
    for f in FIELDS:
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def test_reads_hamburger_without_normals(hamburger: bytes) -> None:
    s = read_ply(hamburger)
    assert len(s) == 52_709 and s.sh_degree == 0
    body = np.frombuffer(hamburger[hamburger.index(b"end_header\n") + 11 :], "<f4").reshape(-1, 14)
    np.testing.assert_array_equal(s.positions, body[:, 0:3])
    np.testing.assert_array_equal(s.sh_dc, body[:, 3:6])
    np.testing.assert_array_equal(s.opacities, body[:, 6])
    np.testing.assert_array_equal(s.rotations, body[:, 10:14])


def test_f_rest_is_channel_major_on_disk(synth: bytes) -> None:
    s = read_ply(synth)
    assert len(s) == 1000 and s.sh_degree == 3
    body = np.frombuffer(synth[synth.index(b"end_header\n") + 11 :], "<f4").reshape(1000, -1)
    k = 15
    for c in range(3):
        for j in (0, 7, 14):
            np.testing.assert_array_equal(s.sh_rest[:, j, c], body[:, 6 + c * k + j])


def test_write_reproduces_the_reference_layout(vectors_dir: Path, synth: bytes) -> None:
    # synth_sh3.roundtrip.ply was written by the reference (no normals): re-serialise byte for byte
    reference = (vectors_dir / "synth_sh3.roundtrip.ply").read_bytes()
    assert write_ply(read_ply(reference), include_normals=False) == reference
    # the source file has the generator's layout without normals too
    assert write_ply(read_ply(synth), include_normals=False) == synth


def test_write_with_normals_adds_zero_nx_ny_nz(hamburger: bytes) -> None:
    s = read_ply(hamburger)
    out = write_ply(s, include_normals=True)
    head, body = out.split(b"end_header\n")
    names = [line.split()[-1] for line in head.decode().splitlines() if line.startswith("property")]
    assert names == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"] + BASE[7:]
    table = np.frombuffer(body, "<f4").reshape(len(s), 17)
    assert not table[:, 3:6].any()
    assert_same(read_ply(out), s)


def test_properties_found_by_name_in_any_order_with_extras() -> None:
    rng = np.random.default_rng(1)
    names = BASE + [f"f_rest_{i}" for i in range(9)]
    rows = rng.normal(size=(5, len(names))).astype(np.float32)
    reference = read_ply(make_ply(names, rows))
    order = rng.permutation(len(names))
    shuffled_names = [names[i] for i in order] + ["nx", "ny", "nz", "mystery"]
    shuffled_rows = np.concatenate([rows[:, order], rng.normal(size=(5, 4)).astype(np.float32)], axis=1)
    assert_same(read_ply(make_ply(shuffled_names, shuffled_rows)), reference)
    assert reference.sh_degree == 1


def test_trailing_bytes_are_ignored(hamburger: bytes) -> None:
    assert_same(read_ply(hamburger + b"\x00garbage" * 10), read_ply(hamburger))


def test_copy_gives_writable_independent_arrays(hamburger: bytes) -> None:
    s = read_ply(hamburger)
    s.positions[0] = 99.0
    assert read_ply(hamburger).positions[0, 0] != 99.0
    one = read_ply(make_ply(BASE, np.ones((1, 14))))  # a 1-row slice is "contiguous": still copied
    for f in FIELDS:
        arr = getattr(one, f)
        assert arr.flags.c_contiguous and arr.flags.writeable, f
    view = read_ply(hamburger, copy=False)
    assert not view.positions.flags.writeable


def test_ply_round_trip_through_spz_keeps_reader_and_writer_consistent(vectors_dir: Path) -> None:
    out = spz.decompress((vectors_dir / "robocop.spz").read_bytes(), include_normals=False)
    assert write_ply(read_ply(out), include_normals=False) == out


GOOD_HEAD = "ply\nformat binary_little_endian 1.0\nelement vertex 1\n"
PROPS = "".join(f"property float {n}\n" for n in BASE)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x89PNG\r\n", "not a PLY"),
        (b"ply\ncomment made by x\nformat binary_little_endian 1.0\n", "comments"),
        ((GOOD_HEAD + "comment hi\n" + PROPS + "end_header\n").encode() + bytes(56), "comments"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nend_header\n1 2 3\n", "ascii"),
        (b"ply\nformat binary_big_endian 1.0\nelement vertex 1\n", "big-endian"),
        (
            (GOOD_HEAD + PROPS.replace("float opacity", "double opacity") + "end_header\n").encode(),
            "'double'",
        ),
        ((GOOD_HEAD + "property uchar red\n" + PROPS + "end_header\n").encode(), "'uchar'"),
        (
            (GOOD_HEAD + PROPS.replace("property float rot_3\n", "") + "end_header\n").encode(),
            "missing .*rot_3",
        ),
        ((GOOD_HEAD + PROPS + "end_header\n").encode() + bytes(55), "truncated body"),
        ((GOOD_HEAD + PROPS).encode(), "truncated header"),
        (make_ply(BASE, np.zeros((1, 14)), count=0), "vertex count 0"),
        (make_ply(BASE, np.zeros((1, 14)), count=MAX_VERTICES + 1), "vertex count 10485761"),
        (make_ply(BASE, np.zeros((1, 14)), count=-3), "vertex count -3"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex lots\n", "invalid vertex count"),
        (make_ply([*BASE, "f_rest_0", "f_rest_1"], np.zeros((1, 16))), "divisible by 3"),
        (make_ply([*BASE, *(f"f_rest_{i}" for i in range(6))], np.zeros((1, 20))), "no SH degree"),
        (make_ply([*BASE, "x"], np.zeros((1, 15))), "duplicate"),
        ((GOOD_HEAD + PROPS + "element face 1\nend_header\n").encode() + bytes(56), "extra element"),
        (
            (GOOD_HEAD + "".join(f"property float p{i}\n" for i in range(70_000))).encode(),
            "end_header",
        ),
    ],
)
def test_refuses_what_the_subnet_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(PlyError, match=reason):
        read_ply(data)


def test_huge_vertex_claim_is_refused_before_allocating() -> None:
    # MAX_VERTICES is allowed by count, but the body is absent: refused by size, nothing allocated
    data = make_ply(BASE, np.zeros((1, 14)), count=MAX_VERTICES)
    with pytest.raises(PlyError, match=f"truncated body: {MAX_VERTICES} vertices"):
        read_ply(data)


def test_plyerror_is_a_valueerror() -> None:
    assert issubclass(PlyError, ValueError)


_HEADER_LINES = st.sampled_from(
    [f"property float {n}" for n in [*BASE, "f_rest_0", "f_rest_1", "f_rest_2", "nx", "p"]]
    + ["property double x", "comment x", "element vertex 2", "element face 1", "property float", ""]
)


def _near_valid(count: int, lines: list[str], seed: int, extra: int) -> bytes:
    """A header from `lines` and a random body sized for it, give or take `extra` bytes."""
    head = f"ply\nformat binary_little_endian 1.0\nelement vertex {count}\n" + "".join(
        x + "\n" for x in lines
    )
    size = max(0, min(count, 20) * len(lines) * 4 + extra)  # huge counts get a short body
    return head.encode() + b"end_header\n" + np.random.default_rng(seed).bytes(size)


_PLY_INPUTS = st.one_of(
    st.binary(max_size=400),
    st.binary(max_size=400).map(lambda b: b"ply\n" + b),
    st.builds(
        _near_valid,
        count=st.one_of(st.integers(1, 20), st.integers(-2, 2**31)),
        lines=st.one_of(
            st.permutations([f"property float {n}" for n in BASE]),
            st.lists(_HEADER_LINES, max_size=24, unique=True).map(
                lambda x: [f"property float {n}" for n in BASE] + x
            ),
            st.lists(_HEADER_LINES, max_size=20),
        ),
        seed=st.integers(0, 2**32 - 1),
        extra=st.one_of(st.just(0), st.integers(-60, 60)),
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None)
@given(_PLY_INPUTS)
def test_read_ply_never_crashes(data: bytes) -> None:
    try:
        s = read_ply(data)
    except PlyError as exc:
        assert str(exc)
    else:
        assert len(s) > 0
        assert ply.write_ply(s, include_normals=False)
