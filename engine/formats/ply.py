"""Gaussian PLY: read any float-only binary little-endian file, write the 404 layout.

Acceptance mirrors the subnet's own parser (pyspz, see tests/vectors/README.md): the first
three header lines are exactly `ply`, `format binary_little_endian 1.0`, `element vertex N`; every
further header line up to `end_header` is `property float NAME`. So comments, ascii, big-endian,
other property types and extra elements are refused. Properties are found by name; unknown
ones (normals included) are ignored, as are bytes after the body. Everything is vectorised:
the body is one (N, D) float32 view, and columns are taken from it.
"""

from __future__ import annotations

import re

import numpy as np

from engine.splats import Splats, sh_coeffs_for_degree, sh_degree_for_coeffs

MAX_VERTICES = 10 * 1024 * 1024  # the reference parser's limit
MAX_HEADER_BYTES = 1 << 20  # real headers are < 2 KB; bounds the scan on hostile input
MAX_F_REST = 45  # the reference looks up f_rest_0..44 only

_FORMAT_LINE = "format binary_little_endian 1.0"
_ELEMENT_PREFIX = "element vertex "
_PROPERTY_PREFIX = "property float "
_COUNT_RE = re.compile(r"\s*([+-]?\d+)")  # like std::stoi: leading spaces, sign, digits, rest ignored

REQUIRED = (
    "x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
    "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3",
)  # fmt: skip


class PlyError(ValueError):
    """The bytes are not a Gaussian PLY the subnet's tools accept; the message says why."""


def _header_lines(data: bytes) -> tuple[list[str], int]:
    """Split the header into lines; returns (lines before end_header, body offset or -1).

    Without an end_header the complete lines seen so far are still returned, so that the
    caller reports what is wrong in them (a comment, ascii) before the missing end.
    """
    if not data:
        raise PlyError("empty input")
    if not data.startswith(b"ply\n"):
        raise PlyError("not a PLY file: the first line must be 'ply'")
    end = data.find(b"\nend_header\n", 0, MAX_HEADER_BYTES)
    if end < 0:
        head = data[:MAX_HEADER_BYTES]
        return head[: head.rfind(b"\n")].decode("latin-1").split("\n"), -1
    return data[:end].decode("latin-1").split("\n"), end + len(b"\nend_header\n")


def _check_format(line: str) -> None:
    if line == _FORMAT_LINE:
        return
    if line.startswith("comment"):
        raise PlyError("PLY comments are not accepted (the subnet's parser refuses them)")
    if "ascii" in line:
        raise PlyError("ascii PLY is not supported: binary_little_endian only")
    if "big_endian" in line:
        raise PlyError("big-endian PLY is not supported: binary_little_endian only")
    raise PlyError(f"unsupported format line {line!r}: expected {_FORMAT_LINE!r}")


def _vertex_count(line: str) -> int:
    if not line.startswith(_ELEMENT_PREFIX):
        if line.startswith(("comment", "obj_info")):
            raise PlyError("PLY comments are not accepted (the subnet's parser refuses them)")
        raise PlyError(f"expected 'element vertex N' as the third header line, got {line!r}")
    match = _COUNT_RE.match(line[len(_ELEMENT_PREFIX) :])
    if not match:
        raise PlyError(f"invalid vertex count in {line!r}")
    count = int(match.group(1))
    if count <= 0 or count > MAX_VERTICES:
        raise PlyError(f"vertex count {count} outside 1..{MAX_VERTICES}")
    return count


def _property_names(lines: list[str]) -> dict[str, int]:
    names: dict[str, int] = {}
    for line in lines:
        if not line.startswith(_PROPERTY_PREFIX):
            if line.startswith("comment"):
                raise PlyError("PLY comments are not accepted (the subnet's parser refuses them)")
            if line.startswith("property "):
                kind = line.split()[1] if len(line.split()) > 1 else "?"
                raise PlyError(
                    f"unsupported property type {kind!r} in {line!r}: every property must be float"
                )
            if line.startswith("element "):
                raise PlyError(f"unsupported extra element {line!r}: only 'vertex' is allowed")
            raise PlyError(f"unexpected header line {line!r}")
        name = line[len(_PROPERTY_PREFIX) :]
        if name in names:
            raise PlyError(f"duplicate property {name!r}")
        names[name] = len(names)
    return names


def _sh_columns(names: dict[str, int]) -> list[int]:
    """Column of each f_rest_i, taken consecutively from 0 like the reference (max 45)."""
    cols = []
    for i in range(MAX_F_REST):
        col = names.get(f"f_rest_{i}")
        if col is None:
            break
        cols.append(col)
    if len(cols) % 3:
        raise PlyError(f"{len(cols)} f_rest properties: the count must be divisible by 3")
    try:
        sh_degree_for_coeffs(len(cols) // 3)
    except ValueError as exc:
        raise PlyError(f"{len(cols)} f_rest properties: {exc}") from None
    return cols


def _take(table: np.ndarray, cols: list[int]) -> np.ndarray:
    """Columns of the table: a view when they are consecutive (the usual layout), else a copy."""
    if cols == list(range(cols[0], cols[0] + len(cols))):
        return table[:, cols[0] : cols[0] + len(cols)]
    return table[:, cols]


def read_ply(data: bytes, *, copy: bool = True) -> Splats:
    """Parse a Gaussian PLY into contiguous float32 arrays.

    copy=False returns views into `data` instead (strided, read-only for bytes): no copy, for
    codecs that only read the values once.
    """
    if isinstance(data, memoryview):
        data = data.tobytes()
    lines, offset = _header_lines(data)
    n = 0
    if len(lines) > 1:
        _check_format(lines[1])
    if len(lines) > 2:
        n = _vertex_count(lines[2])
    names = _property_names(lines[3:])
    if offset < 0 or len(lines) < 3:
        if len(data) >= MAX_HEADER_BYTES:
            raise PlyError(f"no 'end_header' in the first {MAX_HEADER_BYTES} bytes")
        raise PlyError("truncated header: no 'end_header' line")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise PlyError(
            f"missing property {missing[0]!r}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    sh_cols = _sh_columns(names)

    stride = len(names)
    need = n * stride * 4
    have = len(data) - offset
    if have < need:
        raise PlyError(f"truncated body: {n} vertices x {stride} floats need {need} bytes, found {have}")
    table = np.frombuffer(data, dtype="<f4", count=n * stride, offset=offset).reshape(n, stride)

    def cols(*keys: str) -> np.ndarray:
        view = _take(table, [names[k] for k in keys])
        return view.copy() if copy else view  # copy() is C-contiguous and writable

    k = len(sh_cols) // 3
    if k:
        # f_rest is channel-major on disk: f_rest[c*K + j] -> sh_rest[:, j, c]
        sh_rest = _take(table, sh_cols).reshape(n, 3, k).transpose(0, 2, 1)
        if copy:
            sh_rest = sh_rest.copy()
    else:
        sh_rest = np.zeros((n, 0, 3), np.float32)
    return Splats(
        positions=cols("x", "y", "z"),
        sh_dc=cols("f_dc_0", "f_dc_1", "f_dc_2"),
        sh_rest=sh_rest,
        opacities=cols("opacity")[:, 0],
        scales=cols("scale_0", "scale_1", "scale_2"),
        rotations=cols("rot_0", "rot_1", "rot_2", "rot_3"),
    )


def ply_header(n: int, sh_degree: int, include_normals: bool) -> bytes:
    """The header exactly as the reference generator and pyspz write it."""
    names = ["x", "y", "z"]
    if include_normals:
        names += ["nx", "ny", "nz"]
    names += ["f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(3 * sh_coeffs_for_degree(sh_degree))]
    names += ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    lines = ["ply", _FORMAT_LINE, f"element vertex {n}"] + [_PROPERTY_PREFIX + name for name in names]
    return ("\n".join(lines) + "\nend_header\n").encode("ascii")


def empty_table(n: int, sh_degree: int, include_normals: bool) -> tuple[np.ndarray, Splats]:
    """An (N, D) float32 table in the 404 layout (normals zeroed, the rest uninitialised) and
    Splats whose arrays are views of its columns, so codecs can decode straight into it."""
    k = sh_coeffs_for_degree(sh_degree)
    normals = 3 if include_normals else 0
    table = np.empty((n, 14 + 3 * k + normals), np.float32)
    if normals:
        table[:, 3:6] = 0.0
    dc = 3 + normals
    rest = dc + 3
    op = rest + 3 * k
    # f_rest is channel-major on disk: column rest + c*K + j holds sh_rest[:, j, c]
    sh_rest = np.reshape(table[:, rest:op], (n, 3, k), copy=False).transpose(0, 2, 1)
    columns = Splats(
        positions=table[:, 0:3],
        sh_dc=table[:, dc : dc + 3],
        sh_rest=sh_rest,
        opacities=table[:, op],
        scales=table[:, op + 1 : op + 4],
        rotations=table[:, op + 4 : op + 8],
    )
    return table, columns


def table_bytes(table: np.ndarray, sh_degree: int, include_normals: bool) -> bytes:
    return b"".join((ply_header(len(table), sh_degree, include_normals), table.data))


def write_ply(splats: Splats, include_normals: bool = True) -> bytes:
    """Serialise in the 404 layout (normals written as zeros when included)."""
    table, columns = empty_table(len(splats), splats.sh_degree, include_normals)
    for field in ("positions", "sh_dc", "sh_rest", "opacities", "scales", "rotations"):
        getattr(columns, field)[...] = getattr(splats, field)
    return table_bytes(table, splats.sh_degree, include_normals)
