"""Scorer: load the CLIP model once, then score results (Splats, PLY bytes or SPZ bytes).

The flow is the validator's (404-Repo/three-gen-subnet, validation/server/pipeline.py
decode_and_validate_txt): decode -> validity gate on the loaded data -> transform and render the
16 views -> CLIP text alignment. A result failing the gate is not rendered and scores 0.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from engine.formats import ply, spz
from engine.gate import check_gate
from engine.render import Backend, select_backend
from engine.scoring.alignment import alignment_from_cosines, fidelity_estimate
from engine.scoring.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED, ClipEmbedder
from engine.scoring.transform import validator_transform
from engine.scoring.views import VALIDATOR_SIZE, VALIDATOR_VIEWS, render_validator_views
from engine.splats import Splats

COMPRESSION_PLY = 0
COMPRESSION_SPZ = 2


class ResultDecodeError(ValueError):
    """The submitted bytes are not a result we can read (bad PLY / SPZ, wrong compression code)."""


def decode_result(data: bytes, compression: int | None = None) -> Splats:
    """PLY (0) or SPZ (2) bytes -> Splats; None sniffs the format from the first bytes."""
    if compression is None:
        compression = COMPRESSION_SPZ if data[:4] == spz.ZSTD_FRAME_MAGIC else COMPRESSION_PLY
    if compression == COMPRESSION_PLY:
        try:
            return ply.read_ply(data)
        except ply.PlyError as exc:
            raise ResultDecodeError(f"not a Gaussian PLY: {exc}") from exc
    if compression == COMPRESSION_SPZ:
        try:
            return spz.spz_to_splats(data)
        except (spz.SpzError, ply.PlyError) as exc:
            raise ResultDecodeError(f"not a 404 SPZ: {exc}") from exc
    raise ResultDecodeError(f"unsupported compression {compression}: use 0 (PLY) or 2 (SPZ)")


@dataclass
class ScoreReport:
    prompt: str
    splats: int
    gate_passed: bool
    gate_reason: str
    cosines: list[float] = field(default_factory=list)  # per view, azimuth order
    kept: list[bool] = field(default_factory=list)  # per view: survived the outlier filter
    geometric_mean: float | None = None
    alignment_raw: float | None = None  # the subnet's value (not capped)
    alignment: float = 0.0  # capped at 1
    fidelity: float = 0.0  # 0 if the gate fails or alignment < 0.3, else the alignment
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    size: int = VALIDATOR_SIZE
    device: str = "cpu"
    backend: str = "torch"
    images: torch.Tensor | None = field(default=None, repr=False)  # uint8 (C,H,W,3) if kept

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("images")
        return out

    def summary(self) -> str:
        verdict = "gate ok" if self.gate_passed else f"gate FAILED ({self.gate_reason})"
        kept = sum(self.kept)
        views = f", {kept}/{len(self.cosines)} views kept" if self.cosines else ""
        return (
            f"fidelity {self.fidelity:.3f}  alignment {self.alignment:.3f}  {verdict}{views}  "
            f"{self.splats} splats  {self.timings.get('total', 0.0):.2f} s on {self.device}/{self.backend}"
        )


class Scorer:
    """Validator-style scorer; models load once (`load()`, or lazily on the first score)."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        pretrained: str | None = DEFAULT_PRETRAINED,
        size: int = VALIDATOR_SIZE,
        views: int = VALIDATOR_VIEWS,
        device: str | torch.device | None = None,
        random_weights: bool = False,
        backend: Backend = "auto",
    ) -> None:
        self.size = size
        self.views = views
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = select_backend(self.device, backend)
        self.clip = ClipEmbedder(model, pretrained, self.device, random_weights)
        self._lock = threading.Lock()  # one score at a time on one model
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self.clip.loaded

    def load(self) -> None:
        if not self.clip.loaded:
            t0 = time.perf_counter()
            self.clip.load()
            self.load_s = time.perf_counter() - t0

    def _sync(self) -> None:
        if self.device.type == "cuda":  # stage timings measure finished GPU work
            torch.cuda.synchronize(self.device)

    def score(
        self, result: Splats | bytes, prompt: str, compression: int | None = None, keep_images: bool = False
    ) -> ScoreReport:
        """Score one result. `compression` 0 (PLY) / 2 (SPZ) / None (sniff) applies to bytes;
        `keep_images` puts the uint8 renders on the report (not serialised)."""
        with self._lock:
            return self._score(result, prompt, compression, keep_images)

    def _score(
        self, result: Splats | bytes, prompt: str, compression: int | None, keep_images: bool
    ) -> ScoreReport:
        self.load()
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        splats = result if isinstance(result, Splats) else decode_result(result, compression)
        t1 = time.perf_counter()
        timings["decode"] = t1 - t0
        verdict = check_gate(splats)
        timings["gate"] = time.perf_counter() - t1
        report = ScoreReport(
            prompt=prompt,
            splats=len(splats),
            gate_passed=verdict.passed,
            gate_reason=verdict.reason,
            model=self.clip.model_name,
            pretrained=self.clip.pretrained,
            size=self.size,
            device=str(self.device),
            backend=self.backend,
        )
        if verdict.passed:
            t2 = time.perf_counter()
            vs = validator_transform(splats, device=self.device)
            self._sync()
            t3 = time.perf_counter()
            images = render_validator_views(vs, self.size, self.views, self.device, self.backend)
            self._sync()
            t4 = time.perf_counter()
            cosines = self.clip.cosines(images, prompt)
            t5 = time.perf_counter()
            aligned = alignment_from_cosines(cosines)
            timings.update(transform=t3 - t2, render=t4 - t3, clip=t5 - t4)
            report.cosines, report.kept = aligned.cosines, aligned.kept
            report.geometric_mean = aligned.geometric_mean
            report.alignment_raw, report.alignment = aligned.alignment_raw, aligned.alignment
            report.fidelity = fidelity_estimate(True, aligned.alignment)
            report.images = images.cpu() if keep_images else None
        timings["total"] = time.perf_counter() - t0
        report.timings = timings
        return report
