"""Ahead-of-time compiled packages (engine/guidance/aot.py): built once, loaded by later starts
without tracing, rebuilt when bad.

One small module (convolution, the layout-preserving GroupNorm, a linear over a transposed view,
two outputs, an input gradient) stands in for the UNet and the VAE encoder: its package compiles
on the CPU in seconds. tests/test_guidance.py runs the tiny guidance through the same backend.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from engine.guidance import aot
from engine.guidance.aot import AotModule
from engine.guidance.layout_norm import LayoutGroupNorm

CPU = torch.device("cpu")
# a preset as the AOT package records read it
PRESET = SimpleNamespace(name="p", ref_size=128, batch_size=4, max_batch=1, compile_backend="aot")


class Small(torch.nn.Module):
    def __init__(self, seed: int) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
            self.norm = LayoutGroupNorm(2, 8)
            self.proj = torch.nn.Linear(8, 8)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.nn.functional.silu(self.norm(self.conv(x)))
        h = self.proj(h.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(h.shape)
        a, b = h.chunk(2, dim=1)  # outputs that are views of one tensor
        return a * scale, torch.exp(b)


def _run(fn: object, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Both outputs and the input gradient of a weighted sum of them."""
    x = x.detach().clone().requires_grad_(True)
    a, b = fn(x, scale=0.5)  # type: ignore[operator]
    weights = torch.linspace(-1.0, 1.0, a.numel()).reshape(a.shape)
    (a * weights + b * weights.flip(0)).sum().backward()
    assert x.grad is not None
    return a.detach(), b.detach(), x.grad


def _same(ours: tuple[torch.Tensor, ...], reference: tuple[torch.Tensor, ...]) -> None:
    assert reference[2].abs().sum() > 0  # the gradient reaches the input
    for got, want in zip(ours, reference, strict=True):
        # fp32 on one CPU: only reassociation in inductor's fused kernels separates the two
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A package directory holding the packages of Small's call on X (built once)."""
    root = tmp_path_factory.mktemp("aot")
    module = AotModule(Small(seed=0), "small", root, CPU)
    _same(_run(module, X), _run(Small(seed=0), X))
    assert [r.state for r in module.reports] == ["built"]
    return root


def test_packages_serve_other_weights_of_the_same_architecture(built: Path, tmp_path: Path) -> None:
    # random weights differ between starts: the weights are inputs, not constants
    root = tmp_path / "aot"
    shutil.copytree(built, root)
    other = Small(seed=1)
    module = AotModule(other, "small", root, CPU)
    _same(_run(module, X), _run(other, X))
    assert [r.state for r in module.reports] == ["loaded"]


def test_loading_compiles_nothing(built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torch._dynamo.utils import counters

    root = tmp_path / "aot"
    shutil.copytree(built, root)

    def no_build(*args: object) -> None:
        raise AssertionError("a load must not compile")

    monkeypatch.setattr(AotModule, "_build", no_build)
    traced = dict(counters["stats"])
    module = AotModule(Small(seed=2), "small", root, CPU)
    _same(_run(module, X), _run(Small(seed=2), X))
    assert module.reports[0].state == "loaded" and module.reports[0].seconds < 30
    assert dict(counters["stats"]) == traced  # dynamo traced no frame


def test_a_corrupt_package_is_rebuilt_and_reported(built: Path, tmp_path: Path) -> None:
    root = tmp_path / "aot"
    shutil.copytree(built, root)
    package = next(root.glob("small-*.aotc"))
    size = package.stat().st_size
    package.write_bytes(package.read_bytes()[:1000])  # a truncated write, a full disk
    module = AotModule(Small(seed=0), "small", root, CPU)
    _same(_run(module, X), _run(Small(seed=0), X))
    (report,) = module.reports
    assert report.state == "rebuilt" and report.detail
    assert package.stat().st_size > 1000 and abs(package.stat().st_size - size) < size // 10


def test_a_package_whose_guards_reject_the_call_is_rebuilt(built: Path, tmp_path: Path) -> None:
    # the key stands for the guards torch cannot save; the ones it saves are checked once, and a
    # package under the wrong name (another shape's) is rebuilt rather than run
    root = tmp_path / "aot"
    shutil.copytree(built, root)
    (package,) = root.glob("small-*.aotc")
    wider = torch.randn(2, 3, 8, 12, generator=torch.Generator().manual_seed(6))
    module = AotModule(Small(seed=0), "small", root, CPU)
    stem = f"small-{aot._digest(module._package_key(aot._call_key((wider.requires_grad_(True),), {'scale': 0.5})))}"
    shutil.copy(package, root / (stem + aot.SUFFIX))
    _same(_run(module, wider), _run(Small(seed=0), wider))
    (report,) = module.reports
    assert report.package == stem and report.state == "rebuilt"
    assert report.detail.startswith("GuardMismatch") and "size mismatch" in report.detail


def test_package_key_follows_shapes_and_software_not_weight_values(monkeypatch: pytest.MonkeyPatch) -> None:
    module = AotModule(Small(seed=0), "small", Path("/nonexistent"), CPU)
    grad_x = X.clone().requires_grad_(True)

    def key(*args: object, **kwargs: object) -> dict[str, object]:
        return module._package_key(aot._call_key(args, kwargs))

    base = key(grad_x, scale=0.5)
    assert base == AotModule(Small(seed=9), "small", Path("/x"), CPU)._package_key(
        aot._call_key((grad_x,), {"scale": 0.5})
    )
    assert key(torch.randn(4, 3, 8, 8, requires_grad=True), scale=0.5) != base  # batch
    assert key(grad_x.to(memory_format=torch.channels_last), scale=0.5) != base  # strides
    assert key(X, scale=0.5) != base  # no gradient wanted: no backward package
    assert key(grad_x, scale=2.0) != base  # a Python constant is baked into the graph
    monkeypatch.setattr(aot, "_code_hash", lambda: "other code")
    assert key(grad_x, scale=0.5) != base


def test_a_preset_is_ready_only_with_every_package_it_recorded(tmp_path: Path) -> None:
    preset = PRESET
    assert not aot.preset_packages_ready(preset, CPU, tmp_path)  # never warmed up here
    for stem in ("unet-1", "vae-encoder-2"):
        aot._Files(tmp_path / stem).package.write_text("{}")
    aot.mark_preset_ready(preset, CPU, ["unet-1", "vae-encoder-2"], tmp_path)
    assert aot.preset_packages_ready(preset, CPU, tmp_path)
    other_shape = SimpleNamespace(**{**vars(preset), "ref_size": 256})
    more_jobs = SimpleNamespace(**{**vars(preset), "max_batch": 4})  # buckets have packages of their own
    assert not aot.preset_packages_ready(other_shape, CPU, tmp_path)
    assert not aot.preset_packages_ready(more_jobs, CPU, tmp_path)
    aot._Files(tmp_path / "vae-encoder-2").package.unlink()  # removed as corrupt, or by hand
    assert not aot.preset_packages_ready(preset, CPU, tmp_path)


CRASH_WHILE_LOADING = """
import os, signal, sys
from pathlib import Path
import torch
from engine.guidance import aot
from tests.test_aot import X, Small
torch.compiler.load_compiled_function = lambda *args, **kwargs: os.kill(os.getpid(), signal.SIGSEGV)
module = aot.AotModule(Small(seed=0), "small", Path(sys.argv[1]), torch.device("cpu"))
module(X.clone().requires_grad_(True), scale=0.5)
"""


def _copied(built: Path, tmp_path: Path) -> tuple[Path, str, aot._Files]:
    """The built package, copied where a test may leave markers: (its dir, its stem, its files)."""
    root = tmp_path / "aot"
    shutil.copytree(built, root)
    (stem,) = {p.name.removesuffix(".aotc") for p in root.glob("small-*.aotc")}
    return root, stem, aot._Files(root / stem)


def _crash_while_loading(root: Path) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_WHILE_LOADING, str(root)], cwd=repo, capture_output=True, timeout=300
    )
    assert crashed.returncode == -11, crashed.stderr.decode()[-2000:]


def test_a_package_whose_loading_killed_two_processes_is_refused_after(built: Path, tmp_path: Path) -> None:
    # seen on an H200 (torch 2.11) with the AOTInductor packages of the previous design: loading
    # one segfaulted; no except clause runs then, so without a marker every restart would load it
    # and die the same way
    root, stem, files = _copied(built, tmp_path)
    _crash_while_loading(root)
    assert list(root.glob(f"{stem}.loading-*"))  # what the dead process left
    assert aot.previous_crash(files) is None  # one death: a suspect, loaded again
    assert files.suspect.exists() and not files.crashed.exists()
    _crash_while_loading(root)
    detail = aot.previous_crash(files)
    assert detail is not None and "loading it since" in detail
    assert files.crashed.exists() and not list(root.glob(f"{stem}.loading-*"))

    module = AotModule(Small(seed=0), "small", root, CPU)
    with pytest.raises(aot.PackageCrashed, match="killed two processes that loaded it"):
        module(X.clone().requires_grad_(True), scale=0.5)
    (report,) = module.reports
    assert report.state == "crashed" and "loading it since" in report.detail
    preset = PRESET
    aot.mark_preset_ready(preset, CPU, [stem], root)
    assert not aot.preset_packages_ready(preset, CPU, root)  # a start serves early, does not trust it


def test_another_live_process_loading_the_same_packages_is_not_a_crash(built: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    root, stem, files = _copied(built, tmp_path)
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as other:
        try:
            files.loading(other.pid).write_text(f"pid {other.pid} loading it since now")
            assert aot.previous_crash(files) is None  # a second endpoint on the box, mid-load
            module = AotModule(Small(seed=0), "small", root, CPU)
            _same(_run(module, X), _run(Small(seed=0), X))
            assert [r.state for r in module.reports] == ["loaded"]
        finally:
            other.kill()
    other.wait()
    assert aot.previous_crash(files) is None  # gone without finishing: a suspect, not yet refused
    assert files.suspect.exists()


def test_one_death_while_loading_is_forgiven_once_the_package_loads(built: Path, tmp_path: Path) -> None:
    # a supervisor's SIGKILL, the OOM killer or a failed start that exits mid-decode leave the
    # same marker as a native crash: the package must not be lost to one of them
    root, stem, files = _copied(built, tmp_path)
    _crash_while_loading(root)
    module = AotModule(Small(seed=0), "small", root, CPU)
    _same(_run(module, X), _run(Small(seed=0), X))
    assert [r.state for r in module.reports] == ["loaded"]
    assert (
        not files.suspect.exists() and not files.crashed.exists()
    )  # cleared: a later death is a first again


def test_a_preloaded_package_serves_the_first_call_without_reading_it_again(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, stem, _ = _copied(built, tmp_path)
    preset = PRESET
    assert aot.preload_preset(preset, CPU, root) == []  # nothing recorded for it yet
    aot.mark_preset_ready(preset, CPU, [stem], root)
    assert aot.preload_preset(preset, CPU, root) == [stem]  # beside the weights, at a start

    def no_read(files: object) -> None:
        raise AssertionError("the preloaded package is read again")

    monkeypatch.setattr(aot, "_decode", no_read)
    module = AotModule(Small(seed=3), "small", root, CPU)
    _same(_run(module, X), _run(Small(seed=3), X))
    assert [r.state for r in module.reports] == ["loaded"]


def test_a_stopped_preload_keeps_nothing_it_decoded(
    built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the weights failed to load while the packages decoded beside them: nothing will call them
    import threading

    root, stem, _ = _copied(built, tmp_path)
    preset = PRESET
    aot.mark_preset_ready(preset, CPU, [stem], root)
    stop = threading.Event()
    decode = aot._decode

    def decode_then_fail_the_weights(files: object) -> object:
        package = decode(files)
        stop.set()  # the build thread's make_generator raised meanwhile
        return package

    monkeypatch.setattr(aot, "_decode", decode_then_fail_the_weights)
    assert aot.preload_preset(preset, CPU, root, stop=stop) == []
    assert not aot._preloaded  # the decoded package was dropped, not held in a failed process
    assert aot.preload_preset(preset, CPU, root, stop=stop) == []  # set before: decodes nothing
    module = AotModule(Small(seed=3), "small", root, CPU)  # a later start reads it from disk
    _same(_run(module, X), _run(Small(seed=3), X))
    assert [r.state for r in module.reports] == ["loaded"]


def test_unet_blocks_are_shared_out_largest_first_to_the_lightest_shard() -> None:
    from engine.guidance.regions import shard_owners

    sizes = [40, 3, 25, 25, 7, 60, 12, 31, 9]  # module counts of a UNet's blocks, say
    for shards in (1, 2, 3, 4):
        owners = shard_owners(sizes, shards)
        assert owners == shard_owners(sizes, shards) and set(owners) == set(range(shards))
        loads = [
            sum(size for size, owner in zip(sizes, owners, strict=True) if owner == s) for s in range(shards)
        ]
        assert max(loads) - min(loads) <= max(sizes)  # no shard waits on a much larger one
    assert shard_owners(sizes, 2)[sizes.index(60)] == 0  # the largest block goes first


def test_strides_of_size_one_dimensions_do_not_make_another_package(tmp_path: Path) -> None:
    # eager and compiled code leave different strides on size-1 dimensions (a UNet block's
    # [8, 64, 1, 1] output); they address nothing, so both calls are one package
    x = torch.randn(2, 3, 1, 1, generator=torch.Generator().manual_seed(2))
    y = x.as_strided(x.shape, (3, 1, 3, 3))  # the same elements, other strides
    assert y.stride() != x.stride() and torch.equal(x, y)
    module = AotModule(Small(seed=3), "small", tmp_path, CPU)
    _same(_run(module, x), _run(Small(seed=3), x))
    _same(_run(module, y), _run(Small(seed=3), y))
    assert [r.state for r in module.reports] == ["built"]
    assert len(list(tmp_path.glob("small-*" + aot.SUFFIX))) == 1
