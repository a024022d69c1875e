"""What a warm-up compiles, kept on disk so the next start of the same preset loads it.

torch.compile's inductor artefacts (FX graphs, AOTAutograd entries, Triton/C++ kernels) are
written by PyTorch's "mega-cache" (`torch.compiler.save_cache_artifacts()`) into one file per
preset and device kind, and handed back with `load_cache_artifacts()` before the next compile.
CUDA graphs cannot be persisted: they are captured again at warm-up, which then costs seconds.

A cache file is only used on the machine and software it came from. Its header holds the key
(`environment_key()` + `preset_key()`: GPU model, driver, torch, gsplat, Python, and every preset
field that fixes a compiled shape) and the payload's sha256:
  hit      key and checksum match: artefacts loaded
  miss     no file yet
  stale    the file was made for another key (another torch, GPU, driver, preset shape): removed
  corrupt  unreadable header, bad checksum, or torch refused the payload: removed
  disabled / unsupported   no cache dir, or this torch has no mega-cache
Stale and corrupt files are removed and rebuilt by the warm-up that follows; never fatal.

Location: $GEN404_WARM_CACHE_DIR, else <state dir>/warm-cache (state dir: $GEN404_STATE_DIR,
else $XDG_STATE_HOME/gen404, else ~/.local/state/gen404: the console's state directory).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAGIC = b"GEN404WC"
FORMAT = 1
SUFFIX = ".warmcache"
HEADER_MAX = 1 << 16  # bytes WarmCache.matches reads: a header (key, checksum) is ~1 KB
# the preset fields that decide what gets compiled (shapes, dtypes, layouts, the models); not
# compile_backend: inductor's artefacts serve both backends, and a new key field would turn every
# miner's cache stale at the upgrade (one cold compile each)
SHAPE_FIELDS = (
    "guidance",
    "weights",
    "mvdream_id",
    "mvdream_ckpt",
    "sd_id",
    "dtype",
    "batch_size",
    "render_size",
    "ref_size",
    "cuda_graphs",
    "channels_last",
    "compile",
    "fused_optimizer",
)


class CacheCorrupt(ValueError):
    """The file is not a readable warm cache (truncated, overwritten, bad checksum)."""


@dataclass
class CacheReport:
    """What happened to a preset's warm cache at this start (shown in /health's "cache")."""

    state: str  # hit | miss | stale | corrupt | disabled | unsupported
    path: str | None = None
    detail: str = ""
    load_s: float = 0.0
    saved: str = ""  # after warm-up: "" (not yet), "saved N bytes", "nothing compiled", or an error

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "path": self.path,
            "detail": self.detail,
            "load_s": round(self.load_s, 3),
            "saved": self.saved,
        }


def cache_dir() -> Path:
    override = os.environ.get("GEN404_WARM_CACHE_DIR")
    if override:
        return Path(override).expanduser()
    state = os.environ.get("GEN404_STATE_DIR")
    if state:
        return Path(state).expanduser() / "warm-cache"
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "gen404" / "warm-cache"


def _driver_version() -> str:
    with contextlib.suppress(OSError, IndexError):
        # "NVRM version: NVIDIA UNIX x86_64 Kernel Module  570.86.15  ..." -> the first version-like word
        line = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
        return next((w for w in line.split() if w[:1].isdigit() and "." in w), line.strip())
    return "none"


def _package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def environment_key(device: Any) -> dict[str, str]:
    """The machine and software a compiled artefact depends on."""
    import torch

    kind = str(getattr(device, "type", device) or "cpu").split(":")[0]
    accelerator = platform.machine()
    if kind == "cuda" and torch.cuda.is_available():
        index = getattr(device, "index", None)
        accelerator = torch.cuda.get_device_name(index if index is not None else torch.cuda.current_device())
    return {
        "device": kind,
        "accelerator": accelerator,
        "driver": _driver_version() if kind == "cuda" else "none",
        "cuda": str(torch.version.cuda or "none"),
        "torch": torch.__version__,
        "gsplat": _package_version("gsplat"),
        "python": platform.python_version(),
    }


def preset_key(preset: Any) -> dict[str, Any]:
    return {name: getattr(preset, name, None) for name in SHAPE_FIELDS}


def cache_path(preset_name: str, device_kind: str, root: Path | None = None) -> Path:
    return (root or cache_dir()) / f"{preset_name}.{device_kind}{SUFFIX}"


def encode(key: dict[str, Any], payload: bytes) -> bytes:
    header = {
        "format": FORMAT,
        "key": key,
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    head = json.dumps(header, sort_keys=True).encode()
    return MAGIC + struct.pack("<I", len(head)) + head + payload


def _header(data: bytes) -> tuple[dict[str, Any], int]:
    """The header at the start of `data` and where the payload begins; CacheCorrupt when `data`
    does not start with one."""
    if len(data) < len(MAGIC) + 4 or not data.startswith(MAGIC):
        raise CacheCorrupt("not a gen404 warm cache (bad magic)")
    (size,) = struct.unpack_from("<I", data, len(MAGIC))
    start = len(MAGIC) + 4
    try:
        header = json.loads(data[start : start + size])
    except (ValueError, UnicodeDecodeError) as exc:
        raise CacheCorrupt(f"unreadable header ({exc})") from None
    if not isinstance(header, dict) or not isinstance(header.get("key"), dict):
        raise CacheCorrupt("header without a key")
    return header, start + size


def decode(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a cache file; CacheCorrupt when it is not one or fails its checksum."""
    header, start = _header(data)
    payload = data[start:]
    if len(payload) != header.get("bytes") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise CacheCorrupt(f"checksum mismatch ({len(payload)} bytes, header says {header.get('bytes')})")
    return header, payload


def _differences(want: dict[str, Any], have: dict[str, Any]) -> str:
    diffs = [f"{k} {have.get(k)!r} -> {want.get(k)!r}" for k in sorted(want) if want.get(k) != have.get(k)]
    return ", ".join(diffs[:4]) or "format"


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _mega_cache() -> Any:
    """torch.compiler when it has save/load_cache_artifacts, else None."""
    import torch

    compiler = getattr(torch, "compiler", None)
    if compiler is None or not hasattr(compiler, "save_cache_artifacts"):
        return None
    return compiler if hasattr(compiler, "load_cache_artifacts") else None


class WarmCache:
    """One preset's cache file on one device kind: load before compiling, save after warm-up."""

    def __init__(self, preset: Any, device: Any, root: Path | None = None) -> None:
        environment = environment_key(device)
        self.key: dict[str, Any] = {"format": FORMAT, **environment, "preset": preset_key(preset)}
        self.root = cache_dir() if root is None else root
        self.path = cache_path(str(getattr(preset, "name", "preset")), environment["device"], self.root)

    def matches(self) -> bool:
        """Whether a cache file made for this key is on disk (its header only: the payload's
        checksum is load()'s to verify). Touches nothing."""
        try:
            with self.path.open("rb") as f:
                header, _ = _header(f.read(HEADER_MAX))
        except (OSError, CacheCorrupt):
            return False
        return bool(header["key"] == self.key)

    def load(self) -> CacheReport:
        """Load the artefacts into torch's caches if the file is there and matches; never raises."""
        started = time.perf_counter()
        compiler = _mega_cache()
        if compiler is None:
            return CacheReport("unsupported", str(self.path), "this torch has no save/load_cache_artifacts")
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return CacheReport("miss", str(self.path), "no cache yet: the warm-up compiles and saves one")
        except OSError as exc:
            return CacheReport("disabled", str(self.path), f"cannot read: {exc.strerror or exc}")
        try:
            header, payload = decode(data)
        except CacheCorrupt as exc:
            _remove(self.path)
            return CacheReport("corrupt", str(self.path), f"{exc}; removed, rebuilding")
        if header["key"] != self.key:
            _remove(self.path)
            why = _differences(self.key, header["key"])
            return CacheReport(
                "stale", str(self.path), f"made for another setup ({why}); removed, rebuilding"
            )
        torch_log = logging.getLogger("torch.compiler._cache")
        level = torch_log.level
        torch_log.setLevel(logging.ERROR)  # its refusal is a warning with a traceback; ours is one line
        try:
            loaded = compiler.load_cache_artifacts(payload)  # None: torch could not read it
            reason = "unreadable artefacts" if loaded is None else ""
        except Exception as exc:
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            torch_log.setLevel(level)
        if reason:  # as good as corrupt
            _remove(self.path)
            return CacheReport("corrupt", str(self.path), f"torch refused it ({reason}); removed, rebuilding")
        elapsed = time.perf_counter() - started
        return CacheReport("hit", str(self.path), f"{len(payload)} bytes of compiled artefacts", elapsed)

    def save(self) -> str:
        """Write what this process compiled so far (atomically); returns a short outcome line."""
        compiler = _mega_cache()
        if compiler is None:
            return "unsupported"
        try:
            artifacts = compiler.save_cache_artifacts()
        except Exception as exc:
            return f"not saved: {type(exc).__name__}: {exc}"
        if not artifacts or not artifacts[0]:
            return "nothing compiled"
        payload = bytes(artifacts[0])
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp.write_bytes(encode(self.key, payload))
            os.replace(tmp, self.path)  # a reader never sees half a file
        except OSError as exc:
            _remove(tmp)
            return f"not saved: {exc.strerror or exc}"
        return f"saved {len(payload)} bytes"


__all__ = [
    "CacheCorrupt",
    "CacheReport",
    "WarmCache",
    "cache_dir",
    "cache_path",
    "decode",
    "encode",
    "environment_key",
    "preset_key",
]
