"""CPU forward+backward time of the torch rasterizer on a smoke-preset-like step.

A freshly initialised scene as the reference generator makes it (404-reference section 6):
points in a ball of radius 0.5, near-grey colours, opacity 0.1, scale = mean distance to the
3 nearest neighbours, identity rotations; one step renders 4 views 90 degrees apart.

    python -m benchmarks.bench_render_cpu [--gaussians 2000 10000] [--size 64 128] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from engine.cameras import camera_tensors, sample_orbit_group
from engine.render import rasterize


def init_scene(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=gen), dim=-1)
    means = direction * 0.5 * torch.rand(n, 1, generator=gen) ** (1 / 3)
    knn = torch.cat(
        [torch.cdist(chunk, means).topk(4, largest=False).values[:, 1:] for chunk in means.split(2048)]
    )
    scale = knn.mean(-1, keepdim=True).expand(n, 3)
    return {
        "means": means,
        "quats": torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        "log_scales": scale.log(),
        "opacity_logits": torch.full((n,), float(np.log(0.1 / 0.9))),
        "colors": 0.5 + 0.05 * torch.randn(n, 3, generator=gen),
    }


def step_time(scene: dict[str, torch.Tensor], size: int, repeats: int, seed: int = 0) -> tuple[float, float]:
    """Median seconds of (forward, forward+backward) over `repeats` steps with fresh cameras."""
    params = {k: v.clone().requires_grad_(True) for k, v in scene.items()}
    rng = np.random.default_rng(seed)
    fwd, total = [], []
    for _ in range(repeats):
        viewmats, ks = camera_tensors(sample_orbit_group(rng, 4), 49.1, size, size)
        t0 = time.perf_counter()
        images, info = rasterize(
            params["means"],
            params["quats"],
            params["log_scales"].exp(),
            torch.sigmoid(params["opacity_logits"]),
            params["colors"],
            viewmats,
            ks,
            size,
            size,
            torch.ones(3),
            backend="torch",
        )
        t1 = time.perf_counter()
        images.square().mean().backward()
        t2 = time.perf_counter()
        fwd.append(t1 - t0)
        total.append(t2 - t0)
        for p in params.values():
            p.grad = None
    return float(np.median(fwd)), float(np.median(total))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--size", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    # On a shared, oversubscribed box OpenMP's default spin-waiting can slow a step 10x or more;
    # OMP_WAIT_POLICY=PASSIVE (set before Python starts) avoids it.
    wait = os.environ.get("OMP_WAIT_POLICY", "default")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, OMP_WAIT_POLICY={wait}; "
        f"4 views per step, median of {args.repeats}"
    )
    print(f"{'gaussians':>9} {'size':>5} {'forward s':>10} {'fwd+bwd s':>10}")
    for n in args.gaussians:
        scene = init_scene(n)
        for size in args.size:
            fwd, total = step_time(scene, size, args.repeats)
            print(f"{n:>9} {size:>5} {fwd:>10.3f} {total:>10.3f}")


if __name__ == "__main__":
    main()
