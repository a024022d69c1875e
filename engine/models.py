"""Where guidance weights come from: a local folder, the Hugging Face cache, or `gen404 models pull`.

Loading never downloads. Lookup order for a repo id:
  1. the id itself, when it is a local directory (a diffusers folder);
  2. $GEN404_MODELS_DIR/<owner>/<name>/ (a folder you manage by hand);
  3. the Hugging Face cache ($HF_HOME / $HF_HUB_CACHE), local files only.
A missing model raises MissingWeightsError: one line naming the model and the pull command.
Environment overrides beat the preset: GEN404_MVDREAM_ID, GEN404_MVDREAM_CKPT, GEN404_SD_ID.

Torch-free: `gen404 models list` and the console can import this.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from engine.guidance_spec import GuidanceSpec

MVDREAM_CKPT_REPO = "MVDream/MVDream"
MVDREAM_CKPT_FILE = "sd-v2.1-base-4view.pt"

# files a diffusers component folder needs (alternatives in order of preference)
_COMPONENT_FILES: dict[str, tuple[tuple[str, ...], ...]] = {
    "unet": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "vae": (("config.json",), ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")),
    "text_encoder": (("config.json",), ("model.safetensors", "pytorch_model.bin")),
    "tokenizer": (
        ("tokenizer_config.json",),
        ("vocab.json", "tokenizer.json"),
    ),  # pull takes all of tokenizer/
}


class MissingWeightsError(RuntimeError):
    """Pretrained weights are not on this machine; the message says how to fetch them."""


@dataclass(frozen=True)
class WeightSource:
    """One thing to have on disk: diffusers component folders of a repo, or one file of a repo."""

    repo_id: str
    components: tuple[str, ...] = ()  # diffusers subfolders, for a folder source
    filename: str | None = None  # for a single-file source
    local_path: str | None = None  # an explicit file path (mvdream_ckpt) that wins when it exists
    role: str = ""

    @property
    def label(self) -> str:
        return f"{self.repo_id}/{self.filename}" if self.filename else self.repo_id


def resolve(preset: Any) -> GuidanceSpec:
    """The preset's guidance spec with the GEN404_* environment overrides applied to its model ids."""
    spec = GuidanceSpec.of(preset)
    return replace(
        spec,
        mvdream_id=os.environ.get("GEN404_MVDREAM_ID") or spec.mvdream_id,
        mvdream_ckpt=os.environ.get("GEN404_MVDREAM_CKPT") or spec.mvdream_ckpt,
        sd_id=os.environ.get("GEN404_SD_ID") or spec.sd_id,
    )


def requirements(preset: Any) -> list[WeightSource]:
    """What the preset's (or spec's) guidance loads from disk; empty for tiny or random weights."""
    spec = resolve(preset)
    if spec.guidance == "tiny_mvdream" or spec.weights == "random":
        return []
    if spec.guidance == "sd":
        return [WeightSource(spec.sd_id, ("unet", "vae", "text_encoder", "tokenizer"), role="SD 2.1")]
    if spec.guidance != "mvdream":
        raise ValueError(f"unknown guidance {spec.guidance!r}")
    ckpt = spec.mvdream_ckpt
    if ckpt:
        # original checkpoint: UNet+VAE+OpenCLIP in one file; the CLIP tokenizer comes from SD 2.1
        name = Path(ckpt).name if Path(ckpt).suffix else MVDREAM_CKPT_FILE
        return [
            WeightSource(MVDREAM_CKPT_REPO, filename=name, local_path=str(ckpt), role="MVDream (original)"),
            WeightSource(spec.sd_id, ("tokenizer",), role="CLIP tokenizer"),
        ]
    return [WeightSource(spec.mvdream_id, ("unet", "vae", "text_encoder", "tokenizer"), role="MVDream")]


def known_sources() -> list[WeightSource]:
    """The public weights gen404 can use, for `gen404 models list` (defaults, env overrides applied)."""
    spec = resolve(None)
    full = ("unet", "vae", "text_encoder", "tokenizer")
    return [
        WeightSource(spec.mvdream_id, full, role="MVDream"),
        WeightSource(MVDREAM_CKPT_REPO, filename=MVDREAM_CKPT_FILE, role="MVDream (original)"),
        WeightSource(spec.sd_id, full, role="SD 2.1"),
    ]


def models_dir() -> Path | None:
    env = os.environ.get("GEN404_MODELS_DIR")
    return Path(env).expanduser() if env else None


def _component_complete(folder: Path, component: str) -> bool:
    return all(any((folder / component / f).is_file() for f in alts) for alts in _COMPONENT_FILES[component])


def _folder_candidates(repo_id: str) -> Iterable[Path]:
    if Path(repo_id).expanduser().is_dir():
        yield Path(repo_id).expanduser()
    if (root := models_dir()) is not None:
        yield root / repo_id
    try:
        from huggingface_hub import snapshot_download

        yield Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (or not a valid repo id): nothing here
        return


def component_file(folder: Path, component: str) -> Path:
    """The weights file of a diffusers component folder (safetensors preferred)."""
    for name in _COMPONENT_FILES[component][1]:
        if (folder / component / name).is_file():
            return folder / component / name
    raise MissingWeightsError(f"no {component} weights in {folder}")


def locate(source: WeightSource) -> Path | None:
    """The source's folder (or file) on this machine, complete, or None. Never downloads."""
    if source.filename:
        if source.local_path and Path(source.local_path).expanduser().is_file():
            return Path(source.local_path).expanduser()
        if (root := models_dir()) is not None and (root / source.repo_id / source.filename).is_file():
            return root / source.repo_id / source.filename
        try:
            from huggingface_hub import hf_hub_download

            return Path(hf_hub_download(source.repo_id, source.filename, local_files_only=True))
        except Exception:
            return None
    for folder in _folder_candidates(source.repo_id):
        if all(_component_complete(folder, c) for c in source.components):
            return folder
    return None


def pull_command(preset_name: str | None) -> str:
    return f"gen404 models pull --preset {preset_name}" if preset_name else "gen404 models pull"


def _missing_line(source: WeightSource, preset_name: str | None) -> str:
    what = source.local_path if source.filename and source.local_path else source.label
    return f"{source.role or 'model'} weights {what} not found locally; fetch them with `{pull_command(preset_name)}`"


def missing_weights(preset: Any) -> str | None:
    """One line naming the first weights `preset` loads that are not on this machine, and the
    command that fetches them; None when everything is present (or nothing is needed). The check
    a preset switch makes before building (the endpoint's PUT /preset, the console's hotkeys)."""
    name = getattr(preset, "name", None)
    for source in requirements(preset):
        if locate(source) is None:
            return _missing_line(source, name if isinstance(name, str) else None)
    return None


def require(source: WeightSource, preset_name: str | None = None) -> Path:
    """`locate`, or MissingWeightsError naming the model and the command that fetches it."""
    found = locate(source)
    if found is None:
        raise MissingWeightsError(_missing_line(source, preset_name))
    return found


def size_on_disk(path: Path, components: Iterable[str] = ()) -> int:
    """Bytes of a file, or of the listed component folders (symlinks into the HF blob store followed)."""
    if path.is_file():
        return path.stat().st_size
    roots = [path / c for c in components] or [path]
    return sum(f.stat().st_size for root in roots if root.is_dir() for f in root.rglob("*") if f.is_file())


def _pick_files(repo_id: str, repo_files: list[str], components: Iterable[str]) -> list[str]:
    """For each component, the files it needs (first available alternative); safetensors first."""
    have = set(repo_files)
    chosen = ["model_index.json"] if "model_index.json" in have else []
    for component in components:
        if component == "tokenizer":  # a few small files whose set varies between repos
            chosen += [f for f in repo_files if f.startswith("tokenizer/")]
        for alts in _COMPONENT_FILES[component]:
            pick = next((f"{component}/{f}" for f in alts if f"{component}/{f}" in have), None)
            if pick is None:
                raise MissingWeightsError(
                    f"{repo_id} has no {component}/{alts[0]}: not a diffusers model repo?"
                )
            chosen.append(pick)
    return sorted(set(chosen))


def check_hub_reachable(timeout: float = 5.0) -> None:
    """Fail fast (one exception, no retry storm) when the Hub cannot be reached or offline mode is on."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise ConnectionError("HF_HUB_OFFLINE is set")
    import httpx

    try:
        httpx.head(constants.ENDPOINT, timeout=timeout, follow_redirects=True)
    except httpx.HTTPError as exc:
        raise ConnectionError(f"cannot reach {constants.ENDPOINT} ({exc or type(exc).__name__})") from None


def pull(source: WeightSource) -> Path:
    """Download what `source` needs into the HF cache (progress bars; resumes partial files)."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download

    check_hub_reachable()
    if source.filename:
        return Path(hf_hub_download(source.repo_id, source.filename))
    files = _pick_files(source.repo_id, HfApi().list_repo_files(source.repo_id), source.components)
    return Path(snapshot_download(source.repo_id, allow_patterns=files))
