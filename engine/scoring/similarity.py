"""SSIM and LPIPS between neighbouring views, as the validator computes them (torch).

Read from 404-Repo/three-gen-subnet, validation/engine/metrics/similarity_scorer.py (SimilarityMetrics):
- pairs are (view i, view i + 1), the last view with the first: 16 pairs for 16 views;
- SSIM: torchmetrics StructuralSimilarityIndexMeasure(data_range=1.0) on the full-size views / 255;
  torchmetrics 1.5.1 (their pin): Gaussian window sigma 1.5 (11 taps: int(3.5 sigma + 0.5) * 2 + 1),
  reflect padding of 5, k1 0.01, k2 0.03, variances clamped at 0, the SSIM map averaged over the
  whole image (functional/image/ssim.py, _ssim_update);
- LPIPS: torchmetrics LearnedPerceptualImagePatchSimilarity(normalize=True), net "alex": each view
  / 255, bicubic resize to 256 (align_corners=False), clipped to [0, 1]; then x * 2 - 1, the LPIPS
  scaling layer, torchvision AlexNet's five ReLU outputs (features[0:2], [2:5], [5:8], [8:10],
  [10:12]), unit-normalised over channels (eps 1e-8 under the root), squared difference, a 1x1
  conv per layer (no bias), spatial mean, summed over layers (functional/image/lpips.py, _LPIPS).
Our code implements those rules; it copies none of theirs.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine import startup
from engine.scoring.seeded import seeded_init
from engine.scoring.weights import require_lpips

SSIM_SIGMA = 1.5
SSIM_K1, SSIM_K2 = 0.01, 0.03
LPIPS_SIZE = 256
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
ALEX_CHANNELS = (64, 192, 384, 256, 256)
ALEX_TAPS = (2, 5, 8, 10, 12)  # AlexNet.features indices after which LPIPS reads an activation
LPIPS_SEED = 405


def neighbour_pairs(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(views, the next view of each): view i against view (i + 1) % n."""
    return images, torch.roll(images, shifts=-1, dims=0)


def _gaussian_window(sigma: float, device: torch.device) -> torch.Tensor:
    taps = int(3.5 * sigma + 0.5) * 2 + 1
    d = torch.arange((1 - taps) / 2, (1 + taps) / 2, 1.0, device=device)
    g = torch.exp(-((d / sigma) ** 2) / 2)
    g = (g / g.sum()).unsqueeze(0)
    return g.t() @ g  # (taps, taps)


def ssim_pairs(images: torch.Tensor, chunk: int = 4) -> np.ndarray:
    """SSIM of each view with the next one, float64 (n,), from uint8 (n, H, W, 3) views."""
    a_all, b_all = neighbour_pairs(images)
    out = []
    for i in range(0, images.shape[0], chunk):  # bounds memory: 5 x chunk x 3 x H x W floats
        a = a_all[i : i + chunk].permute(0, 3, 1, 2).float() / 255.0
        b = b_all[i : i + chunk].permute(0, 3, 1, 2).float() / 255.0
        window = _gaussian_window(SSIM_SIGMA, a.device)
        pad = (window.shape[0] - 1) // 2
        a = F.pad(a, (pad,) * 4, mode="reflect")
        b = F.pad(b, (pad,) * 4, mode="reflect")
        kernel = window.expand(3, 1, *window.shape)
        stats = F.conv2d(torch.cat((a, b, a * a, b * b, a * b)), kernel, groups=3).split(a.shape[0])
        mu_a2, mu_b2, mu_ab = stats[0] ** 2, stats[1] ** 2, stats[0] * stats[1]
        var_a = torch.clamp(stats[2] - mu_a2, min=0.0)
        var_b = torch.clamp(stats[3] - mu_b2, min=0.0)
        cov = stats[4] - mu_ab
        c1, c2 = SSIM_K1**2, SSIM_K2**2  # data range 1
        ssim_map = ((2 * mu_ab + c1) * (2 * cov + c2)) / ((mu_a2 + mu_b2 + c1) * (var_a + var_b + c2))
        out.append(ssim_map.reshape(ssim_map.shape[0], -1).mean(-1))
    return torch.cat(out).double().cpu().numpy()


class LpipsNet(nn.Module):
    """LPIPS (AlexNet variant): `features` is torchvision's AlexNet.features, `lins` the five 1x1
    convs of the LPIPS v0.1 linear layers."""

    def __init__(self) -> None:
        super().__init__()
        startup.reveal("torchvision")  # engine/startup.py hides it from a gen404 process
        from torchvision.models import alexnet

        self.features = alexnet(weights=None).features
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in ALEX_CHANNELS)

    def _activations(self, x: torch.Tensor) -> list[torch.Tensor]:
        acts, start = [], 0
        for tap in ALEX_TAPS:
            x = self.features[start:tap](x)
            acts.append(x / torch.sqrt(1e-8 + torch.sum(x**2, dim=1, keepdim=True)))
            start = tap
        return acts

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Distances (B,) between images in [0, 1]."""
        shift = torch.tensor(LPIPS_SHIFT, device=a.device).view(1, 3, 1, 1)
        scale = torch.tensor(LPIPS_SCALE, device=a.device).view(1, 3, 1, 1)
        fa = self._activations(((2 * a - 1) - shift) / scale)
        fb = self._activations(((2 * b - 1) - shift) / scale)
        distance = torch.zeros(a.shape[0], device=a.device)
        for lin, x, y in zip(self.lins, fa, fb, strict=True):
            distance = distance + lin((x - y) ** 2).mean(dim=(1, 2, 3))
        return distance


def build_lpips(device: torch.device, random_weights: bool) -> LpipsNet:
    net = LpipsNet()
    if random_weights:
        seeded_init(net, LPIPS_SEED)
        with torch.no_grad():  # LPIPS linear weights are non-negative (their training clamps them)
            for lin in net.lins:
                assert isinstance(lin, nn.Conv2d)
                lin.weight.abs_()
    else:
        alex_file, lin_file = require_lpips()
        load_lpips_weights(net, alex_file, lin_file)
    return net.to(device).eval()


def load_lpips_weights(net: LpipsNet, alex_file: str, lin_file: str) -> None:
    """torchvision's AlexNet checkpoint (features.* keys) and the LPIPS v0.1 alex.pth (linK.model.1.weight)."""
    alex = torch.load(alex_file, map_location="cpu", weights_only=True)
    net.features.load_state_dict(
        {k[len("features.") :]: v for k, v in alex.items() if k.startswith("features.")}
    )
    lins = torch.load(lin_file, map_location="cpu", weights_only=True)
    for i, lin in enumerate(net.lins):
        assert isinstance(lin, nn.Conv2d)
        key = next((k for k in (f"lin{i}.model.1.weight", f"lin{i}.model.0.weight") if k in lins), None)
        if key is None:
            raise ValueError(f"{lin_file} is not an LPIPS alex checkpoint (no lin{i} weights)")
        lin.weight.data.copy_(lins[key])


def lpips_resize(views: torch.Tensor) -> torch.Tensor:
    """uint8 (n, H, W, 3) -> float (n, 3, 256, 256) in [0, 1], as the validator feeds LPIPS."""
    x = views.permute(0, 3, 1, 2).float() / 255.0
    return torch.clip(F.interpolate(x, size=(LPIPS_SIZE,) * 2, mode="bicubic", align_corners=False), 0, 1)


class LpipsScorer:
    def __init__(self, device: torch.device, random_weights: bool) -> None:
        self.device = device
        self.random_weights = random_weights
        self._net: LpipsNet | None = None

    @property
    def loaded(self) -> bool:
        return self._net is not None

    def load(self) -> None:
        if self._net is None:
            self._net = build_lpips(self.device, self.random_weights)

    @torch.no_grad()
    def pairs(self, images: torch.Tensor) -> np.ndarray:
        """LPIPS distance of each view with the next one, float64 (n,)."""
        self.load()
        assert self._net is not None
        x = lpips_resize(images.to(self.device))
        a, b = neighbour_pairs(x)
        return self._net(a, b).double().cpu().numpy()
