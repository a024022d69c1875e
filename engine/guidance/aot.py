"""Ahead-of-time compiled UNet and VAE encoder: compiled once per machine, loaded in a second.

Why: torch.compile keeps only kernels on disk. Each start still re-traces the model with dynamo
and rebuilds AOTAutograd's graphs before the first call: 15-21 s of a warm restart on an H200
(docs/benchmarks.md, "Where a start's seconds go"). AOTInductor writes a whole compiled graph as
a package (a shared library plus its kernels); loading it needs no tracing at all.

How, per module and per input shape (one preset has one shape per module):
  1. The call is traced as torch.compile traces it (dynamo, then inductor's front end and
     AOTAutograd), with the module's weights as graph *inputs*, into a forward graph and, when an
     input needs a gradient (the VAE encoder's images), a backward graph.
  2. Each graph is exported and AOTInductor compiles it into a .pt2 package, written atomically
     under the warm-cache directory.
  3. A call runs the forward package with the live weights; an autograd.Function keeps what it
     saved and runs the backward package when the caller backpropagates.
Weights as inputs mean one package serves any weights of the same architecture (random weights
differ between starts, real checkpoints between presets) and nothing is copied. Outputs are
cloned in the traced function, so no output aliases another tensor (AOTAutograd would otherwise
rebuild such views at run time, which a package cannot).

A package is keyed by the machine and software (warm_cache.environment_key), the versions of the
model libraries, a hash of the engine's guidance code, the module's class and weights' shapes,
and the call's shapes: anything else is another package. A package that fails to load is removed
and rebuilt; a build that fails raises, and the caller falls back as for a torch.compile failure.
A package whose loading killed the process (a native crash: no exception to catch) is found by
the marker that process left, and is refused from then on with the same fallback.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils import _pytree as pytree

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the package layout or calling convention changes
SUFFIX = ".pt2"
_SOURCE_DIR = Path(__file__).resolve().parent


def supported() -> bool:
    """Whether this torch can build and load AOTInductor packages."""
    inductor = getattr(torch, "_inductor", None)
    return hasattr(inductor, "aoti_compile_and_package") and hasattr(inductor, "aoti_load_package")


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


@dataclass
class _Spec:
    """What a call looks like: which leaves are tensors, and everything else by value."""

    treespec: pytree.TreeSpec
    leaves: list[Any]
    tensor_slots: list[int]

    @classmethod
    def of(cls, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Spec:
        leaves, treespec = pytree.tree_flatten((args, kwargs))
        slots = [i for i, leaf in enumerate(leaves) if isinstance(leaf, Tensor)]
        return cls(treespec, leaves, slots)

    def tensors(self) -> list[Tensor]:
        return [self.leaves[i] for i in self.tensor_slots]

    def rebuild(self, tensors: list[Tensor] | tuple[Tensor, ...]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        leaves = list(self.leaves)
        for slot, tensor in zip(self.tensor_slots, tensors, strict=True):
            leaves[slot] = tensor
        args, kwargs = pytree.tree_unflatten(leaves, self.treespec)
        return args, kwargs

    def key(self) -> list[Any]:
        consts = [None if isinstance(leaf, Tensor) else repr(leaf) for leaf in self.leaves]
        return [str(self.treespec), consts, [_meta(t) for t in self.tensors()]]


@dataclass
class _Compiled:
    """One shape's packages and how to call them."""

    forward: Callable[..., list[Tensor]]
    backward: Callable[..., list[Tensor]] | None
    n_outputs: int  # user outputs at the front of the forward's outputs; saved tensors follow
    out_spec: pytree.TreeSpec
    grad_inputs: list[int]  # positions (among the call's tensors) that get gradients
    tangent_strides: list[tuple[int, ...]]
    used: list[int]  # the call's flat inputs (weights, then tensors) the packages take, in order

    def select(self, inputs: tuple[Tensor, ...] | list[Tensor]) -> list[Tensor]:
        return [inputs[i] for i in self.used]


@dataclass
class BuildReport:
    """What one shape cost at first call: loaded from disk, or built (and saved)."""

    name: str
    package: str  # the package set's file-name stem under the package directory
    state: str  # loaded | built | rebuilt | crashed (refused: its loading once killed a process)
    seconds: float
    detail: str = ""


class AotModule:
    """A module called through AOTInductor packages, built or loaded on the first call of each
    shape (as torch.compile compiles on first call). Calls keep the module's signature and
    output type; gradients flow to tensor inputs that require them.

    `root`: the package directory (the warm-cache directory's `aot/`); `name` a readable prefix.
    Thread-safe: a preset switch may build a new shape on its own thread while another shape runs.
    """

    def __init__(self, module: torch.nn.Module, name: str, root: Path, device: torch.device) -> None:
        self.module = module
        self.name = name
        self.root = root
        self.device = device
        self._compiled: dict[str, _Compiled] = {}
        self._lock = threading.Lock()
        self.reports: list[BuildReport] = []  # one a shape, at its first call

    # -- weights ------------------------------------------------------------------------------
    def _weights(self) -> tuple[list[str], list[Tensor]]:
        named = list(self.module.named_parameters()) + list(self.module.named_buffers())
        return [n for n, _ in named], [t for _, t in named]

    def _package_key(self, spec: _Spec) -> dict[str, Any]:
        from engine.warm_cache import _package_version, environment_key

        names, weights = self._weights()
        arch = hashlib.sha256(json.dumps([names, [_meta(w) for w in weights]]).encode()).hexdigest()
        return {
            "format": FORMAT,
            **environment_key(self.device),
            "diffusers": _package_version("diffusers"),
            "transformers": _package_version("transformers"),
            "code": _code_hash(),
            "module": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            "weights": arch[:16],
            "call": spec.key(),
        }

    # -- calling ------------------------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        spec = _Spec.of(args, kwargs)
        key = json.dumps(spec.key())
        compiled = self._compiled.get(key)
        if compiled is None:
            with self._lock:
                compiled = self._compiled.get(key)
                if compiled is None:
                    compiled = self._compiled[key] = self._obtain(spec)
        _, weights = self._weights()
        tensors = spec.tensors()
        if compiled.backward is None:
            outputs = compiled.forward(*compiled.select([*weights, *tensors]))
        else:
            outputs = _Staged.apply(compiled, len(weights), *weights, *tensors)
        return pytree.tree_unflatten(list(outputs[: compiled.n_outputs]), compiled.out_spec)

    # -- building and loading -----------------------------------------------------------------
    def _obtain(self, spec: _Spec) -> _Compiled:
        if not supported():
            raise RuntimeError(f"torch {torch.__version__} cannot build AOTInductor packages")
        files = _Files(self.root / f"{self.name}-{_digest(self._package_key(spec))}")
        crash = previous_crash(files)
        if crash is not None:  # loading it again would take this process down the same way
            self.reports.append(BuildReport(self.name, files.base.name, "crashed", 0.0, crash))
            raise PackageCrashed(
                f"AOT package {files.base.name} crashed a process that loaded it ({crash}); it is not"
                " loaded again (a torch or gen404 upgrade makes a new package)"
            )
        started = time.perf_counter()
        state, detail = "loaded", ""
        try:
            compiled = self._load(files, spec)
        except FileNotFoundError:
            state = "built"
            compiled = self._build(files, spec)
        except Exception as exc:  # a corrupt or incompatible package: rebuild, say so
            state, detail = "rebuilt", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("AOT package %s unusable (%s); rebuilding", files.base.name, detail)
            files.remove()
            compiled = self._build(files, spec)
        seconds = time.perf_counter() - started
        self.reports.append(BuildReport(self.name, files.base.name, state, seconds, detail))
        log.info("AOT %s %s in %.1fs (%s)", self.name, state, seconds, files.base.name)
        return compiled

    def _load(self, files: _Files, spec: _Spec) -> _Compiled:
        """The packages on disk, with the calling convention their build recorded."""
        info = json.loads(files.info.read_text())  # FileNotFoundError: not built (or not finished)
        log.info("AOT %s: loading %s", self.name, files.base.name)
        # a native crash while loading (seen on an H200 with torch 2.11) kills the process before
        # any except clause: this marker outlives it, and the next start refuses the package
        marker = files.loading(os.getpid())
        marker.write_text(f"pid {os.getpid()} loading it since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        try:
            backward = _open_package(files.backward) if info["backward"] else None
            forward = _open_package(files.forward)
        finally:
            marker.unlink(missing_ok=True)
        return _Compiled(
            forward=forward,
            backward=backward,
            n_outputs=int(info["n_outputs"]),
            out_spec=_output_spec(self.module, spec, self._weights()),
            grad_inputs=[int(i) for i in info["grad_inputs"]],
            tangent_strides=[tuple(int(n) for n in s) for s in info["tangent_strides"]],
            used=[int(i) for i in info["used"]],
        )

    def _build(self, files: _Files, spec: _Spec) -> _Compiled:
        # each stage logged as it starts: a build that dies in native code leaves its last line
        log.info("AOT %s: tracing (%s)", self.name, files.base.name)
        traced = _trace(self.module, spec, self._weights())
        self.root.mkdir(parents=True, exist_ok=True)
        log.info("AOT %s: compiling the forward graph", self.name)
        _compile(traced.forward, traced.forward_inputs, files.forward)
        if traced.backward is not None:
            log.info("AOT %s: compiling the backward graph", self.name)
            _compile(traced.backward, traced.backward_inputs, files.backward)
        info = {
            "n_outputs": traced.n_outputs,
            "backward": traced.backward is not None,
            "grad_inputs": traced.grad_inputs,
            "tangent_strides": traced.tangent_strides,
            "used": traced.used,
        }
        _write_atomically(files.info, json.dumps(info).encode())  # last: marks the set complete
        return self._load(files, spec)


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
    if getattr(preset, "compile_backend", None) != "aot":
        return False
    root = package_dir() if root is None else root
    try:
        listed = json.loads(_preset_marker(preset, device, root).read_text())["packages"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    files = [_Files(root / str(name)) for name in listed]
    return bool(files) and all(f.info.exists() and previous_crash(f) is None for f in files)


class PackageCrashed(RuntimeError):
    """A package set whose loading once killed the process: never loaded again."""


def previous_crash(files: _Files) -> str | None:
    """What a process that died while loading this package set left (None: no such death).

    A live process's marker is another endpoint loading the same packages right now."""
    if files.crashed.exists():
        return files.crashed.read_text().strip() or "no detail"
    for marker in files.base.parent.glob(files.base.name + ".loading-*"):
        pid = marker.name.rsplit("-", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                os.replace(marker, files.crashed)  # kept: every later start sees it
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
    """One shape's files: forward and backward packages, and the build's notes (written last)."""

    base: Path

    @property
    def forward(self) -> Path:
        return self.base.with_name(self.base.name + ".fw" + SUFFIX)

    @property
    def backward(self) -> Path:
        return self.base.with_name(self.base.name + ".bw" + SUFFIX)

    @property
    def info(self) -> Path:
        return self.base.with_name(self.base.name + ".json")

    @property
    def crashed(self) -> Path:
        return self.base.with_name(self.base.name + ".crashed")

    def loading(self, pid: int) -> Path:
        return self.base.with_name(f"{self.base.name}.loading-{pid}")

    def remove(self) -> None:
        for path in (self.info, self.forward, self.backward):
            with contextlib.suppress(OSError):
                path.unlink()


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary path beside `path` (same name at the end: AOTI wants its .pt2) to write, moved
    onto `path` when the block ends well, removed otherwise: a reader never sees half a file."""
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


def _output_spec(
    module: torch.nn.Module, spec: _Spec, weights: tuple[list[str], list[Tensor]]
) -> pytree.TreeSpec:
    """The call's output structure (e.g. diffusers' UNet2DConditionOutput), from a run on the meta
    device: shapes only, no arithmetic, no memory."""
    names, tensors = weights
    bound = {n: t.detach().to("meta") for n, t in zip(names, tensors, strict=True)}
    args, kwargs = spec.rebuild([t.detach().to("meta") for t in spec.tensors()])
    with torch.no_grad():
        out = torch.func.functional_call(module, bound, args, kwargs)
    return pytree.tree_flatten(out)[1]


class _Staged(torch.autograd.Function):
    """Forward package now, backward package when autograd asks, with the saved tensors between."""

    @staticmethod
    def forward(ctx: Any, compiled: _Compiled, n_weights: int, *inputs: Tensor) -> tuple[Tensor, ...]:
        outputs = compiled.forward(*compiled.select(inputs))
        ctx.compiled = compiled
        ctx.n_weights = n_weights
        ctx.n_inputs = len(inputs)
        ctx.saved = tuple(outputs[compiled.n_outputs :])  # plain references: the package's own
        return tuple(outputs[: compiled.n_outputs])

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        compiled: _Compiled = ctx.compiled
        assert compiled.backward is not None
        tangents = [_with_strides(g, s) for g, s in zip(grads, compiled.tangent_strides, strict=True)]
        grad_values = compiled.backward(*ctx.saved, *tangents)
        result: list[Tensor | None] = [None] * ctx.n_inputs
        for position, value in zip(compiled.grad_inputs, grad_values, strict=True):
            result[ctx.n_weights + position] = value
        ctx.saved = ()
        return (None, None, *result)


def _with_strides(t: Tensor, strides: tuple[int, ...]) -> Tensor:
    if t.stride() == strides:
        return t
    out = torch.empty_strided(t.shape, strides, dtype=t.dtype, device=t.device)
    return out.copy_(t)


# -- tracing ----------------------------------------------------------------------------------
@dataclass
class _Traced:
    forward: torch.fx.GraphModule
    forward_inputs: list[Tensor]
    backward: torch.fx.GraphModule | None
    backward_inputs: list[Tensor]
    n_outputs: int
    grad_inputs: list[int]
    tangent_strides: list[tuple[int, ...]]
    used: list[int]  # the call's flat inputs (weights, then tensors) the graphs take, in order


def _stand_in(t: Any) -> Tensor:
    """A real tensor of `t`'s shape, strides, dtype and device (export reads only metadata)."""
    return torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device=t.device)


def _trace(module: torch.nn.Module, spec: _Spec, weights: tuple[list[str], list[Tensor]]) -> _Traced:
    """The forward (and backward) graphs torch.compile would compile for one call, weights as
    inputs: dynamo, then inductor's own front end (pre-grad and joint-graph passes,
    decompositions, min-cut partition), with the graphs taken where inductor would lower them.

    The graphs are never run: the stand-in compiler returns empty outputs of the traced shapes
    and strides, so capturing costs tracing only (no compile, no GPU arithmetic).
    """
    from torch._inductor.compile_fx import compile_fx

    names, tensors = weights
    n_weights = len(names)
    grabbed: dict[str, tuple[torch.fx.GraphModule, list[Any]]] = {}
    used: list[int] = []  # which of the call's flat inputs the graphs take, in their order

    def flat(*inputs: Tensor) -> tuple[Tensor, ...]:
        args, kwargs = spec.rebuild(inputs[n_weights:])
        bound = dict(zip(names, inputs[:n_weights], strict=True))
        out = torch.func.functional_call(module, bound, args, kwargs)
        return tuple(leaf.clone() for leaf in pytree.tree_leaves(out))  # see the module docstring: no aliases

    def inner(gm: torch.fx.GraphModule, example_inputs: list[Any], **kwargs: Any) -> Any:
        grabbed["backward" if kwargs.get("is_backward") else "forward"] = (gm, list(example_inputs))
        return _stand_in_outputs(gm)

    def front(gm: torch.fx.GraphModule, example_inputs: list[Any]) -> Any:
        # dynamo keeps only the inputs the graph reads (the VAE module also holds the decoder's
        # weights): note which of ours each graph input is
        for node in gm.graph.find_nodes(op="placeholder"):
            source = node.meta["grapharg"].source
            index = getattr(source, "index", None)
            if not isinstance(index, int):
                raise RuntimeError(f"graph input {source.name} is not one of the call's")
            used.append(index)
        return compile_fx(gm, example_inputs, inner_compile=inner)

    call_tensors = spec.tensors()
    grad_inputs = [i for i, t in enumerate(call_tensors) if t.requires_grad]
    inputs = [
        *(t.detach() for t in tensors),
        *(t.detach().requires_grad_(t.requires_grad) for t in call_tensors),
    ]
    with torch.enable_grad(), _no_compile_caches():
        traced_fn = torch.compile(_fresh(flat), backend=front, fullgraph=True, dynamic=False)
        outputs = traced_fn(*inputs)
        differentiable = [o for o in outputs if o.requires_grad]
        tangent_strides = [tuple(o.stride()) for o in differentiable]
        if grad_inputs and differentiable:  # the backward graph is captured when it first runs
            torch.autograd.backward(differentiable, [torch.zeros_like(o) for o in differentiable])
    forward, forward_examples = grabbed["forward"]
    if len(forward_examples) != len(used):
        raise RuntimeError(f"traced {len(forward_examples)} inputs, expected {len(used)}")
    backward_graph = grabbed.get("backward")
    backward, backward_inputs = (None, [])
    if backward_graph is not None and grad_inputs:
        backward, examples = backward_graph
        _keep_outputs(backward, [used.index(n_weights + i) for i in grad_inputs])
        backward_inputs = [_stand_in(t) for t in examples]
    return _Traced(
        forward=forward,
        forward_inputs=[_stand_in(t) for t in forward_examples],
        backward=backward,
        backward_inputs=backward_inputs,
        n_outputs=len(outputs),
        grad_inputs=grad_inputs if backward is not None else [],
        tangent_strides=tangent_strides,
        used=used,
    )


def _fresh(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` with a code object of its own: dynamo caches compiled frames by code object, and the
    tracing closure's code is shared by every module and shape traced in the process."""
    return types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__, None, fn.__closure__)


@contextlib.contextmanager
def _no_compile_caches() -> Iterator[None]:
    """No AOTAutograd or FX-graph cache entry for graphs that are captured, never compiled."""
    from torch._functorch import config as functorch_config
    from torch._inductor import config as inductor_config

    with functorch_config.patch(enable_autograd_cache=False), inductor_config.patch(fx_graph_cache=False):
        yield


def _stand_in_outputs(gm: torch.fx.GraphModule) -> Callable[..., Any]:
    """In place of running a captured graph: empty outputs of its traced shapes and strides."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    values = [None if node is None else node.meta.get("val") for node in output.args[0]]

    def run(args: list[Any]) -> list[Any]:
        args.clear()  # the boxed convention: the callee frees its inputs
        return [None if v is None else _stand_in(v) if isinstance(v, Tensor) else v for v in values]

    run._boxed_call = True  # type: ignore[attr-defined]  # AOTAutograd then passes one list
    return run


def _keep_outputs(gm: torch.fx.GraphModule, positions: list[int]) -> None:
    """The backward returns a gradient (or None) per forward input; keep the ones asked for."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    values = output.args[0]
    output.args = (tuple(values[i] for i in positions),)
    gm.graph.eliminate_dead_code()
    gm.recompile()


class _Graph(torch.nn.Module):
    """An FX graph as a module torch.export takes (flat tensor inputs, tuple of outputs)."""

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        super().__init__()
        self.gm = gm

    def forward(self, *inputs: Tensor) -> Any:
        return self.gm(*inputs)


def _views_as_reshapes(gm: torch.fx.GraphModule) -> None:
    """Every `view` in a captured graph becomes a `reshape` (a view wherever one is possible).

    Why: export traces the graph again, and the strides it infers for an intermediate can differ
    from the ones the capture saw; a `view` the capture allowed then fails (on the H200: the
    VAE's mid-block attention, "Cannot view a tensor with shape [4, 256, 512] and strides
    (131072, 1, 256) as a tensor with shape (1024, 512)"). The graphs are functional (no
    in-place ops), so a copy where a view was is the same value.
    """
    views = (torch.ops.aten.view.default, torch.ops.aten._unsafe_view.default)
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target in views:
            node.target = torch.ops.aten.reshape.default
    gm.recompile()


def _compile(gm: torch.fx.GraphModule, inputs: list[Tensor], path: Path) -> Path:
    """Export and AOTInductor-compile one graph into `path`, atomically."""
    _views_as_reshapes(gm)
    exported = torch.export.export(_Graph(gm), tuple(inputs), strict=False)
    with _replacing(path) as tmp:
        torch._inductor.aoti_compile_and_package(exported, package_path=str(tmp))
    return path


_extract_lock = threading.Lock()
_extract_dirs: set[Path] = set()


@contextlib.contextmanager
def _extracting_beside(root: Path) -> Iterator[None]:
    """Loading a package unpacks it into `$TMPDIR/aotinductor_*`, which torch never removes
    (its kernels are read from there after the load): every start would leave a copy in /tmp.
    Unpack under `<root>/tmp/<pid>/` instead; it goes when the process exits, and a dead
    process's (a crash, SIGKILL) goes at the next load by any process."""
    own = root / "tmp" / str(os.getpid())
    with _extract_lock:
        if own not in _extract_dirs:
            for other in (root / "tmp").glob("*"):
                if other.name.isdigit() and int(other.name) != os.getpid() and not _alive(int(other.name)):
                    shutil.rmtree(other, ignore_errors=True)
            own.mkdir(parents=True, exist_ok=True)
            _extract_dirs.add(own)
            atexit.register(shutil.rmtree, own, True)
        saved = os.environ.get("TMPDIR")
        os.environ["TMPDIR"] = str(own)  # read by torch's loader when it makes its directory
        try:
            yield
        finally:
            if saved is None:
                del os.environ["TMPDIR"]
            else:
                os.environ["TMPDIR"] = saved


def _open_package(path: Path) -> Callable[..., list[Tensor]]:
    """A package as a function of its flat tensor inputs, returning its flat outputs."""
    if not path.exists():
        raise FileNotFoundError(path)
    # single-threaded: no cross-thread event waits inside a run, which a CUDA-graph capture
    # forbids (torch's own advice for AOTI under CUDA graphs); runs are serialised here instead
    with _extracting_beside(path.parent):
        try:
            runner = torch._inductor.aoti_load_package(str(path), run_single_threaded=True)
        except TypeError:  # a torch without the option: its runs then carry their own event waits
            runner = torch._inductor.aoti_load_package(str(path))
    loader = getattr(runner, "loader", None)
    boxed = getattr(loader, "boxed_run", None)  # skips the per-call pytree round trip
    lock = threading.Lock()

    def call(*inputs: Tensor) -> list[Tensor]:
        with lock:
            out = boxed(list(inputs)) if boxed is not None else runner(*inputs)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return call


__all__ = [
    "AotModule",
    "BuildReport",
    "PackageCrashed",
    "mark_preset_ready",
    "package_dir",
    "preset_packages_ready",
    "previous_crash",
    "supported",
]
