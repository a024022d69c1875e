"""Trainable 3D Gaussians: reference init, activations, Adam, densify/prune with optimiser surgery.

Parameters are stored pre-activation, as in a 404 PLY (see engine/splats.py): means, SH DC colour,
opacity logits, log scales, wxyz quaternions. Densification follows 3DGS / DreamGaussian: the
view-space 2D gradient of each Gaussian's projected mean (pixel gradients converted to NDC units,
as gsplat's default strategy does, so thresholds match the reference's) is averaged over the
views that saw it; large-gradient Gaussians are cloned when small and split when large.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.optim.adam import adam

from engine.splats import SH_C0, Splats

log = logging.getLogger("gen404.gaussians")

PARAM_NAMES = ("means", "sh_dc", "opacities", "scales", "quats")
IDENTITY_QUAT = np.array([1.0, 0.0, 0.0, 0.0], np.float32)
KNN_CHUNK_ELEMENTS = 1 << 24  # cdist block size: 64 MiB of float32 whatever N is


def inverse_sigmoid(x: float) -> float:
    return math.log(x / (1.0 - x))


def mean_knn_distance(points: torch.Tensor, k: int = 3) -> torch.Tensor:
    """Root of the mean squared distance to the k nearest neighbours (as the reference's distCUDA2).

    Chunked over rows so memory stays O(N * chunk), not O(N^2).
    """
    n = points.shape[0]
    if n <= 1:
        return torch.ones(n, device=points.device)
    k = min(k, n - 1)
    rows = max(1, KNN_CHUNK_ELEMENTS // n)
    out = torch.empty(n, device=points.device)
    for start in range(0, n, rows):
        block = points[start : start + rows]
        d2 = torch.cdist(block, points).square_()
        idx = torch.arange(block.shape[0], device=points.device)
        d2[idx, idx + start] = float("inf")  # not its own neighbour
        out[start : start + rows] = d2.topk(k, dim=1, largest=False).values.mean(dim=1)
    return out.clamp_min(1e-7).sqrt()


def quat_to_rotmat(q: torch.Tensor) -> torch.Tensor:
    """(N,4) wxyz (any length) -> (N,3,3)."""
    w, x, y, z = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    ).reshape(-1, 3, 3)  # fmt: skip


# pre-activation -> what the rasterizer takes; RENDER_ORDER is its argument order after means
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "means": lambda t: t,
    "quats": lambda t: torch.nn.functional.normalize(t, dim=-1),
    "scales": torch.exp,
    "opacities": torch.sigmoid,
    # SH degree 0, evaluated as gsplat does: 0.5 + C0 * dc, clamped at 0
    "sh_dc": lambda t: (0.5 + SH_C0 * t).clamp_min(0.0),
}
RENDER_ORDER = ("means", "quats", "scales", "opacities", "sh_dc")
# batch padding: opacity exactly 0 (culled by both rasterizers); the rest finite and harmless
PADDING = {"means": 0.0, "quats": 1.0, "scales": 0.0, "opacities": -math.inf, "sh_dc": 0.0}


def view_gradient_stats(
    grads: torch.Tensor, radii: torch.Tensor, width: int, height: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Densification statistics of one step: (..., C, N, 2) view-space gradients in pixels and
    (..., C, N) radii -> per-Gaussian (..., N) sums of NDC gradient norms and visible views."""
    grads = grads.detach()
    cameras = grads.shape[-3]
    # pixel -> NDC units, times the views that shared the (mean-reduced) loss: gsplat's rule
    norms = torch.hypot(grads[..., 0] * (width / 2.0 * cameras), grads[..., 1] * (height / 2.0 * cameras))
    # masked sums over the views instead of nonzero()/boolean indexing: no host sync per step
    visible = radii > 0
    return norms.masked_fill_(~visible, 0.0).sum(dim=-2), visible.sum(dim=-2, dtype=torch.float32)


class _AdamHyper(NamedTuple):
    """What one fused Adam launch shares across its tensors."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    maximize: bool


def adam_step_together(optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """One Adam step of several fused Adam optimisers, the same arithmetic as each one's step(),
    with one fused launch per distinct set of hyperparameters instead of one per param group.

    A batch's jobs share their learning rates (the position lr too, for jobs at the same step),
    so J jobs x 5 groups become about 5 launches, and each launch costs the host the same Python
    whatever its tensor count. State is created lazily as Adam creates it (step on the device for
    fused), so a job's later step() and densification's moment surgery see what they expect.
    Optimisers that are not plain fused Adam (amsgrad, decoupled weight decay) step on their own.
    """
    batches: dict[_AdamHyper, tuple[list[torch.Tensor], ...]] = {}
    for opt in optimizers:
        groups = opt.param_groups
        plain = all(
            g["fused"] and not g["amsgrad"] and not g.get("decoupled_weight_decay", False) for g in groups
        )
        if not isinstance(opt, torch.optim.Adam) or not plain:
            opt.step()
            continue
        for group in groups:
            beta1, beta2 = group["betas"]
            key = _AdamHyper(
                float(group["lr"]),
                float(beta1),
                float(beta2),
                float(group["eps"]),
                float(group["weight_decay"]),
                bool(group["maximize"]),
            )
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = opt.state[param]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                lists = batches.setdefault(key, ([], [], [], [], []))
                for found, item in zip(
                    lists,
                    (param, param.grad, state["exp_avg"], state["exp_avg_sq"], state["step"]),
                    strict=True,
                ):
                    found.append(item)
    with torch.no_grad():
        for h, (params, grads, exp_avgs, exp_avg_sqs, steps) in batches.items():
            adam(
                params, grads, exp_avgs, exp_avg_sqs, [], steps,
                fused=True, amsgrad=False, beta1=h.beta1, beta2=h.beta2,
                lr=h.lr, weight_decay=h.weight_decay, eps=h.eps, maximize=h.maximize,
            )  # fmt: skip


@dataclass(frozen=True)
class LearningRates:
    position_init: float = 1e-3
    position_final: float = 2e-5
    feature: float = 0.01
    opacity: float = 0.05
    scaling: float = 5e-3
    rotation: float = 5e-3


@dataclass(frozen=True)
class DensifyResult:
    cloned: int
    split: int
    pruned: int
    total: int


class GaussianModel:
    def __init__(self, params: Mapping[str, torch.Tensor]) -> None:
        self.params = {name: torch.nn.Parameter(params[name].detach().clone()) for name in PARAM_NAMES}
        self.optimizer: torch.optim.Adam | None = None
        self.lrs = LearningRates()
        self._reset_stats()

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def random_init(
        cls,
        num_pts: int,
        generator: torch.Generator,
        device: str | torch.device = "cpu",
        radius: float = 0.5,
    ) -> GaussianModel:
        """The reference init: uniform in a ball, near-grey, alpha 0.1, kNN scale, identity rotation.

        Sampled with `generator` on the CPU, then moved, so a seed gives the same init on any device.
        """
        g = generator
        phi = torch.rand(num_pts, generator=g) * 2 * math.pi
        cos_theta = torch.rand(num_pts, generator=g) * 2 - 1
        r = radius * torch.rand(num_pts, generator=g).pow(1 / 3)  # cube root: uniform in volume
        sin_theta = (1 - cos_theta.square()).sqrt()
        means = torch.stack([r * sin_theta * phi.cos(), r * sin_theta * phi.sin(), r * cos_theta], dim=-1)
        # reference: shs = rand / 255 taken as the SH DC colour, i.e. rgb ~ 0.5 (grey)
        sh_dc = torch.rand(num_pts, 3, generator=g) / 255.0
        opacities = torch.full((num_pts,), inverse_sigmoid(0.1))
        quats = torch.zeros(num_pts, 4)
        quats[:, 0] = 1.0
        params = {"means": means, "sh_dc": sh_dc, "opacities": opacities, "quats": quats}
        params = {k: v.to(device) for k, v in params.items()}
        params["scales"] = mean_knn_distance(params["means"]).log()[:, None].repeat(1, 3)
        return cls(params)

    @classmethod
    def from_splats(cls, splats: Splats, device: str | torch.device = "cpu") -> GaussianModel:
        arrays = {
            "means": splats.positions,
            "sh_dc": splats.sh_dc,
            "opacities": splats.opacities,
            "scales": splats.scales,
            "quats": splats.rotations,
        }
        return cls({k: torch.as_tensor(v, dtype=torch.float32, device=device) for k, v in arrays.items()})

    def __len__(self) -> int:
        return int(self.params["means"].shape[0])

    @property
    def device(self) -> torch.device:
        return self.params["means"].device

    # --- activations (what the rasterizer takes) ------------------------------------------------

    @property
    def means(self) -> torch.Tensor:
        return self.params["means"]

    @property
    def scales(self) -> torch.Tensor:
        return ACTIVATIONS["scales"](self.params["scales"])

    @property
    def opacities(self) -> torch.Tensor:
        return ACTIVATIONS["opacities"](self.params["opacities"])

    @property
    def quats(self) -> torch.Tensor:
        return ACTIVATIONS["quats"](self.params["quats"])

    @property
    def colors(self) -> torch.Tensor:
        return ACTIVATIONS["sh_dc"](self.params["sh_dc"])

    @staticmethod
    def stacked(
        models: Sequence[GaussianModel],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Several models' activated means, quats, scales, opacities and colors, each (J, N, ...)
        with N the largest count: shorter models are padded with Gaussians of opacity exactly 0
        (logit -inf), which the rasterizers cull, for one batched rasterization. Gradients flow
        back to each model's own parameters; the padding gets none."""
        means, quats, scales, opacities, colors = (
            ACTIVATIONS[name](
                pad_sequence([m.params[name] for m in models], batch_first=True, padding_value=PADDING[name])
            )
            for name in RENDER_ORDER
        )
        return means, quats, scales, opacities, colors

    # --- optimiser ------------------------------------------------------------------------------

    def setup_optimizer(self, lrs: LearningRates, fused: bool = False) -> torch.optim.Adam:
        """Adam as the reference's (eps 1e-15); `fused` (CUDA only): one kernel per group."""
        self.lrs = lrs
        groups = [
            {"params": [self.params["means"]], "lr": lrs.position_init, "name": "means"},
            {"params": [self.params["sh_dc"]], "lr": lrs.feature, "name": "sh_dc"},
            {"params": [self.params["opacities"]], "lr": lrs.opacity, "name": "opacities"},
            {"params": [self.params["scales"]], "lr": lrs.scaling, "name": "scales"},
            {"params": [self.params["quats"]], "lr": lrs.rotation, "name": "quats"},
        ]
        fused = fused and self.device.type == "cuda"
        self.optimizer = torch.optim.Adam(groups, lr=0.0, eps=1e-15, fused=fused or None)
        return self.optimizer

    def update_learning_rate(self, step: int, total: int) -> float:
        """Position lr decays log-linearly from init to final over the run (as the reference's)."""
        t = min(max(step / max(total, 1), 0.0), 1.0)
        init, final = self.lrs.position_init, self.lrs.position_final
        lr = math.exp((1 - t) * math.log(init) + t * math.log(final)) if init > 0 and final > 0 else init
        assert self.optimizer is not None
        for group in self.optimizer.param_groups:
            if group["name"] == "means":
                group["lr"] = lr
        return lr

    # --- densification --------------------------------------------------------------------------

    def _reset_stats(self) -> None:
        n = len(self)
        self.grad_accum = torch.zeros(n, device=self.device)
        self.grad_count = torch.zeros(n, device=self.device)

    def add_densification_stats(
        self, means2d: torch.Tensor, radii: torch.Tensor, width: int, height: int
    ) -> None:
        """Accumulate the renderer's view-space gradients (info["means2d"] after backward)."""
        if means2d.grad is None:
            return
        self.add_view_stats(*view_gradient_stats(means2d.grad, radii, width, height))

    def add_view_stats(self, norm_sums: torch.Tensor, counts: torch.Tensor) -> None:
        """Add one step's (N,) sums from `view_gradient_stats`."""
        self.grad_accum += norm_sums
        self.grad_count += counts

    def densify_and_prune(
        self,
        grad_threshold: float,
        scale_threshold: float,
        min_opacity: float,
        max_scale: float,
        max_gaussians: int,
        generator: torch.Generator | None = None,
    ) -> DensifyResult:
        """Clone small / split large high-gradient Gaussians, then prune faint or huge ones."""
        n = len(self)
        grads = self.grad_accum / self.grad_count.clamp_min(1)
        candidates = grads >= grad_threshold
        budget = max(max_gaussians - n, 0)  # clone and split each add one Gaussian net
        if int(candidates.sum()) > budget:
            keep_top = torch.zeros_like(candidates)
            if budget:
                keep_top[grads.topk(budget).indices] = True
            candidates &= keep_top
        with torch.no_grad():
            big = self.scales.max(dim=1).values > scale_threshold
            clone, split = candidates & ~big, candidates & big
            new = _concat(self._select(clone), self._split_children(split, 2, generator))
            self._rebuild(~split, new)
            faint = self.opacities < min_opacity
            huge = self.scales.max(dim=1).values > max_scale
            prune = faint | huge
            if bool(prune.all()):  # never prune to nothing: keep the model trainable
                prune = torch.zeros_like(prune)
            self._rebuild(~prune, None)
        self._reset_stats()
        return DensifyResult(int(clone.sum()), int(split.sum()), int(prune.sum()), len(self))

    def prune(self, min_opacity: float) -> int:
        """Remove Gaussians fainter than min_opacity (keeps all if that would remove all)."""
        with torch.no_grad():
            faint = self.opacities < min_opacity
            if bool(faint.all()) or not bool(faint.any()):
                return 0
            self._rebuild(~faint, None)
        self._reset_stats()
        return int(faint.sum())

    def grow_to(self, target: int, generator: torch.Generator | None = None) -> int:
        """Split the largest Gaussians until there are at least `target`; returns how many were added.

        Used at export so a short run still passes the validator's count gate; each split replaces
        one Gaussian by two smaller jittered ones covering the same volume.
        """
        added = 0
        with torch.no_grad():
            while 0 < len(self) < target:
                k = min(len(self), target - len(self))
                largest = self.scales.max(dim=1).values.topk(k).indices
                mask = torch.zeros(len(self), dtype=torch.bool, device=self.device)
                mask[largest] = True
                self._rebuild(~mask, self._split_children(mask, 2, generator))
                added += k
        if added:
            self._reset_stats()
        return added

    def _select(self, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {name: p.detach()[mask] for name, p in self.params.items()}

    def _split_children(
        self, mask: torch.Tensor, children: int, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """`children` samples per masked Gaussian drawn from it, scales shrunk by 1 / (0.8 * children)."""
        parents = self._select(mask)
        scales = parents["scales"].exp().repeat(children, 1)
        noise = torch.randn(scales.shape, generator=generator, device="cpu").to(self.device)
        rot = quat_to_rotmat(parents["quats"]).repeat(children, 1, 1)
        offsets = (rot @ (noise * scales).unsqueeze(-1)).squeeze(-1)
        out = {name: v.repeat(children, *[1] * (v.dim() - 1)) for name, v in parents.items()}
        out["means"] = out["means"] + offsets
        out["scales"] = (scales / (0.8 * children)).log()
        return out

    def _rebuild(self, keep: torch.Tensor, new: dict[str, torch.Tensor] | None) -> None:
        """Keep rows `keep`, append `new`; Adam moments follow (appended rows start at zero)."""
        state = self.optimizer.state if self.optimizer is not None else {}
        for name in PARAM_NAMES:
            old = self.params[name]
            tail = new[name] if new is not None else old.detach()[:0]
            param = torch.nn.Parameter(torch.cat([old.detach()[keep], tail]))
            if old in state:
                st = state.pop(old)
                for key in ("exp_avg", "exp_avg_sq"):
                    st[key] = torch.cat([st[key][keep], torch.zeros_like(tail)])
                state[param] = st
            if self.optimizer is not None:
                for group in self.optimizer.param_groups:
                    if group["name"] == name:
                        group["params"][0] = param
            self.params[name] = param

    # --- export ---------------------------------------------------------------------------------

    def to_splats(self) -> Splats:
        p = {name: t.detach().float().cpu().numpy() for name, t in self.params.items()}
        norms = np.linalg.norm(p["quats"], axis=1, keepdims=True)
        rotations = np.where(norms > 0, p["quats"] / np.maximum(norms, 1e-12), IDENTITY_QUAT)
        return Splats(
            positions=p["means"],
            sh_dc=p["sh_dc"],
            sh_rest=np.zeros((len(self), 0, 3), np.float32),
            opacities=p["opacities"],
            scales=p["scales"],
            rotations=rotations.astype(np.float32),
        )


def _concat(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: torch.cat([a[name], b[name]]) for name in PARAM_NAMES}
