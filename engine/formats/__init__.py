"""File formats: Gaussian PLY and the 404 SPZ variant (torch-free; the console imports these)."""

from engine.formats.ply import PlyError, read_ply, write_ply
from engine.formats.spz import SpzError, compress, decompress, splats_to_spz, spz_to_splats

__all__ = [
    "PlyError",
    "SpzError",
    "compress",
    "decompress",
    "read_ply",
    "splats_to_spz",
    "spz_to_splats",
    "write_ply",
]
