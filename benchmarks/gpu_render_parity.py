"""gsplat (CUDA) vs the pure-torch reference rasterizer: image and gradient parity, timings.

Self-contained: run from the repo root (or anywhere) on a CUDA box with gsplat installed.

    python -m benchmarks.gpu_render_parity [--vectors tests/vectors] [--repeats 10]

Prints, for a random scene and for hamburger.ply in the validator's reference view: mean
absolute image difference (target <= 2e-3), cosine similarity of the gradients wrt means,
colours, opacities, scales, quats (target > 0.9 for the first three), then render times of
gsplat and of the torch backend (on CPU and on CUDA). gsplat compiles its CUDA kernels on
first use (about 90 s); that warm-up is timed separately. Each section runs on its own so
one failure does not hide the others.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from engine.cameras import camera_tensors, orbit_c2w, sample_orbit_group
from engine.render import rasterize

REPO = Path(__file__).resolve().parents[1]

Scene = list[torch.Tensor]  # means, quats, scales (linear), opacities, colors


def random_scene(n: int, seed: int = 0) -> Scene:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.rand(n, 3, generator=gen) - 0.5) * 0.9,
        torch.randn(n, 4, generator=gen),
        torch.rand(n, 3, generator=gen) * 0.04 + 0.005,
        torch.rand(n, generator=gen) * 0.9 + 0.05,
        torch.rand(n, 3, generator=gen),
    ]


def read_gaussian_ply(path: Path) -> dict[str, np.ndarray]:
    """Columns of a binary little-endian, all-float Gaussian PLY, by property name. Kept here,
    not engine.formats, so this script needs nothing beyond torch, numpy and gsplat."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    count = next(int(line.split()[2]) for line in header if line.startswith("element vertex"))
    names = [line.split()[2] for line in header if line.startswith("property float")]
    table = np.frombuffer(data, dtype="<f4", count=count * len(names), offset=end).reshape(count, len(names))
    return {name: table[:, i] for i, name in enumerate(names)}


def hamburger_scene(vectors: Path) -> Scene:
    """hamburger.ply prepared as the validator's reference render (bbox 1.0, opacity / scale)."""
    cols = read_gaussian_ply(vectors / "hamburger.ply")
    pos = np.stack([cols["x"], cols["y"], cols["z"]], 1).astype(np.float64)
    quats = np.stack([cols[f"rot_{i}"] for i in range(4)], 1).astype(np.float64)
    s = 1.0 / float((pos.max(0) - pos.min(0)).max())
    arrays = [
        (pos - pos.mean()) * s,
        quats / np.linalg.norm(quats, axis=1, keepdims=True),
        np.exp(np.stack([cols[f"scale_{i}"] for i in range(3)], 1).astype(np.float64)) * s,
        np.clip(1.0 / (1.0 + np.exp(-cols["opacity"].astype(np.float64))) / s, 0.0, 1.0),
        0.5 + 0.28209479177387814 * np.stack([cols[f"f_dc_{i}"] for i in range(3)], 1),
    ]
    return [torch.tensor(a, dtype=torch.float32) for a in arrays]


def render(
    scene: Scene, cams: tuple[torch.Tensor, torch.Tensor], size: int, device: str, backend: str, grad: bool
):
    """Images and gradients of a fixed random weighting of them (wrt the 5 inputs)."""
    leaves = [t.to(device).detach().requires_grad_(grad) for t in scene]
    viewmats, ks = (t.to(device) for t in cams)
    images, _ = rasterize(*leaves, viewmats, ks, size, size, torch.ones(3, device=device), backend=backend)
    grads = None
    if grad:
        weights = torch.rand(images.shape, generator=torch.Generator().manual_seed(1)).to(device)
        (images * weights).sum().backward()
        grads = [leaf.grad.detach().cpu() for leaf in leaves]
    return images.detach().cpu(), grads


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-30))


def timed(fn: Callable[[], object], repeats: int, cuda: bool) -> float:
    """Median seconds of fn() over `repeats` runs (after one warm-up)."""
    fn()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def parity(name: str, scene: Scene, cams: tuple[torch.Tensor, torch.Tensor], size: int) -> None:
    ref_img, ref_grads = render(scene, cams, size, "cpu", "torch", grad=True)
    gs_img, gs_grads = render(scene, cams, size, "cuda", "gsplat", grad=True)
    mae = float((ref_img - gs_img).abs().mean())
    max_abs = float((ref_img - gs_img).abs().max())
    print(f"[{name}] {len(scene[0])} Gaussians, {cams[0].shape[0]} views of {size}px")
    print(f"  image MAE {mae:.2e} (target <= 2e-3, {'ok' if mae <= 2e-3 else 'FAIL'}), max abs {max_abs:.3f}")
    for label, a, b in zip(
        ("means", "quats", "scales", "opacities", "colors"), ref_grads, gs_grads, strict=True
    ):
        c = cosine(a, b)
        ratio = float(b.norm() / a.norm().clamp_min(1e-30))
        flag = "" if label in ("quats", "scales") else (" ok" if c > 0.9 else " FAIL")
        print(f"  grad {label:9s} cosine {c:.4f}  |gsplat|/|torch| {ratio:.3f}{flag}")


def timings(
    name: str, scene: Scene, cams: tuple[torch.Tensor, torch.Tensor], size: int, repeats: int
) -> None:
    print(f"[{name}] median of {repeats}, seconds: forward | forward+backward")
    for label, device, backend in (
        ("gsplat cuda", "cuda", "gsplat"),
        ("torch  cuda", "cuda", "torch"),
        ("torch  cpu ", "cpu", "torch"),
    ):
        reps = repeats if device == "cuda" else max(1, repeats // 5)
        fwd = timed(
            lambda d=device, b=backend: render(scene, cams, size, d, b, grad=False), reps, device == "cuda"
        )
        both = timed(
            lambda d=device, b=backend: render(scene, cams, size, d, b, grad=True), reps, device == "cuda"
        )
        print(f"  {label}: {fwd:8.4f} | {both:8.4f}")


def section(title: str, fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:
        print(f"[{title}] FAILED:")
        traceback.print_exc(file=sys.stdout)
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vectors", type=Path, default=REPO / "tests" / "vectors")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("needs CUDA")
    import gsplat

    print(f"torch {torch.__version__}, gsplat {gsplat.__version__}, {torch.cuda.get_device_name()}")
    torch.set_num_threads(max(1, min(16, torch.get_num_threads())))
    print(f"CPU threads for the torch backend: {torch.get_num_threads()}")

    t0 = time.perf_counter()
    small = random_scene(100)
    section(
        "warm-up",
        lambda: render(
            small, camera_tensors(orbit_c2w(0, 0, 2.5)[None], 49.1, 32, 32), 32, "cuda", "gsplat", True
        ),
    )
    print(f"gsplat first call (CUDA compile / load): {time.perf_counter() - t0:.1f} s")

    scene = random_scene(5000)
    cams = camera_tensors(sample_orbit_group(np.random.default_rng(0), 4), 49.1, 128, 128)
    section("random", lambda: parity("random", scene, cams, 128))

    ref_cam = camera_tensors(orbit_c2w(0.0, 45.0, 3.0)[None], 49.1, 270, 270)
    burger: Scene = []
    if (args.vectors / "hamburger.ply").is_file():
        section("hamburger load", lambda: burger.extend(hamburger_scene(args.vectors)))
    if burger:
        section("hamburger", lambda: parity("hamburger", burger, ref_cam, 270))
    else:
        print(f"[hamburger] skipped: no {args.vectors / 'hamburger.ply'} (use --vectors)")

    section(
        "timing smoke",
        lambda: timings("smoke-like: 5000 Gaussians, 4 x 128px", scene, cams, 128, args.repeats),
    )
    if burger:
        cams16 = camera_tensors(
            np.stack([orbit_c2w(-15, a, 2.5) for a in np.linspace(0, 360, 16)]), 49.1, 518, 518
        )
        section(
            "timing hamburger", lambda: timings("hamburger, 1 x 270px", burger, ref_cam, 270, args.repeats)
        )
        section(
            "timing validator",
            lambda: timings(
                "hamburger, validator 16 x 518px", burger, cams16, 518, max(1, args.repeats // 2)
            ),
        )


if __name__ == "__main__":
    main()
