"""Ahead-of-time compiled UNet and VAE encoder: compiled once per machine, loaded in a second.

Why: torch.compile keeps only kernels on disk. Each start still re-traces the model with dynamo
and rebuilds AOTAutograd's graphs before the first call: 12-20 s of a warm restart on an H200
(docs/benchmarks.md, "Where a start's seconds go"). torch.compile's own ahead-of-time mode
(`torch.compile(...).aot_compile`, experimental in torch 2.11+) keeps all of it: dynamo's
transformed bytecode and guards, and AOTAutograd's forward and backward with inductor's code
bundled in. Loading it back traces nothing.

How, per module and per call shape (one preset has one shape per module and batch bucket):
  1. The module's call is compiled by `torch.compile(fullgraph=True, dynamic=False)` ahead of
     time, with the module as an argument of a plain function, so its weights are graph *inputs*
     read from the module at each call: one artefact serves any weights of the same
     architecture (random weights differ between starts, real checkpoints between presets).
  2. The artefact is written atomically under the warm-cache directory.
  3. A call runs the loaded function; its backward (the VAE encoder's image gradient) was
     compiled with it, so autograd runs it without a lazy compile.
Only the guards torch can save are kept (tensor metadata, grad mode and similar global state);
dynamo's identity guards on modules and functions cannot be saved. What they would catch is in
the artefact's key instead: the module's class, its weights' shapes, strides and dtypes, a hash
of the engine's guidance code, the model libraries' versions and the machine and software.
Each shape's first call in a process checks the kept guards once; a failure rebuilds.

The previous design built AOTInductor packages (a shared library per graph). On the H200 with
torch 2.11.0+cu130 loading any CUDA package died in native code, even a Linear's (session 7), so
packages were never used there; this file keeps that design's keys, crash markers and preset
markers, which are independent of the artefact's format.

A package is keyed by the machine and software (warm_cache.environment_key), the versions of the
model libraries, a hash of the engine's guidance code, the module's class and weights' shapes,
and the call's shapes and grad mode: anything else is another package. A package that fails to
load is removed and rebuilt; a build that fails raises, and the caller falls back as for a
torch.compile failure. A package whose loading killed the process (a native crash: no exception
to catch) is found by the marker that process left, and is refused from then on with the same
fallback.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import pickle
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the package layout or calling convention changes (1: AOTInductor packages)
SUFFIX = ".aotc"
_SOURCE_DIR = Path(__file__).resolve().parent


def supported() -> bool:
    """Whether this torch can compile ahead of time, save and load (torch 2.11 and later)."""
    compiler = getattr(torch, "compiler", None)
    return hasattr(compiler, "load_compiled_function") and hasattr(torch._dynamo.config, "enable_aot_compile")


def package_dir() -> Path:
    """Where packages live: the warm-cache directory's aot/ (engine/warm_cache.py)."""
    from engine.warm_cache import cache_dir

    return cache_dir() / "aot"


@functools.cache
def _code_hash() -> str:
    """The guidance code a traced graph came from: a change to it makes packages stale."""
    digest = hashlib.sha256()
    for path in sorted(_SOURCE_DIR.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _digest(key: dict[str, Any]) -> str:
    """A file-name-sized hash of a key (packages and preset markers are named by theirs)."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


def _meta(t: Tensor) -> list[Any]:
    return [list(t.shape), list(t.stride()), str(t.dtype), t.requires_grad]


def _dense_strides(shape: Sequence[int], order: Sequence[int]) -> list[int]:
    """Strides of a dense layout of `shape` whose dimensions are laid out innermost first in `order`."""
    strides, step = [0] * len(shape), 1
    for dim in order:
        strides[dim] = step
        step *= max(shape[dim], 1)
    return strides


def _canonical(t: Tensor) -> Tensor:
    """`t` as a view whose size-1 dimensions have the strides a dense layout gives them. Those
    strides address nothing, yet eager and compiled code leave different ones (a UNet block's
    [8, 64, 1, 1] output: (64, 1, 1, 1) eager, (64, 1, 64, 64) from its package), and a package's
    key and guards compare them: without this, a block packaged after an eager one would not
    match the package built after a packaged one."""
    if t.is_contiguous():
        want = _dense_strides(t.shape, range(t.dim() - 1, -1, -1))
    elif t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last):
        want = _dense_strides(t.shape, (1, 3, 2, 0))
    else:
        return t
    return t if list(t.stride()) == want else t.as_strided(t.shape, want)


def _call_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
    """What a call looks like: its tensors by metadata, everything else by value."""
    leaves, treespec = pytree.tree_flatten((args, kwargs))
    values = [_meta(leaf) if isinstance(leaf, Tensor) else repr(leaf) for leaf in leaves]
    # grad mode is one of the guards a package keeps: a call in the other mode is another shape
    return [str(treespec), values, torch.is_grad_enabled()]


@dataclass
class BuildReport:
    """What one shape cost at first call: loaded from disk, or built (and saved)."""

    name: str
    package: str  # the package's file-name stem under the package directory
    state: str  # loaded | built | rebuilt | crashed (refused: its loading killed two processes)
    seconds: float
    detail: str = ""


def _call(module: torch.nn.Module, *args: Any, **kwargs: Any) -> tuple[Tensor, ...]:
    """What is compiled: the module's class's forward, the module an argument so that its
    weights are read at each call (graph inputs), not baked into the package. The class's, not
    the instance's: a block's `forward` may be its package (regions.py). Its output's tensors
    only: rebuilding an output object (diffusers' UNet2DConditionOutput) inside the compiled code
    refers to objects of the building process that a package cannot carry; the caller rebuilds
    it from the structure the package records."""
    return tuple(pytree.tree_leaves(type(module).forward(module, *args, **kwargs)))


class _ClassForward(torch.nn.Module):
    """`module` called through its class's forward (as `_call` calls it)."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.inner = module

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return type(self.inner).forward(self.inner, *args, **kwargs)


def _savable_guards(entries: Sequence[Any]) -> list[bool]:
    """Keep tensor metadata (inputs and weights, read through the module argument), shapes and
    global state such as grad mode: the guards torch can save. The rest (identity of modules and
    functions) is what the package key stands for."""
    return [
        e.guard_type in ("GLOBAL_STATE", "SHAPE_ENV") or (e.guard_type == "TENSOR_MATCH" and not e.is_global)
        for e in entries
    ]


class AotModule:
    """A module called through ahead-of-time compiled packages, built or loaded on the first call
    of each shape (as torch.compile compiles on first call). Calls keep the module's signature and
    output type; gradients flow to tensor inputs that require them.

    `root`: the package directory (the warm-cache directory's `aot/`); `name` a readable prefix.
    Thread-safe: a preset switch may build a new shape on its own thread while another shape runs.
    """

    def __init__(self, module: torch.nn.Module, name: str, root: Path, device: torch.device) -> None:
        self.module = module
        self.name = name
        self.root = root
        self.device = device
        self._compiled: dict[str, _Package] = {}
        self._lock = threading.Lock()
        self.reports: list[BuildReport] = []  # one a shape, at its first call

    def _package_key(self, call: list[Any]) -> dict[str, Any]:
        from engine.warm_cache import _package_version, environment_key

        named = [*self.module.named_parameters(), *self.module.named_buffers()]
        arch = hashlib.sha256(json.dumps([[n, _meta(t)] for n, t in named]).encode()).hexdigest()
        return {
            "format": FORMAT,
            **environment_key(self.device),
            "diffusers": _package_version("diffusers"),
            "transformers": _package_version("transformers"),
            "code": _code_hash(),
            "module": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            "weights": arch[:16],
            "call": call,
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = pytree.tree_map_only(Tensor, _canonical, (args, kwargs))
        call = _call_key(args, kwargs)
        key = json.dumps(call)
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key)
                if compiled is None:
                    compiled = self._compiled[key] = self._obtain(call, args, kwargs)
        return compiled(self.module, *args, **kwargs)

    # -- building and loading -----------------------------------------------------------------
    def _obtain(self, call: list[Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Package:
        if not supported():
            raise RuntimeError(f"torch {torch.__version__} cannot compile ahead of time (torch >= 2.11 can)")
        files = _Files(self.root / f"{self.name}-{_digest(self._package_key(call))}")
        crash = previous_crash(files)
        if crash is not None:  # loading it again would take this process down the same way
            self.reports.append(BuildReport(self.name, files.base.name, "crashed", 0.0, crash))
            raise PackageCrashed(
                f"AOT package {files.base.name} killed two processes that loaded it ({crash}); it is"
                " not loaded again (a torch or gen404 upgrade makes a new package)"
            )
        started = time.perf_counter()
        state, detail = "loaded", ""
        try:
            compiled = self._checked(self._load(files), args, kwargs)
        except FileNotFoundError:
            state = "built"
            compiled = self._checked(self._build(files, args, kwargs), args, kwargs)
        except Exception as exc:  # a corrupt or incompatible package: rebuild, say so
            state, detail = "rebuilt", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("AOT package %s unusable (%s); rebuilding", files.base.name, detail)
            files.remove()
            compiled = self._checked(self._build(files, args, kwargs), args, kwargs)
        seconds = time.perf_counter() - started
        self.reports.append(BuildReport(self.name, files.base.name, state, seconds, detail))
        log.info("AOT %s %s in %.1fs (%s)", self.name, state, seconds, files.base.name)
        return compiled

    def _checked(self, package: _Package, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Package:
        """The package's kept guards against this call, once: later calls of the same shape skip
        them (the key already pins what they check), which keeps a call as cheap as torch.compile's."""
        compiled = package.compiled
        if not compiled.guard_check(self.module, *args, **kwargs):
            try:  # which guard failed: torch's private API, so only for the message
                f_locals = compiled.prepare_f_locals(self.module, *args, **kwargs)
                reason = " ".join(str(compiled._artifacts.guard_manager.check_verbose(f_locals)).splitlines())
            except Exception as exc:
                reason = f"(no detail: {type(exc).__name__})"
            raise GuardMismatch(f"the package's guards fail for this call: {reason[:300]}")
        compiled.disable_guard_check()
        return package

    def _load(self, files: _Files) -> _Package:
        """The package on disk (or decoded already, beside the weights: `preload_preset`)."""
        with _preload_lock:
            package = _preloaded.pop(files.package, None)
        if package is not None:
            return package
        log.info("AOT %s: loading %s", self.name, files.base.name)
        return _decode(files)

    def _build(self, files: _Files, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Package:
        log.info("AOT %s: compiling (%s)", self.name, files.base.name)
        with torch._dynamo.config.patch(enable_aot_compile=True):
            wrapper = torch.compile(
                _call, fullgraph=True, dynamic=False, options={"guard_filter_fn": _savable_guards}
            )
        with warnings.catch_warnings():
            # torch reads the .grad of every tensor it saves with the guards, and warns for an
            # input that needs a gradient without being a leaf (a VAE encoder block's): noise
            warnings.filterwarnings(
                "ignore", "The .grad attribute of a Tensor that is not a leaf", UserWarning
            )
            # dynamo traces under the caller's grad mode: the VAE encoder's images need a gradient
            compiled = wrapper.aot_compile(((self.module, *args), kwargs))  # type: ignore[attr-defined]
            package = _Package(compiled, _output_spec(self.module, args, kwargs))
            data = package.encode()
        self.root.mkdir(parents=True, exist_ok=True)
        _write_atomically(files.package, data)
        log.info("AOT %s: saved %.1f MB", self.name, len(data) / 1e6)
        return package


@dataclass
class _Package:
    """One shape's compiled function and its output's structure."""

    compiled: Any  # torch._dynamo.aot_compile.AOTCompiledFunction: (module, *args, **kwargs) -> leaves
    out_spec: pytree.TreeSpec

    def __call__(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        return pytree.tree_unflatten(list(self.compiled(module, *args, **kwargs)), self.out_spec)

    def encode(self) -> bytes:
        compiled = type(self.compiled).serialize(self.compiled).serialized_data
        return pickle.dumps({"format": FORMAT, "out_spec": self.out_spec, "compiled": compiled})

    @classmethod
    def decode(cls, data: bytes) -> _Package:
        with warnings.catch_warnings():  # torch 2.11's pytree warns while unpickling a TreeSpec
            warnings.simplefilter("ignore", FutureWarning)
            payload = pickle.loads(data)  # our own cache directory, as trusted as the code it holds
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError("not a package of this format")
        compiled = torch.compiler.load_compiled_function(io.BytesIO(payload["compiled"]))
        return cls(compiled, payload["out_spec"])


def _output_spec(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> pytree.TreeSpec:
    """The call's output structure (e.g. diffusers' UNet2DConditionOutput), from a run on the meta
    device: shapes only, no arithmetic, no memory."""
    wrapper = _ClassForward(module)
    weights = {n: t.detach().to("meta") for n, t in [*wrapper.named_parameters(), *wrapper.named_buffers()]}
    meta_args, meta_kwargs = pytree.tree_map_only(Tensor, lambda t: t.detach().to("meta"), (args, kwargs))
    with torch.no_grad():
        out = torch.func.functional_call(wrapper, weights, meta_args, meta_kwargs)
    return pytree.tree_flatten(out)[1]


def _decode(files: _Files) -> _Package:
    data = files.package.read_bytes()  # FileNotFoundError: not built (or not finished)
    # a native crash while loading kills the process before any except clause: this marker
    # outlives it, and the next start refuses the package
    marker = files.loading(os.getpid())
    marker.write_text(f"pid {os.getpid()} loading it since {time.strftime('%Y-%m-%d %H:%M:%S')}")
    try:
        package = _Package.decode(data)
    finally:
        marker.unlink(missing_ok=True)
    files.suspect.unlink(missing_ok=True)  # it loads: an earlier death mid-load was not its doing
    return package


_preloaded: dict[Path, _Package] = {}
_preload_lock = threading.Lock()


def preload_preset(
    preset: Any, device: Any, root: Path | None = None, stop: threading.Event | None = None
) -> list[str]:
    """Decode every package a past warm-up recorded for `preset` (the names of those decoded), so
    that the first calls find them ready. A start runs this beside loading the weights: decoding
    is seconds of Python and file reads that need no weights. A package that fails here is left
    to its first call, which reports and rebuilds it. `stop` set (the weights failed to load:
    nothing will call them) ends it after the package in hand and drops what it decoded."""
    root = package_dir() if root is None else root
    decoded: dict[str, Path] = {}
    for stem in _recorded(preset, device, root):
        if stop is not None and stop.is_set():
            break
        files = _Files(root / stem)
        if previous_crash(files) is not None:
            continue
        try:
            package = _decode(files)
        except Exception as exc:
            log.info("AOT package %s not preloaded (%s)", stem, type(exc).__name__)
            continue
        with _preload_lock:
            _preloaded[files.package] = package
        decoded[stem] = files.package
    if stop is not None and stop.is_set():
        with _preload_lock:
            for path in decoded.values():
                _preloaded.pop(path, None)
        return []
    return list(decoded)


class GuardMismatch(RuntimeError):
    """A package whose saved guards reject the call its key matched: rebuilt."""


# -- which presets have all their packages ------------------------------------------------------
def _preset_marker(preset: Any, device: Any, root: Path) -> Path:
    """Where a warm-up records the packages a preset calls: keyed like the packages themselves,
    plus the preset's shape fields and max_batch (each batch bucket has packages of its own)."""
    from engine.warm_cache import environment_key, preset_key

    key = {
        "format": FORMAT,
        **environment_key(device),
        "code": _code_hash(),
        "preset": preset_key(preset),
        "compile_backend": getattr(preset, "compile_backend", None),
        "compile_regions": getattr(preset, "compile_regions", False),  # other packages
        "max_batch": getattr(preset, "max_batch", 1),
    }
    return root / f"preset-{getattr(preset, 'name', 'preset')}-{_digest(key)}.json"


def mark_preset_ready(preset: Any, device: Any, packages: list[str], root: Path | None = None) -> None:
    """After a warm-up on AOT packages: the next start of `preset` here can load, not build."""
    root = package_dir() if root is None else root
    root.mkdir(parents=True, exist_ok=True)
    _write_atomically(
        _preset_marker(preset, device, root), json.dumps({"packages": sorted(packages)}).encode()
    )


def preset_packages_ready(preset: Any, device: Any, root: Path | None = None) -> bool:
    """Whether `preset` runs on AOT packages and a past warm-up of it on this machine and
    software left every package it calls (so its compiled state loads in seconds, and a start
    need not serve early)."""
    root = package_dir() if root is None else root
    files = [_Files(root / name) for name in _recorded(preset, device, root)]
    return bool(files) and all(f.package.exists() and previous_crash(f) is None for f in files)


def _recorded(preset: Any, device: Any, root: Path) -> list[str]:
    """The packages a past warm-up of `preset` here recorded (none for another backend)."""
    if getattr(preset, "compile_backend", None) != "aot":
        return []
    try:
        listed = json.loads(_preset_marker(preset, device, root).read_text())["packages"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [str(name) for name in listed] if isinstance(listed, list) else []


class PackageCrashed(RuntimeError):
    """A package whose loading killed two processes: never loaded again."""


def previous_crash(files: _Files) -> str | None:
    """What the processes that died while loading this package left, once they are two (None:
    fewer).

    A process also dies mid-load for reasons of its own: a supervisor's SIGKILL, the OOM killer,
    a start that failed and exited while its packages were still decoding (an H200 run of
    session 14 lost a package that way: every later start compiled again). So one death only
    makes the package a suspect, cleared by the next load that ends well; a second is taken for a
    native crash, and the package is refused from then on. A live process's marker is another
    endpoint loading the same packages right now."""
    if files.crashed.exists():
        return files.crashed.read_text().strip() or "no detail"
    for marker in files.base.parent.glob(files.base.name + ".loading-*"):
        pid = marker.name.rsplit("-", 1)[1]
        if not pid.isdigit() or int(pid) == os.getpid() or _alive(int(pid)):
            continue
        second = files.suspect.exists()
        with contextlib.suppress(OSError):  # another process may have moved it first
            os.replace(marker, files.crashed if second else files.suspect)  # kept: later starts see it
        if second:
            return files.crashed.read_text().strip() if files.crashed.exists() else "no detail"
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


@dataclass
class _Files:
    """One shape's files: the package, and the markers a crash while loading it leaves."""

    base: Path

    @property
    def package(self) -> Path:
        return self.base.with_name(self.base.name + SUFFIX)

    @property
    def crashed(self) -> Path:
        return self.base.with_name(self.base.name + ".crashed")

    @property
    def suspect(self) -> Path:  # one process died while loading it
        return self.base.with_name(self.base.name + ".suspect")

    def loading(self, pid: int) -> Path:
        return self.base.with_name(f"{self.base.name}.loading-{pid}")

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.package.unlink()


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` to write, moved onto `path` when the block ends well,
    removed otherwise: a reader never sees half a file."""
    tmp = path.with_name(f".{os.getpid()}.{threading.get_ident()}.{path.name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def _write_atomically(path: Path, data: bytes) -> None:
    with _replacing(path) as tmp:
        tmp.write_bytes(data)


__all__ = [
    "AotModule",
    "BuildReport",
    "GuardMismatch",
    "PackageCrashed",
    "mark_preset_ready",
    "package_dir",
    "preload_preset",
    "preset_packages_ready",
    "previous_crash",
    "supported",
]
