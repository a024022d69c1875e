"""SPZ, the 404 variant (zstd, not gzip): byte-exact with the subnet's pyspz, in numpy.

Payload = 16-byte header + attribute-major arrays (positions, alphas, colours, scales,
rotations, SH); see 404-reference section 3. The arithmetic below reproduces the reference's
float32 C++ expressions operation by operation (same order, same rounding), because the
validators decode with that codec and payloads are compared byte for byte. Decoding is a
table look-up per byte: each 256-entry table is computed once with the reference's formula.

Hostile input: sizes are checked against the header before anything is allocated, and the
zstd stream is read incrementally up to the size the header implies (the frame's own
content-size field is never trusted), so a bomb costs at most what it really decompresses.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from engine.formats import ply
from engine.splats import Splats, sh_coeffs_for_degree

MAGIC = 0x5053474E  # "NGSP"
HEADER = struct.Struct("<IIIBBBB")
VERSION = 2
FRACTIONAL_BITS = 12
FLAG_ANTIALIASED = 0x1
MAX_POINTS = 10_000_000  # the reference decoder's limit
ZSTD_FRAME_MAGIC = b"\x28\xb5\x2f\xfd"
READ_CHUNK = 16 << 20  # decompress in pieces so memory follows real output, not claims

_f32 = np.float32
COLOR_SCALE = _f32(0.15)
_COLOR_MUL = _f32(COLOR_SCALE * _f32(255.0))  # (colorScale * 255.0f), folded in float32
_INT32_LIMIT = _f32(2.0**31)


class SpzError(RuntimeError):
    """Compression or decompression failed; the message names the cause."""


@dataclass(frozen=True)
class SpzHeader:
    raw: bytes  # the 16 bytes as read
    version: int
    num_points: int
    sh_degree: int
    fractional_bits: int
    flags: int

    @property
    def position_bytes(self) -> int:
        return 6 if self.version == 1 else 9  # version 1: three float16

    @property
    def body_size(self) -> int:
        per_point = self.position_bytes + 1 + 3 + 3 + 3 + 3 * sh_coeffs_for_degree(self.sh_degree)
        return self.num_points * per_point


def parse_header(raw: bytes) -> SpzHeader:
    """Validate the 16-byte payload header in the reference's order."""
    if len(raw) < HEADER.size:
        raise SpzError(f"truncated header: {len(raw)} of {HEADER.size} bytes")
    magic, version, n, degree, frac, flags, _ = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise SpzError(f"bad magic 0x{magic:08x} (expected 0x{MAGIC:08x} 'NGSP')")
    if version not in (1, 2):
        raise SpzError(f"unsupported version {version} (1 and 2 are supported)")
    if n > MAX_POINTS:
        raise SpzError(f"too many points: {n} > {MAX_POINTS}")
    if degree > 3:
        raise SpzError(f"unsupported SH degree {degree} (0..3)")
    if n == 0:
        raise SpzError("no points")
    return SpzHeader(bytes(raw[: HEADER.size]), version, n, degree, frac, flags)


# ---------------------------------------------------------------- zstd


def _read_exact(reader: zstandard.ZstdDecompressionReader, size: int, what: str) -> bytes:
    parts: list[bytes] = []
    got = 0
    while got < size:
        piece = reader.read(min(size - got, READ_CHUNK))
        if not piece:
            raise SpzError(f"truncated {what}: decompressed {got} of {size} bytes")
        parts.append(piece)
        got += len(piece)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def read_payload(data: bytes) -> tuple[SpzHeader, bytes]:
    """zstd-decode just the header and the body it implies (trailing payload bytes ignored)."""
    if len(data) < 4:
        raise SpzError(f"input too short for a zstd frame ({len(data)} bytes)")
    if bytes(data[:4]) != ZSTD_FRAME_MAGIC:
        raise SpzError("not zstd: the input does not start with a zstd frame magic")
    try:
        with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=False) as reader:
            header = parse_header(_read_exact(reader, HEADER.size, "header"))
            body = _read_exact(reader, header.body_size, "body")
    except zstandard.ZstdError as exc:
        raise SpzError(f"corrupt zstd stream: {exc}") from None
    return header, body


def payload(data: bytes) -> bytes:
    """The decompressed stream (header + arrays) of an SPZ file, validated and bounded."""
    header, body = read_payload(data)
    return header.raw + body


def _zstd_compress(raw: bytes | np.ndarray, compression_level: int, workers: int) -> bytes:
    level = min(max(int(compression_level), 1), 22)  # the reference raises levels below 1 to 1
    threads = -1 if workers < 0 else (workers if workers > 1 else 0)
    try:
        return zstandard.ZstdCompressor(level=level, threads=threads, write_content_size=True).compress(
            raw if isinstance(raw, bytes) else raw.data
        )
    except zstandard.ZstdError as exc:
        raise SpzError(f"zstd compression failed: {exc}") from None


# ---------------------------------------------------------------- encoding


def _round_half_away(x: np.ndarray) -> np.ndarray:
    """std::round on float32, exactly: floor of |x| plus one when the fraction is >= 0.5."""
    a = np.abs(x)
    r = np.floor(a)
    r += (a - r) >= 0.5  # a - floor(a) is exact in float32
    return np.copysign(r, x, out=r)


def _to_uint8(x: np.ndarray) -> np.ndarray:
    """The reference's toUint8: round half away, clamp to 0..255; NaN gives 0 as on x86."""
    f = np.floor(x)
    f += (x - f) >= 0.5  # half up; differs from half away only below zero, which clamps to 0
    np.fmax(f, 0, out=f)  # fmax (unlike clip) maps NaN to 0
    np.fmin(f, 255, out=f)
    return f.astype(np.uint8)


def _fixed24(p: np.ndarray, frac_bits: int) -> np.ndarray:
    """(N, 3) float32 -> (N, 9) bytes: 24-bit two's complement of round(p * 2^frac), wrapping."""
    r = _round_half_away(p * _f32(1 << frac_bits))
    # static_cast<int32_t> of NaN or an out-of-range value is INT_MIN on x86, i.e. bytes 0 0 0
    if not np.abs(r).max(initial=0) < _INT32_LIMIT:  # rare: only then pay for the mask (NaN lands here too)
        r[~((r >= -_INT32_LIMIT) & (r < _INT32_LIMIT))] = -_INT32_LIMIT
    b = r.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3]
    return b.reshape(len(p), 9)


def _quantize_sh(x: np.ndarray, bucket: int) -> np.ndarray:
    """quantizeSH: q = int(round(x*128) + 128), snapped to a bucket centre (ties up), clamped."""
    q = _round_half_away(x * _f32(128.0)) + _f32(128.0)
    out_of_int = None
    if not np.abs(q).max(initial=0) < _INT32_LIMIT:  # the int cast gives INT_MIN, which clamps to 0
        out_of_int = ~((q >= -_INT32_LIMIT) & (q < _INT32_LIMIT))
    q += _f32(bucket // 2)
    q /= _f32(bucket)
    np.floor(q, out=q)
    q *= _f32(bucket)
    if out_of_int is not None:
        q[out_of_int] = 0
    return _to_uint8(q)


def _encode_rotations(rot_wxyz: np.ndarray) -> np.ndarray:
    """Normalise, flip so w >= 0, store x y z as toUint8(q * 127.5 + 127.5), as the reference."""
    q = rot_wxyz[:, [1, 2, 3, 0]].T.copy()  # (4, N) contiguous rows x y z w: fast row ops
    x, y, z, w = q
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = x * x
        norm += y * y
        norm += z * z
        norm += w * w  # ((x*x + y*y) + z*z) + w*w, the reference's order
        np.sqrt(norm, out=norm)
        q /= norm  # divide (not multiply by 1/norm): bit-exact with the reference
        sign = np.where(w < 0, _f32(-127.5), _f32(127.5))  # -0.0 and NaN count as positive
        xyz = q[:3]
        xyz *= sign
        xyz += _f32(127.5)
    return _to_uint8(xyz).T


def _encode_alphas(opacity: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        e = np.exp(-opacity.astype(np.float64)).astype(np.float32)  # float64 exp then cast, as measured
        s = _f32(1.0) / (_f32(1.0) + e)
    return _to_uint8(s * _f32(255.0))


ENCODE_ROWS = 16384  # rows encoded at a time: the temporaries of each block stay in cache


def pack(splats: Splats, antialiased: bool = False) -> np.ndarray:
    """The uncompressed payload for `splats` (what the reference feeds to zstd), as uint8."""
    n, degree = len(splats), splats.sh_degree
    if n == 0:
        raise SpzError("no points to compress")
    if n > MAX_POINTS:
        raise SpzError(f"too many points: {n} > {MAX_POINTS} (the reference decoder refuses them)")
    k = sh_coeffs_for_degree(degree)
    out = np.empty(HEADER.size + n * (19 + 3 * k), np.uint8)
    flags = FLAG_ANTIALIASED if antialiased else 0
    out[: HEADER.size] = np.frombuffer(
        HEADER.pack(MAGIC, VERSION, n, degree, FRACTIONAL_BITS, flags, 0), np.uint8
    )
    sections = np.split(out[HEADER.size :], np.cumsum([9 * n, n, 3 * n, 3 * n, 3 * n]))
    pos, alpha, color, scale, rot = (a.reshape(n, -1) for a in sections[:5])
    sh = sections[5].reshape(n, k, 3)
    fields = ("positions", "sh_dc", "sh_rest", "opacities", "scales", "rotations")
    f = {name: np.asarray(getattr(splats, name), np.float32) for name in fields}
    with np.errstate(all="ignore"):  # NaN/inf/overflow follow the reference's x86 semantics
        for start in range(0, n, ENCODE_ROWS):
            r = slice(start, start + ENCODE_ROWS)
            pos[r] = _fixed24(f["positions"][r], FRACTIONAL_BITS)
            alpha[r, 0] = _encode_alphas(f["opacities"][r])
            color[r] = _to_uint8(f["sh_dc"][r] * _COLOR_MUL + _f32(127.5))
            scale[r] = _to_uint8((f["scales"][r] + _f32(10.0)) * _f32(16.0))
            rot[r] = _encode_rotations(f["rotations"][r])
            if k:
                sh[r, :3] = _quantize_sh(f["sh_rest"][r, :3], 8)  # degree 1: 5 bits
                sh[r, 3:] = _quantize_sh(f["sh_rest"][r, 3:], 16)  # higher: 4 bits
    return out


def splats_to_spz(splats: Splats, compression_level: int = 1, *, level: int | None = None) -> bytes:
    """Array-level compression (no PLY round trip). `level` is an alias of compression_level."""
    return _zstd_compress(pack(splats), compression_level if level is None else level, workers=1)


def compress(ply_bytes: bytes, compression_level: int = 1, workers: int = 1) -> bytes:
    """pyspz.compress: PLY bytes -> SPZ bytes (SpzError on bad input)."""
    try:
        splats = ply.read_ply(ply_bytes, copy=False)
    except ply.PlyError as exc:
        raise SpzError(f"bad PLY: {exc}") from None
    return _zstd_compress(pack(splats), compression_level, workers)


# ---------------------------------------------------------------- decoding


def _luts() -> dict[str, np.ndarray]:
    b = np.arange(256, dtype=np.float32)
    with np.errstate(divide="ignore"):
        x = b / _f32(255.0)
        ratio = x / (_f32(1.0) - x)
        alpha = np.log(ratio.astype(np.float64)).astype(np.float32)  # 0 -> -inf, 255 -> +inf
    rot = b * _f32(_f32(1.0) / _f32(127.5)) + _f32(-1.0)
    return {
        "alpha": alpha,
        "color": ((b / _f32(255.0)) - _f32(0.5)) / COLOR_SCALE,
        "scale": b / _f32(16.0) - _f32(10.0),
        "rot": rot,
        "rot_sq": rot * rot,
        "sh": (b - _f32(128.0)) / _f32(128.0),
    }


_LUT = _luts()


def _lookup_into(dest: np.ndarray, table: str, codes: np.ndarray) -> None:
    lut = _LUT[table]
    if dest.flags.c_contiguous:
        np.take(lut, codes, out=dest, mode="wrap")  # wrap: no bounds check (uint8 always fits)
    else:
        dest[...] = np.take(lut, codes, mode="wrap")  # gather then one strided copy: faster


def _decode_positions(body: bytes, header: SpzHeader, rows: slice, out: np.ndarray) -> None:
    count = rows.stop - rows.start
    if header.version == 1:
        out[...] = np.frombuffer(body, "<f2", count=count * 3, offset=rows.start * 6).reshape(count, 3)
        out[np.isnan(out)] = np.nan  # the reference returns a canonical quiet NaN
        return
    # Read each 24-bit value as an unaligned int32 (3-byte stride; the alphas always follow, so
    # the last read stays inside the body), then shift the 4th byte out: sign extension for free.
    fixed = np.ndarray((count, 3), "<i4", buffer=body, offset=rows.start * 9, strides=(9, 3)) << 8
    fixed >>= 8
    # float scale = 1.0 / (1 << fractionalBits): x86 masks the shift count and int32 wraps
    denom = np.array(1, np.int32) << np.int32(header.fractional_bits & 31)
    np.multiply(fixed, _f32(1.0 / float(denom)), out=out, dtype=np.float32)


def _decode_rotations(codes: np.ndarray, out: np.ndarray) -> None:
    _lookup_into(out[:, 1:], "rot", codes)
    sq = _LUT["rot_sq"]
    w = np.take(sq, codes[:, 0], mode="wrap") + np.take(sq, codes[:, 1], mode="wrap")
    w += np.take(sq, codes[:, 2], mode="wrap")  # (x*x + y*y) + z*z, in float32 like the reference
    np.subtract(_f32(1.0), w, out=w)
    np.maximum(w, 0, out=w)
    np.sqrt(w, out=out[:, 0])  # no renormalisation


def unpack_into(header: SpzHeader, body: bytes, out: Splats, rows: slice | None = None) -> None:
    """Decode splats `rows` (default all) of a validated payload body into `out`'s arrays
    (views are fine): the reference's unpackGaussians."""
    n = header.num_points
    rows = slice(0, n) if rows is None else slice(*rows.indices(n))
    if len(body) < header.body_size:
        raise SpzError(f"truncated body: {len(body)} of {header.body_size} bytes")
    if len(out) != rows.stop - rows.start or out.sh_degree != header.sh_degree:
        raise ValueError("output arrays do not match the header")
    k = sh_coeffs_for_degree(header.sh_degree)
    buf = np.frombuffer(body, np.uint8, count=header.body_size)
    at = n * header.position_bytes
    alpha, color, scale, rot, sh = (
        buf[at : at + n],
        buf[at + n : at + 4 * n].reshape(n, 3),
        buf[at + 4 * n : at + 7 * n].reshape(n, 3),
        buf[at + 7 * n : at + 10 * n].reshape(n, 3),
        buf[at + 10 * n :].reshape(n, k, 3),
    )
    _decode_positions(body, header, rows, out.positions)
    _lookup_into(out.opacities, "alpha", alpha[rows])
    _lookup_into(out.sh_dc, "color", color[rows])
    _lookup_into(out.scales, "scale", scale[rows])
    _decode_rotations(rot[rows], out.rotations)
    if k:
        _lookup_into(out.sh_rest, "sh", sh[rows])


def unpack(header: SpzHeader, body: bytes) -> Splats:
    """Decode a validated payload body into new Splats."""
    n, k = header.num_points, sh_coeffs_for_degree(header.sh_degree)
    out = Splats(
        positions=np.empty((n, 3), np.float32),
        sh_dc=np.empty((n, 3), np.float32),
        sh_rest=np.empty((n, k, 3), np.float32),
        opacities=np.empty(n, np.float32),
        scales=np.empty((n, 3), np.float32),
        rotations=np.empty((n, 4), np.float32),
    )
    unpack_into(header, body, out)
    return out


def spz_to_splats(data: bytes) -> Splats:
    """Array-level decompression (no PLY round trip)."""
    return unpack(*read_payload(data))


DECODE_ROWS = 16384  # rows decoded at a time into one reused, cache-resident block


def decompress(spz_bytes: bytes, include_normals: bool) -> bytes:
    """pyspz.decompress: SPZ bytes -> PLY bytes in the 404 layout (SpzError on bad input)."""
    header, body = read_payload(spz_bytes)
    n, degree = header.num_points, header.sh_degree
    head = ply.ply_header(n, degree, include_normals)
    # Decode into one block of the PLY table at a time (every column pass hits cache) and copy
    # each block into the output. BytesIO sized up front holds the output in a single bytes
    # object that getvalue() hands over without copying: one large allocation in all, which
    # matters because first-touch page faults cost about as much as the decoding itself.
    table, columns = ply.empty_table(min(n, DECODE_ROWS), degree, include_normals)
    out = io.BytesIO()
    out.seek(len(head) + n * table.shape[1] * 4 - 1)
    out.write(b"\0")
    out.seek(0)
    out.write(head)
    for start in range(0, n, DECODE_ROWS):
        rows = slice(start, min(n, start + DECODE_ROWS))
        if rows.stop - rows.start < len(table):  # the last, partial block
            table, columns = ply.empty_table(rows.stop - rows.start, degree, include_normals)
        unpack_into(header, body, columns, rows)
        out.write(table.data)
    return out.getvalue()
