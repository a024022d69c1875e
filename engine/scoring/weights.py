"""Where the scoring models' weights come from (torch-free): same rules as engine.models.

The validator's models (404-Repo/three-gen-subnet, validation/engine/validation_engine.py
load_pipelines): open_clip convnext_large_d / laion2b_s26b_b102k_augreg (alignment), DINOv2-small
plus the subnet's quality head (quality_model.py, pinned revisions below), and torchmetrics' LPIPS
(torchvision's ImageNet AlexNet + the LPIPS v0.1 linear layers shipped with torchmetrics).
Their ids are the keys of SCORE_WEIGHTS.

Lookup never downloads: an explicit file path; $GEN404_MODELS_DIR/<repo id>/<file>; the Hugging
Face cache (or, for LPIPS, torch's hub cache and an installed torchmetrics). `gen404 models pull
--score` fetches them all. A miss is one line naming the model and that command.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from engine import startup
from engine.models import MissingWeightsError, WeightSource, locate, pull

DEFAULT_MODEL = "convnext_large_d"
DEFAULT_PRETRAINED = "laion2b_s26b_b102k_augreg"
# open_clip's pretrained table for the validators' model (open_clip.get_pretrained_cfg), kept here
# so listing and pulling stay torch-free
KNOWN_HUB_REPOS = {
    (DEFAULT_MODEL, DEFAULT_PRETRAINED): "laion/CLIP-convnext_large_d.laion2B-s26B-b102K-augreg"
}
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PULL_COMMAND = "gen404 models pull --score"
ROLE = "CLIP (scoring)"


class WeightsMissing(MissingWeightsError):
    """The requested CLIP weights are not on this machine (one-line, actionable message)."""


def _hub_repo(model: str, pretrained: str) -> tuple[str, tuple[str, ...]] | None:
    repo = KNOWN_HUB_REPOS.get((model, pretrained))
    if repo:
        return repo, WEIGHT_FILES
    try:  # other open_clip tags: ask open_clip's table (imports torch)
        startup.reveal("torchvision")  # open_clip imports it (engine/startup.py hides it)
        import open_clip

        hub = (open_clip.get_pretrained_cfg(model, pretrained) or {}).get("hf_hub", "")
    except Exception:
        return None
    if not hub:
        return None
    repo, filename = os.path.split(hub)  # "org/name/" means open_clip's default file names
    return repo, (filename,) if filename else WEIGHT_FILES


def clip_sources(model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED) -> list[WeightSource]:
    """The single-file sources that can hold these weights, preferred first."""
    hub = _hub_repo(model, pretrained)
    if hub is None:
        return []
    repo, files = hub
    return [WeightSource(repo, filename=f, role=ROLE) for f in files]


def require_clip(model: str, pretrained: str) -> Path:
    """A local checkpoint for (model, pretrained), or WeightsMissing saying how to get it."""
    if pretrained and Path(pretrained).expanduser().is_file():
        return Path(pretrained).expanduser()
    sources = clip_sources(model, pretrained)
    for source in sources:
        if (found := locate(source)) is not None:
            return found
    where = sources[0].label if sources else f"(no download source known for {model}/{pretrained})"
    raise WeightsMissing(
        f"{ROLE} weights {model}/{pretrained} not found locally ({where}); fetch them with "
        f"`{PULL_COMMAND}`, or pass --pretrained PATH to an open_clip checkpoint"
    )


def pull_clip(model: str = DEFAULT_MODEL, pretrained: str = DEFAULT_PRETRAINED) -> Path:
    """Download the weights into the HF cache: the first file the repo has (safetensors first)."""
    errors = []
    for source in clip_sources(model, pretrained):
        if (found := locate(source)) is not None:
            return found
        try:
            return pull(source)
        except Exception as exc:  # this file may not exist in the repo: try the next one
            errors.append(f"{source.filename}: {type(exc).__name__}")
    raise WeightsMissing(
        f"cannot download {ROLE} weights {model}/{pretrained}: {'; '.join(errors) or 'no source'}"
    )


# ---- the quality model and LPIPS ------------------------------------------------------------

DEFAULT_QUALITY_MODEL = "dinov2-small"
TINY_QUALITY_MODEL = "gen404-tiny-dino"  # random weights only, for tests
TINY_CLIP_MODEL = "gen404-tiny"  # engine.scoring.clip's small random CLIP, for tests


def default_quality_model(clip_model: str) -> str:
    """The test CLIP goes with the test quality net (both random-only); anything else with DINOv2-small."""
    return TINY_QUALITY_MODEL if clip_model == TINY_CLIP_MODEL else DEFAULT_QUALITY_MODEL


@dataclass(frozen=True)
class ScoreWeight:
    """One weights file: a Hub file at a pinned revision, or a plain URL (LPIPS)."""

    role: str
    filename: str
    repo_id: str = ""  # Hugging Face repo, with `revision`
    revision: str | None = None
    url: str = ""  # download address when not on the Hub

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.repo_id else self.url


SCORE_WEIGHTS: dict[str, ScoreWeight] = {
    # quality_model.py: Dinov2Model.from_pretrained("facebook/dinov2-small", revision=...)
    "quality_backbone": ScoreWeight(
        "DINOv2-small (quality)",
        "model.safetensors",
        repo_id="facebook/dinov2-small",
        revision="150c8e7bb7cef2d30ec31b13a517af14840ee3f7",
    ),
    # quality_scorer.py / quality_model.py: hf_hub_download("404-Gen/validation", revision=...)
    "quality_head": ScoreWeight(
        "quality head",
        "quality_scorer.safetensors",
        repo_id="404-Gen/validation",
        revision="948bf06988b630681c7bc468aebf2bbe010856f7",
    ),
    # torchvision AlexNet_Weights.IMAGENET1K_V1, what torchmetrics' LPIPS loads
    "lpips_alexnet": ScoreWeight(
        "AlexNet (LPIPS)",
        "alexnet-owt-7be5be79.pth",
        url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    ),
    # LPIPS v0.1 linear layers; torchmetrics ships the same file as lpips_models/alex.pth
    "lpips_linear": ScoreWeight(
        "LPIPS linear layers",
        "alex.pth",
        url="https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/alex.pth",
    ),
}
LPIPS_DIR = "lpips"  # $GEN404_MODELS_DIR/lpips/<file> for the URL weights
MAX_URL_DOWNLOAD = 512 * 1024 * 1024


def _torch_hub_checkpoints() -> Path:
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(home).expanduser() / "hub" / "checkpoints"


def _torchmetrics_lpips_file() -> Path | None:
    spec = importlib.util.find_spec("torchmetrics")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (
        Path(list(spec.submodule_search_locations)[0]) / "functional" / "image" / "lpips_models" / "alex.pth"
    )
    return path if path.is_file() else None


def locate_weight(key: str) -> Path | None:
    """The file for SCORE_WEIGHTS[key] on this machine, or None. Never downloads."""
    w = SCORE_WEIGHTS[key]
    root = os.environ.get("GEN404_MODELS_DIR")
    if root:
        local = Path(root).expanduser() / (w.repo_id or LPIPS_DIR) / w.filename
        if local.is_file():
            return local
    if w.repo_id:
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(w.repo_id, w.filename, revision=w.revision, local_files_only=True))
        except Exception:  # not cached
            return None
    candidates = [_torch_hub_checkpoints() / w.filename]
    if key == "lpips_linear" and (packaged := _torchmetrics_lpips_file()) is not None:
        candidates.append(packaged)
    return next((p for p in candidates if p.is_file()), None)


def _require(key: str) -> str:
    found = locate_weight(key)
    if found is None:
        w = SCORE_WEIGHTS[key]
        raise WeightsMissing(
            f"{w.role} weights {w.label} not found locally; fetch them with `{PULL_COMMAND}`"
        )
    return str(found)


def require_quality() -> tuple[str, str]:
    """(DINOv2-small backbone file, the subnet's quality head file)."""
    return _require("quality_backbone"), _require("quality_head")


def require_lpips() -> tuple[str, str]:
    """(AlexNet checkpoint, LPIPS linear layers checkpoint)."""
    return _require("lpips_alexnet"), _require("lpips_linear")


def _download_url(url: str, dest: Path) -> Path:
    import httpx

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    with httpx.stream("GET", url, follow_redirects=True, timeout=30.0) as r:
        r.raise_for_status()
        size = 0
        with part.open("wb") as f:
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > MAX_URL_DOWNLOAD:
                    raise ValueError(f"{url} is larger than {MAX_URL_DOWNLOAD >> 20} MiB")
                f.write(chunk)
    part.replace(dest)
    return dest


def pull_weight(key: str) -> Path:
    """Fetch SCORE_WEIGHTS[key]: Hub files into the HF cache (pinned revision), URL files into
    $GEN404_MODELS_DIR/lpips or torch's hub cache."""
    if (found := locate_weight(key)) is not None:
        return found
    w = SCORE_WEIGHTS[key]
    if w.repo_id:
        from huggingface_hub import hf_hub_download

        from engine.models import check_hub_reachable

        check_hub_reachable()
        return Path(hf_hub_download(w.repo_id, w.filename, revision=w.revision))
    root = os.environ.get("GEN404_MODELS_DIR")
    folder = Path(root).expanduser() / LPIPS_DIR if root else _torch_hub_checkpoints()
    return _download_url(w.url, folder / w.filename)


def pull_score_weights() -> dict[str, Path]:
    """Every model `gen404 score` loads by default: CLIP, then SCORE_WEIGHTS in order."""
    done = {"clip": pull_clip()}
    for key in SCORE_WEIGHTS:
        try:
            done[key] = pull_weight(key)
        except WeightsMissing:
            raise
        except Exception as exc:  # offline, moved file, disk full: one line
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise WeightsMissing(f"cannot download {SCORE_WEIGHTS[key].label}: {reason[:200]}") from None
    return done
