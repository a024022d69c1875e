"""Where the scoring CLIP weights come from (torch-free): same rules as engine.models.

Lookup never downloads: `pretrained` as a checkpoint file path; $GEN404_MODELS_DIR/<repo id>/<file>;
the Hugging Face cache (where open_clip itself would put them). `gen404 models pull --clip` fetches
the default ones. A miss is one line naming the model and that command.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.models import MissingWeightsError, WeightSource, locate, pull

DEFAULT_MODEL = "convnext_large_d"
DEFAULT_PRETRAINED = "laion2b_s26b_b102k_augreg"
# open_clip's pretrained table for the validators' model (open_clip.get_pretrained_cfg), kept here
# so listing and pulling stay torch-free
KNOWN_HUB_REPOS = {
    (DEFAULT_MODEL, DEFAULT_PRETRAINED): "laion/CLIP-convnext_large_d.laion2B-s26B-b102K-augreg"
}
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PULL_COMMAND = "gen404 models pull --clip"
ROLE = "CLIP (scoring)"


class WeightsMissing(MissingWeightsError):
    """The requested CLIP weights are not on this machine (one-line, actionable message)."""


def _hub_repo(model: str, pretrained: str) -> tuple[str, tuple[str, ...]] | None:
    repo = KNOWN_HUB_REPOS.get((model, pretrained))
    if repo:
        return repo, WEIGHT_FILES
    try:  # other open_clip tags: ask open_clip's table (imports torch)
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
