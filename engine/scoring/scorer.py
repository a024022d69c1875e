"""Scorer: load the validator's models once, then score results (Splats, PLY bytes or SPZ bytes).

The flow is the validator's (404-Repo/three-gen-subnet, validation/server/pipeline.py
decode_and_validate_txt, validation/engine/validation_engine.py validate_text_to_gs): decode ->
validity gate on the loaded data -> transform and render the 16 views -> CLIP alignment, the
quality model, SSIM and LPIPS between neighbouring views -> the final formula
(engine.scoring.formula). A result failing the gate is not rendered and scores 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from engine.formats import ply, spz
from engine.gate import check_gate
from engine.render import Backend, select_backend
from engine.scoring.alignment import alignment_from_cosines
from engine.scoring.clip import DEFAULT_MODEL, DEFAULT_PRETRAINED, ClipEmbedder
from engine.scoring.formula import ACCEPT_THRESHOLD, final_score, neighbour_mean, verdict
from engine.scoring.quality import QualityScorer
from engine.scoring.similarity import LpipsScorer, ssim_pairs
from engine.scoring.transform import validator_transform
from engine.scoring.views import VALIDATOR_SIZE, VALIDATOR_VIEWS, render_validator_views
from engine.scoring.weights import DEFAULT_QUALITY_MODEL, default_quality_model
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
    score: float = 0.0  # the validator's final score (0 if the gate fails or alignment < 0.3)
    accepted: bool = False  # score >= 0.6
    reason: str = ""  # why not accepted ("" when accepted)
    alignment_raw: float | None = None  # the subnet's alignment_score (geometric mean / 0.35, not capped)
    iqa: float | None = None  # mean quality probability over the views
    ssim: float | None = None  # geometric mean of the kept neighbour SSIMs
    lpips: float | None = None  # 1 - geometric mean of the kept neighbour LPIPS distances
    alignment: float = 0.0  # alignment_raw capped at 1 (display)
    geometric_mean: float | None = None  # of the kept CLIP cosines
    cosines: list[float] = field(default_factory=list)  # per view, azimuth order
    kept: list[bool] = field(default_factory=list)  # per view: survived the outlier filter
    iqa_views: list[float] = field(default_factory=list)  # quality probability per view
    ssim_pairs: list[float] = field(default_factory=list)  # view i with view i + 1 (last with first)
    ssim_kept: list[bool] = field(default_factory=list)
    lpips_pairs: list[float] = field(default_factory=list)  # distances, same pairs
    lpips_kept: list[bool] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    quality_model: str = DEFAULT_QUALITY_MODEL
    size: int = VALIDATOR_SIZE
    device: str = "cpu"
    backend: str = "torch"
    images: torch.Tensor | None = field(default=None, repr=False)  # uint8 (C,H,W,3) if kept

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("images")
        return out

    def summary(self) -> str:
        """Every component and the verdict, one block for a terminal."""
        head = f"score {self.score:.3f}: " + ("ACCEPTED" if self.accepted else f"REJECTED ({self.reason})")
        if not self.gate_passed:
            return f"{head}\n  {self.splats} splats, nothing rendered"

        def num(x: float | None) -> str:
            return "n/a" if x is None else f"{x:.4f}"

        kept = f"{sum(self.kept)}/{len(self.kept)} views kept"
        return "\n".join(
            [
                head,
                f"  iqa       {num(self.iqa)}  x 0.75  (quality, mean of {len(self.iqa_views)} views)",
                f"  alignment {num(self.alignment_raw)}  x 0.2   (CLIP, {kept}; 0 below 0.3)",
                f"  ssim      {num(self.ssim)}  sigmoid(35, 0.83) x 0.025  "
                f"({sum(self.ssim_kept)}/{len(self.ssim_pairs)} pairs kept)",
                f"  lpips     {num(self.lpips)}  lpips x sigmoid(30, 0.7) x 0.025  "
                f"({sum(self.lpips_kept)}/{len(self.lpips_pairs)} pairs kept)",
                f"  accepted at >= {ACCEPT_THRESHOLD}; {self.splats} splats, "
                f"{self.timings.get('total', 0.0):.2f} s on {self.device}/{self.backend}",
            ]
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
        quality_model: str | None = None,
    ) -> None:
        """`quality_model` None: engine.scoring.weights.default_quality_model(model)."""
        self.size = size
        self.views = views
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.backend = select_backend(self.device, backend)
        self.clip = ClipEmbedder(model, pretrained, self.device, random_weights)
        self.quality = QualityScorer(
            quality_model or default_quality_model(model), self.device, random_weights
        )
        self.lpips = LpipsScorer(self.device, random_weights)
        self._lock = threading.Lock()  # one score at a time on one set of models
        self.load_s: float | None = None

    @property
    def loaded(self) -> bool:
        return self.clip.loaded and self.quality.loaded and self.lpips.loaded

    def load(self) -> None:
        if not self.loaded:
            t0 = time.perf_counter()
            self.clip.load()
            self.quality.load()
            self.lpips.load()
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
        gate = check_gate(splats)
        timings["gate"] = time.perf_counter() - t1
        report = ScoreReport(
            prompt=prompt,
            splats=len(splats),
            gate_passed=gate.passed,
            gate_reason=gate.reason,
            model=self.clip.model_name,
            pretrained=self.clip.pretrained,
            quality_model=self.quality.name,
            size=self.size,
            device=str(self.device),
            backend=self.backend,
        )
        if gate.passed:
            t = time.perf_counter()
            vs = validator_transform(splats, device=self.device)
            t = self._stage(timings, "transform", t)
            images = render_validator_views(vs, self.size, self.views, self.device, self.backend)
            t = self._stage(timings, "render", t)
            self.score_views(images, prompt, report, timings, t)
            report.images = images.cpu() if keep_images else None
        report.accepted, report.reason = verdict(gate.passed, gate.reason, report.alignment_raw, report.score)
        timings["total"] = time.perf_counter() - t0
        report.timings = timings
        return report

    def _stage(self, timings: dict[str, float], name: str, since: float) -> float:
        self._sync()
        now = time.perf_counter()
        timings[name] = now - since
        return now

    def score_views(
        self, images: torch.Tensor, prompt: str, report: ScoreReport, timings: dict[str, float], t: float
    ) -> None:
        """Every metric on uint8 (C, H, W, 3) views, into `report` (validate_text_to_gs)."""
        aligned = alignment_from_cosines(self.clip.cosines(images, prompt))
        t = self._stage(timings, "clip", t)
        iqa_views = self.quality.probabilities(images)
        t = self._stage(timings, "quality", t)
        ssim = neighbour_mean(ssim_pairs(images))
        t = self._stage(timings, "ssim", t)
        distances = neighbour_mean(self.lpips.pairs(images))
        self._stage(timings, "lpips", t)
        report.cosines, report.kept = aligned.cosines, aligned.kept
        report.geometric_mean = aligned.geometric_mean
        report.alignment_raw, report.alignment = aligned.alignment_raw, aligned.alignment
        report.iqa_views = [float(v) for v in iqa_views]
        report.iqa = float(iqa_views.mean())
        report.ssim_pairs, report.ssim_kept, report.ssim = ssim.pairs, ssim.kept, ssim.mean
        report.lpips_pairs, report.lpips_kept = distances.pairs, distances.kept
        report.lpips = 1.0 - distances.mean
        report.score = final_score(report.alignment_raw, report.iqa, report.ssim, report.lpips)


def load_scorer(
    model: str = DEFAULT_MODEL,
    pretrained: str | None = DEFAULT_PRETRAINED,
    size: int = VALIDATOR_SIZE,
    views: int = VALIDATOR_VIEWS,
    device: str | None = None,
    random_weights: bool = False,
    backend: Backend = "auto",
    quality_model: str | None = None,
) -> Scorer:
    """A Scorer with every model loaded (missing weights raise WeightsMissing, one line).
    `device` None or "auto" picks CUDA when available; "cuda" without CUDA is a ValueError."""
    if device == "auto":
        device = None
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is available")
    scorer = Scorer(model, pretrained, size, views, device, random_weights, backend, quality_model)
    scorer.load()
    return scorer


def self_score_hook(scorer: Scorer) -> Callable[[str, Any], float]:
    """The endpoint's self-scoring hook (`gen404 serve --self-score`): `score(prompt, splats)`
    -> the validator's final score."""

    def score(prompt: str, splats: Any) -> float:
        return scorer.score(splats, prompt).score

    return score
