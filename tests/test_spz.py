"""SPZ (404 variant): byte-exact with the subnet's reference codec, and safe on hostile input.

Expected hashes are the "what must match" table of the subnet vectors' README (tests/vectors/README.md names the files).
"""

from __future__ import annotations

import hashlib
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.formats import ply, spz
from engine.formats.spz import HEADER, MAGIC, SpzError
from engine.splats import Splats

ROBOCOP_PAYLOAD = "35c2b3539614b003a02ed492b480d331a41a991af495845f87f5e63d4250b8d7"
HAMBURGER_PAYLOAD = "285c0966d481192e2b469b616eec9278b8dfe188e7b1082a2ab9c226e9a442d6"
HAMBURGER_DECOMPRESSED = "3f651e332c7a4d827d84ad101b40354f022e221ed39fa66bc9fdaf2f4c198e3e"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def vec(vectors_dir: Path) -> Callable[[str], bytes]:
    cache: dict[str, bytes] = {}

    def read(name: str) -> bytes:
        if name not in cache:
            cache[name] = (vectors_dir / name).read_bytes()
        return cache[name]

    return read


def zstd(raw: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(raw)


def header(n: int, degree: int = 0, version: int = 2, magic: int = MAGIC, frac: int = 12) -> bytes:
    return HEADER.pack(magic, version, n, degree, frac, 0, 0)


# ---------------------------------------------------------------- the README's "what must match" table


@pytest.mark.parametrize("level", [1, 3])
def test_compress_hamburger_payload(vec, level: int) -> None:
    p = spz.payload(spz.compress(vec("hamburger.ply"), compression_level=level))
    assert len(p) == 1_001_487
    assert sha(p) == HAMBURGER_PAYLOAD


def test_compress_synth_sh3_payload(vec) -> None:
    p = spz.payload(spz.compress(vec("synth_sh3.ply")))
    assert len(p) == 64_016
    assert sha(p) == "a72367e77eefee4e2f60de03dbecc49b3c0cef8aa8df529c9dd8a69aa1da3f4e"
    assert p == spz.payload(vec("synth_sh3.spz"))  # and the reference's own compression agrees


def test_payload_of_robocop_and_lut256(vec) -> None:
    p = spz.payload(vec("robocop.spz"))
    assert (len(p), sha(p)) == (5_087_760, ROBOCOP_PAYLOAD)
    p = spz.payload(vec("lut256_sh3.spz"))
    assert (len(p), sha(p)) == (16_400, "97118d8fb2d30b05e0c6c426cc6a48249452b6def942f8f5f41a932f46574bbc")


@pytest.mark.parametrize(
    ("normals", "size", "digest"),
    [
        (False, 14_995_818, "81c6e14fbd08bd53babc9d948548ba5f2d72351596381ef725521cf5d545475a"),
        (True, 18_209_184, "4e79f41502a34332890fe5f30335a79924b3a2ff0aa69e37a569fee6562c810b"),
    ],
)
def test_decompress_robocop(vec, normals: bool, size: int, digest: str) -> None:
    out = spz.decompress(vec("robocop.spz"), include_normals=normals)
    assert (len(out), sha(out)) == (size, digest)


def test_decompress_hamburger(vec) -> None:
    out = spz.decompress(vec("hamburger.spz"), False)
    assert (len(out), sha(out)) == (2_952_065, HAMBURGER_DECOMPRESSED)


@pytest.mark.parametrize("name", ["synth_sh3", "lut256_sh3"])
def test_decompress_equals_reference_ply(vec, name: str) -> None:
    expected = vec("synth_sh3.roundtrip.ply" if name == "synth_sh3" else "lut256_sh3.ply")
    assert spz.decompress(vec(f"{name}.spz"), include_normals=False) == expected


def test_block_coding_matches_for_any_block_size(vec, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spz, "ENCODE_ROWS", 7)  # many blocks and a partial last one, SH degree 3
    monkeypatch.setattr(spz, "DECODE_ROWS", 7)
    assert spz.payload(spz.compress(vec("synth_sh3.ply"))) == spz.payload(vec("synth_sh3.spz"))
    assert spz.decompress(vec("synth_sh3.spz"), include_normals=False) == vec("synth_sh3.roundtrip.ply")
    assert spz.decompress(vec("lut256_sh3.spz"), include_normals=False) == vec("lut256_sh3.ply")


# ---------------------------------------------------------------- round trips


def test_our_compress_then_decompress_equals_reference_decompression(vec) -> None:
    assert sha(spz.decompress(spz.compress(vec("hamburger.ply")), False)) == HAMBURGER_DECOMPRESSED
    assert spz.decompress(spz.compress(vec("synth_sh3.ply")), False) == vec("synth_sh3.roundtrip.ply")


def test_decompress_then_compress_reproduces_robocop_payload(vec) -> None:
    ply_bytes = spz.decompress(vec("robocop.spz"), include_normals=True)
    assert sha(spz.payload(spz.compress(ply_bytes))) == ROBOCOP_PAYLOAD


def test_array_level_api_matches_the_ply_path(vec) -> None:
    splats = spz.spz_to_splats(vec("lut256_sh3.spz"))
    expected = ply.read_ply(vec("lut256_sh3.ply"))
    for field in ("positions", "sh_dc", "sh_rest", "opacities", "scales", "rotations"):
        np.testing.assert_array_equal(getattr(splats, field), getattr(expected, field), err_msg=field)
    assert spz.payload(spz.splats_to_spz(spz.spz_to_splats(vec("robocop.spz")))) == spz.payload(
        vec("robocop.spz")
    )


def test_compress_honours_level_and_writes_content_size(vec) -> None:
    ply_bytes = vec("hamburger.ply")
    fast, small = spz.compress(ply_bytes, 1), spz.compress(ply_bytes, 9)
    assert len(small) < len(fast)
    # the reference decoder sizes its buffer from the frame's content size: it must be there
    assert zstandard.get_frame_parameters(fast).content_size == 1_001_487


# ---------------------------------------------------------------- reference behaviour worth matching


def test_reference_quirks_on_robocop(vec) -> None:
    s = spz.spz_to_splats(vec("robocop.spz"))
    assert len(s) == 267_776 and s.sh_degree == 0
    assert int(np.isposinf(s.opacities).sum()) == 62_319  # alpha byte 255 decodes to +inf


def test_rotation_zero_component_and_w_from_xyz() -> None:
    s = Splats.empty(1)  # identity quaternion (1, 0, 0, 0)
    out = spz.spz_to_splats(spz.splats_to_spz(s)).rotations[0]
    f = np.float32
    x = f(128) * (f(1) / f(127.5)) - f(1)  # zero encodes as byte 128: +0.0039216, not 0
    assert out[1:].tolist() == [x, x, x] and abs(x - 0.0039216) < 1e-7
    assert out[0] == np.sqrt(f(1) - ((x * x + x * x) + x * x))  # w from xyz, no renormalisation


def test_position_rounding_half_away_and_wrapping() -> None:
    s = Splats.empty(4)
    unit = 1 / 4096
    # +-0.5 units round away from zero, 2.5 units to 3 (half-even would give 2),
    # and 2048 = 2^23 units wraps to -2048
    s.positions[:, 0] = [0.5 * unit, -0.5 * unit, 2.5 * unit, 2048.0]
    out = spz.spz_to_splats(spz.splats_to_spz(s)).positions[:, 0]
    assert out.tolist() == [unit, -unit, 3 * unit, -2048.0]


def test_scale_clamping_and_sh_ties_round_up() -> None:
    s = Splats.empty(1, sh_degree=2)
    s.scales[0] = [-50.0, 50.0, 0.0]  # clamp to bytes 0 and 255
    s.sh_rest[0, 0, 0] = 4 / 128  # q = 132: a tie between buckets 128 and 136 goes up
    s.sh_rest[0, 3, 0] = 8 / 128  # 4-bit bucket of 16: q = 136 ties up to 144
    out = spz.spz_to_splats(spz.splats_to_spz(s))
    assert out.scales[0].tolist() == [-10.0, 255 / 16 - 10, 0.0]
    assert out.sh_rest[0, 0, 0] == (136 - 128) / 128
    assert out.sh_rest[0, 3, 0] == (144 - 128) / 128


def test_version_1_float16_positions_are_accepted(vec, monkeypatch: pytest.MonkeyPatch) -> None:
    v2 = spz.payload(vec("lut256_sh3.spz"))
    n = 256
    half = np.linspace(-3, 3, n * 3).astype("<f2")
    half[5] = np.frombuffer(struct.pack("<H", 0x7E01), "<f2")[0]  # a NaN with a payload
    body = half.tobytes() + v2[16 + 9 * n :]
    s = spz.spz_to_splats(zstd(header(n, degree=3, version=1) + body))
    expected_pos = half.astype(np.float32).reshape(n, 3)
    expected_pos[1, 2] = np.nan
    np.testing.assert_array_equal(s.positions, expected_pos)
    assert s.positions.view(np.uint32)[1, 2] == 0x7FC00000  # canonical quiet NaN, as the reference
    np.testing.assert_array_equal(s.rotations, spz.spz_to_splats(vec("lut256_sh3.spz")).rotations)
    # the PLY path (block-wise) reads the same float16 positions, blocks not aligned to 256
    monkeypatch.setattr(spz, "DECODE_ROWS", 100)
    out = ply.read_ply(spz.decompress(zstd(header(n, degree=3, version=1) + body), include_normals=True))
    np.testing.assert_array_equal(out.positions, expected_pos)


# ---------------------------------------------------------------- hostile input


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (b"\x00" * 64, "not zstd"),
        (b"ply\nformat binary_little_endian 1.0\n", "not zstd"),
        (zstd(header(10, magic=0x12345678) + bytes(190)), "bad magic"),
        (zstd(header(10, version=3) + bytes(190)), "unsupported version 3"),
        (zstd(header(10, version=0) + bytes(190)), "unsupported version 0"),
        (zstd(header(10, degree=4) + bytes(1000)), "SH degree 4"),
        (zstd(header(10_000_001) + bytes(19)), "too many points"),
        (zstd(header(0)), "no points"),
        (zstd(header(10) + bytes(189)), "truncated body"),
        (zstd(header(1)[:10]), "truncated header"),
        (zstd(b""), "truncated header"),
        (b"\x28\xb5\x2f\xfd\x08" + bytes(32), "corrupt zstd"),
        (b"\x28\xb5\x2f\xfd\x00\x00\xff\xff\xff" + bytes(32), "corrupt zstd"),
    ],
)
def test_hostile_input_gives_a_clear_error(data: bytes, reason: str) -> None:
    with pytest.raises(SpzError, match=reason):
        spz.decompress(data, include_normals=False)


def test_truncated_file_is_refused(vec) -> None:
    data = vec("hamburger.spz")
    for cut in (5, 100, len(data) // 2, len(data) - 1):
        with pytest.raises(SpzError, match="truncated|corrupt"):
            spz.spz_to_splats(data[:cut])


def test_random_bytes_are_refused() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        with pytest.raises(SpzError):
            spz.decompress(rng.bytes(int(rng.integers(0, 5000))), False)


def test_zstd_bomb_is_bounded() -> None:
    # a payload header claiming 9.9M SH-3 points (~630 MB), in a frame claiming 2^60 bytes of content
    frame = zstandard.ZstdCompressor(level=1, write_content_size=False).compress(
        header(9_900_000, 3) + bytes(4096)
    )
    size = zstandard.frame_header_size(frame)
    assert frame[4] == 0  # descriptor: no content size, not single-segment (window byte follows)
    bomb = frame[:4] + b"\xc0" + frame[5:size] + struct.pack("<Q", 1 << 60) + frame[size:]
    assert zstandard.get_frame_parameters(bomb).content_size == 1 << 60
    assert len(bomb) < 100
    tracemalloc.start()
    try:
        with pytest.raises(SpzError, match="truncated body|corrupt"):
            spz.decompress(bomb, include_normals=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40 << 20  # bounded by the read chunk, not by either claim


def test_compress_refuses_bad_ply_with_spz_error() -> None:
    with pytest.raises(SpzError, match="bad PLY: .*comment"):
        spz.compress(b"ply\ncomment made by hand\nformat binary_little_endian 1.0\n")
    with pytest.raises(SpzError, match="bad PLY: empty"):
        spz.compress(b"")


def _near_valid(n: int, degree: int, version: int, frac: int, seed: int, cut: int, flip: int) -> bytes:
    """A zstd frame around a plausible header and random attribute bytes, then damaged a little:
    `cut` drops bytes from the payload's end, `flip` overwrites one header byte."""
    per_point = (6 if version == 1 else 9) + 10 + 3 * ((degree + 1) ** 2 - 1)
    raw = bytearray(header(n, degree, version, frac=frac) + np.random.default_rng(seed).bytes(n * per_point))
    if flip:
        raw[flip % 16] = seed % 256
    return zstd(bytes(raw[: max(0, len(raw) - cut)]))


_SPZ_INPUTS = st.one_of(
    st.binary(max_size=600),
    st.binary(max_size=600).map(lambda b: b"\x28\xb5\x2f\xfd" + b),
    st.builds(
        _near_valid,
        n=st.integers(1, 24),
        degree=st.integers(0, 3),
        version=st.sampled_from([1, 2, 2]),
        frac=st.one_of(st.just(12), st.integers(0, 255)),
        seed=st.integers(0, 2**32 - 1),
        cut=st.one_of(st.just(0), st.integers(0, 200)),
        flip=st.one_of(st.just(0), st.integers(0, 15)),
    ),
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
@given(_SPZ_INPUTS)
def test_decompress_never_crashes(data: bytes) -> None:
    try:
        out = spz.decompress(data, include_normals=False)
    except SpzError as exc:
        assert str(exc)
    else:
        assert len(ply.read_ply(out)) > 0  # whatever decodes is a valid PLY


def test_non_finite_and_huge_values_encode_like_x86_without_warnings() -> None:
    s = Splats.empty(4, sh_degree=1)
    s.positions[:, 0] = [np.nan, np.inf, 1e10, -1e10]  # int32 cast -> INT_MIN -> bytes 0 0 0
    s.opacities[:] = [np.nan, np.inf, -np.inf, 1e30]
    s.rotations[0] = 0.0  # zero quaternion: 0/0 -> NaN -> byte 0 -> x = -1
    s.sh_rest[:, 0, 0] = [np.nan, np.inf, -np.inf, 3e9]
    with np.errstate(all="raise"):
        out = spz.spz_to_splats(spz.splats_to_spz(s))
    assert out.positions[:, 0].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert out.opacities.tolist() == [-np.inf, np.inf, -np.inf, np.inf]  # NaN -> byte 0
    assert out.rotations[0, 1:].tolist() == [-1.0, -1.0, -1.0] and out.rotations[0, 0] == 0.0
    assert out.sh_rest[:, 0, 0].tolist() == [-1.0] * 4  # int cast overflow -> INT_MIN -> clamps to 0


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.integers(1, 40), st.integers(0, 3), st.integers(0, 2**32 - 1))
def test_any_float_bits_encode_and_decode(n: int, degree: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    k = (degree + 1) ** 2 - 1

    def floats(*shape: int) -> np.ndarray:  # arbitrary bit patterns: NaNs, infs, subnormals, huge
        return rng.integers(0, 2**32, size=shape, dtype=np.uint32).view(np.float32)

    s = Splats(floats(n, 3), floats(n, 3), floats(n, k, 3), floats(n), floats(n, 3), floats(n, 4))
    with np.errstate(all="raise"):
        out = spz.spz_to_splats(spz.splats_to_spz(s))
    assert len(out) == n and out.sh_degree == degree
    assert np.isfinite(out.positions).all() and (np.abs(out.positions) <= 2048).all()
