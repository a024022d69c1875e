"""Generation presets: YAML files loaded into a frozen, validated `Preset` (torch-free).

Bundled presets live in `presets/` beside the `engine` package (override the directory with
GEN404_BUNDLED_PRESETS). A user directory adds or replaces presets by file name:
GEN404_PRESETS_DIR, else $XDG_CONFIG_HOME/gen404/presets, else ~/.config/gen404/presets.
A preset may start from another with `extends: <name>` and list only what differs.

Key semantics (what makes the seed guide's claims true in gen404):
  ref_size    resolution at which renders are fed to the VAE / guidance model
  batch_size  views rendered and guided per step (a multiple of 4 for MVDream: 4-view groups)
  render_size resolution the Gaussians are rasterised at (then resized to ref_size)
  cuda_graphs, fused_optimizer, channels_last, cudnn_benchmark   speed switches on CUDA
              (docs/benchmarks.md)
  compile     torch.compile of the UNet and VAE encoder (any device; falls back when it fails)
  compile_backend   "jit" (torch.compile each start) or "aot" (packages built once per machine, then
                    loaded without tracing; torch 2.11+, torch.compile on an older torch)
  compile_regions   aot only: the UNet and VAE encoder as one package per block, whose cold compile
                    helpers split the blocks between them (engine/guidance/regions.py)
  max_batch   jobs one endpoint optimises together (continuous batching; 1 = one at a time)
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

GUIDANCE_KINDS = ("mvdream", "sd", "tiny_mvdream")
MULTIVIEW_GUIDANCE = ("mvdream", "tiny_mvdream")
WEIGHT_SOURCES = ("pretrained", "random")
COMPILE_BACKENDS = ("jit", "aot")  # engine/guidance/sds.py checks the same names
# what `compile` compiles: the UNet and the VAE encoder; a compile helper process takes one
# (engine/service/compile_helpers.py, SDSGuidance.set_compile(parts=...)), or with
# compile_regions one shard of a model's blocks, "unet:K/N" / "vae:K/N" (engine/guidance/regions.py)
COMPILE_PARTS: tuple[str, ...] = ("unet", "vae")


def parse_compile_part(text: str) -> tuple[str, int, int]:
    """(model, shard, shards) of a compile part: "vae" -> ("vae", 0, 1), "unet:1/4" -> ("unet", 1, 4)."""
    model, _, shard = text.partition(":")
    if model not in COMPILE_PARTS:
        raise ValueError(f"unknown compile part {text!r} (expected unet, vae, unet:K/N or vae:K/N)")
    if not shard:
        return model, 0, 1
    index, _, count = shard.partition("/")
    if not (index.isdigit() and count.isdigit() and int(index) < int(count)):
        raise ValueError(f"bad shard {text!r} (expected {model}:K/N with 0 <= K < N)")
    return model, int(index), int(count)


DTYPES = ("fp32", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda")

DEFAULT_NEGATIVE_PROMPT = (
    "ugly, bad anatomy, blurry, pixelated obscure, unnatural colors, poor lighting, dull, and unclear, "
    "cropped, lowres, low quality, artifacts, duplicate, morbid, mutilated, poorly drawn face, deformed, "
    "dehydrated, bad proportions"
)


class PresetError(ValueError):
    """A preset that cannot be found or does not validate; the message names file and key."""


@dataclass(frozen=True)
class Preset:
    name: str
    description: str = ""
    # models: these fields decide what Generator.load() builds (see models_key)
    guidance: str = "mvdream"
    weights: str = "pretrained"
    mvdream_id: str = "ashawkey/mvdream-sd2.1-diffusers"
    mvdream_ckpt: str | None = None  # optional local original-format checkpoint (.pt)
    sd_id: str = "stabilityai/stable-diffusion-2-1-base"
    dtype: str = "fp32"
    device: str = "auto"
    # speed (CUDA only; the arithmetic is unchanged): UNet and VAE encoder fwd+bwd replayed as
    # CUDA graphs, one fused Adam kernel per group, channels-last UNet/VAE weights; and (any
    # device) torch.compile of the UNet and the VAE encoder, compiled at warm-up
    cuda_graphs: bool = False
    fused_optimizer: bool = True
    channels_last: bool = False
    # cuDNN times every algorithm for each new convolution shape and keeps the fastest (at warm-up,
    # for the VAE encoder); off, its heuristics choose at once. Process-wide, set by the preset loaded
    cudnn_benchmark: bool = True
    compile: bool = False
    # how `compile` compiles: "jit" torch.compile at every start (its kernels cached on disk);
    # "aot" packages (torch.compile's aot_compile) built at the first start, loaded by later ones
    compile_backend: str = "jit"
    # aot only (ignored with jit): the models block by block, so that cold compile helpers split them
    compile_regions: bool = False
    # serving: jobs an endpoint optimises together, one batched SDS step for all (1: one at a time)
    max_batch: int = 1
    # optimisation
    iters: int = 1500
    seed: int = 42
    batch_size: int = 4
    ref_size: int = 256
    render_size: int = 256
    guidance_scale: float = 100.0
    negative_prompt: str = DEFAULT_NEGATIVE_PROMPT
    warmup_rgb_loss: bool = True
    # Gaussians
    num_pts: int = 5000
    min_output_gaussians: int = 7000
    max_gaussians: int = 200_000  # densification cap during training (export may grow past it)
    # learning rates (position decays exponentially from init to final over the run)
    lr_position_init: float = 1e-3
    lr_position_final: float = 2e-5
    lr_feature: float = 0.01
    lr_opacity: float = 0.05
    lr_scaling: float = 5e-3
    lr_rotation: float = 5e-3
    # densification (gradient threshold is in NDC units, as the reference's)
    densification_interval: int = 50
    density_start_iter: int = 100
    density_end_iter: int = 3000
    densify_grad_threshold: float = 0.01
    densify_scale_threshold: float = 0.04  # world units: smaller is cloned, larger is split
    min_opacity: float = 0.01
    prune_max_scale: float = 0.4  # world units
    # camera
    radius_min: float = 2.5
    radius_max: float = 3.5
    fovy: float = 49.1
    elevation_min: float = -30.0
    elevation_max: float = 30.0

    def models_key(self) -> tuple:
        """Fields that determine the loaded models: equal keys mean a preset switch needs no reload."""
        # all model ids count: an MVDream build may borrow SD 2.1 parts (tokenizer, VAE config)
        ids = (self.mvdream_id, self.mvdream_ckpt, self.sd_id)
        weight_seed = self.seed if self.weights == "random" else None  # random weights are seeded
        return (self.guidance, self.weights, *ids, self.dtype, self.device, weight_seed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# (min, max) inclusive; None = unbounded
_RANGES: dict[str, tuple[float | None, float | None]] = {
    "iters": (1, 100_000),
    "max_batch": (1, 64),
    "seed": (0, 2**32 - 1),
    "batch_size": (1, 64),
    "ref_size": (8, 1024),
    "render_size": (8, 2048),
    "guidance_scale": (0.0, 1000.0),
    "num_pts": (1, 10_000_000),
    "min_output_gaussians": (0, 10_000_000),
    "max_gaussians": (1, 50_000_000),
    "lr_position_init": (0.0, 1.0),
    "lr_position_final": (0.0, 1.0),
    "lr_feature": (0.0, 1.0),
    "lr_opacity": (0.0, 1.0),
    "lr_scaling": (0.0, 1.0),
    "lr_rotation": (0.0, 1.0),
    "densification_interval": (1, 100_000),
    "density_start_iter": (0, 100_000),
    "density_end_iter": (0, 100_000),
    "densify_grad_threshold": (0.0, None),
    "densify_scale_threshold": (0.0, None),
    "min_opacity": (0.0, 1.0),
    "prune_max_scale": (0.0, None),
    "radius_min": (0.1, 100.0),
    "radius_max": (0.1, 100.0),
    "fovy": (1.0, 179.0),
    "elevation_min": (-89.0, 89.0),
    "elevation_max": (-89.0, 89.0),
}
_CHOICES: dict[str, tuple[str, ...]] = {
    "guidance": GUIDANCE_KINDS,
    "weights": WEIGHT_SOURCES,
    "dtype": DTYPES,
    "device": DEVICES,
    "compile_backend": COMPILE_BACKENDS,
}
_FIELDS = {f.name: f for f in dataclasses.fields(Preset)}
_TYPES = typing.get_type_hints(Preset)


# --- locating presets -------------------------------------------------------------------------


def bundled_dir() -> Path:
    env = os.environ.get("GEN404_BUNDLED_PRESETS")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "presets"


def user_dir() -> Path:
    env = os.environ.get("GEN404_PRESETS_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg) if xdg else Path.home() / ".config"
    return base / "gen404" / "presets"


def _yaml_files(directory: Path) -> dict[str, Path]:
    if not directory.is_dir():
        return {}
    return {p.stem: p for p in sorted(directory.iterdir()) if p.suffix in (".yaml", ".yml") and p.is_file()}


def preset_files() -> dict[str, Path]:
    """name -> YAML file; a user file replaces the bundled one of the same name."""
    return {**_yaml_files(bundled_dir()), **_yaml_files(user_dir())}


def list_presets() -> list[str]:
    return sorted(preset_files())


# --- loading and validation -------------------------------------------------------------------


def load_preset(name: str) -> Preset:
    """Load, resolve `extends` and validate the preset called `name`.

    `name` may be a preset reference with tune overrides, "text_mv_fast+iters=300" (see
    `split_ref`): the named preset with those keys replaced, its `name` the normalised reference.
    """
    base, overrides = split_ref(name)
    preset = _load(base, preset_files(), chain=())
    if not overrides:
        return preset
    tuned = with_overrides(preset, dict(overrides), source=f"preset reference {name!r}")
    return dataclasses.replace(tuned, name=format_ref(base, overrides))


# --- preset references: a preset plus tune overrides, as one string -------------------------
# The string travels wherever a preset name does (`gen404 serve --preset`, PUT /preset, the
# console's spec that a restart reuses, /health's "preset"), so a tuned endpoint says what runs.
# Only the keys the seed guide's tune loop turns are allowed: speed vs quality, never models.

TUNABLE_KEYS = ("iters", "guidance_scale", "ref_size")


def split_ref(ref: str) -> tuple[str, dict[str, int | float]]:
    """ "text_mv_fast+iters=300+guidance_scale=7.5" -> ("text_mv_fast", {"iters": 300, ...})."""
    base, *parts = ref.split("+")
    overrides: dict[str, int | float] = {}
    for part in parts:
        key, sep, text = part.partition("=")
        if not sep or key not in TUNABLE_KEYS:
            raise PresetError(
                f"preset reference {ref!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(TUNABLE_KEYS)}"
            )
        try:
            overrides[key] = int(text) if _TYPES[key] is int else float(text)
        except ValueError:
            raise PresetError(f"preset reference {ref!r}: {key} must be a number, got {text!r}") from None
    return base, overrides


def format_ref(base: str, overrides: typing.Mapping[str, object]) -> str:
    """The normalised reference: keys in TUNABLE_KEYS order, numbers in their shortest form."""
    unknown = sorted(set(overrides) - set(TUNABLE_KEYS))
    if unknown:
        raise PresetError(f"overrides: only {', '.join(TUNABLE_KEYS)} may be tuned, not {', '.join(unknown)}")
    parts = [base]
    for key in TUNABLE_KEYS:
        if key in overrides:
            value = overrides[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise PresetError(f"overrides: {key} must be a number, got {value!r}")
            parts.append(f"{key}={value:.12g}" if isinstance(value, float) else f"{key}={value}")
    return "+".join(parts)


def load_preset_file(path: str | Path) -> Preset:
    """Load a preset from an explicit YAML file (its stem is the name)."""
    path = Path(path)
    values = _resolve(path.stem, path, preset_files(), chain=())
    return _build(path.stem, values, path)


def _load(name: str, files: dict[str, Path], chain: tuple[Path, ...]) -> Preset:
    path = files.get(name)
    if path is None:
        known = ", ".join(sorted(files)) or "none"
        raise PresetError(f"unknown preset {name!r} (available: {known})")
    return _build(name, _resolve(name, path, files, chain), path)


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise PresetError(f"{path}: cannot read preset: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PresetError(f"{path}: a preset must be a mapping of keys to values")
    return data


def _resolve(name: str, path: Path, files: dict[str, Path], chain: tuple[Path, ...]) -> dict:
    """Raw values of `path` on top of those of the preset it extends (validated per file)."""
    if path in chain:
        names = " -> ".join(p.stem for p in (*chain, path))
        raise PresetError(f"{path}: 'extends' cycle: {names}")
    raw = _read(path)
    base_name = raw.pop("extends", None)
    for key, value in raw.items():
        _check_value(path, key, value)
    if base_name is None:
        return raw
    if not isinstance(base_name, str):
        raise PresetError(f"{path}: key 'extends' must be a preset name")
    # a user file that extends its own name builds on the bundled one it replaces
    base_files = files
    if base_name == name:
        bundled = _yaml_files(bundled_dir()).get(name)
        if bundled is None or bundled == path:
            raise PresetError(f"{path}: 'extends: {name}' but no bundled preset of that name")
        base_files = {**files, name: bundled}
    base_path = base_files.get(base_name)
    if base_path is None:
        raise PresetError(f"{path}: 'extends' names unknown preset {base_name!r}")
    base = _resolve(base_name, base_path, base_files, (*chain, path))
    base.pop("description", None)  # a description describes one file, not its children
    return {**base, **raw}


def with_overrides(preset: Preset, overrides: dict[str, object], source: str = "overrides") -> Preset:
    """`preset` with some keys replaced, validated by the same rules as a preset file's keys."""
    where = Path(source)
    for key, value in overrides.items():
        _check_value(where, key, value)
    result = dataclasses.replace(preset, **_as_field_types(overrides))
    _check_consistency(result, where)
    return result


def _check_value(path: Path, key: object, value: object) -> None:
    if not isinstance(key, str) or key not in _FIELDS or key == "name":
        raise PresetError(f"{path}: unknown key {key!r}")
    expected = _TYPES[key]
    if not _type_ok(value, expected):
        raise PresetError(
            f"{path}: key {key!r} must be {_type_name(expected)}, got {type(value).__name__} {value!r}"
        )
    if key in _CHOICES and value not in _CHOICES[key]:
        raise PresetError(f"{path}: key {key!r} must be one of {', '.join(_CHOICES[key])}, got {value!r}")
    if key in _RANGES and isinstance(value, (int, float)):  # range keys are numeric (type checked above)
        lo, hi = _RANGES[key]
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise PresetError(f"{path}: key {key!r} = {value!r} is out of range [{lo}, {hi}]")


def _type_ok(value: object, expected: object) -> bool:
    if isinstance(expected, types.UnionType) or typing.get_origin(expected) is typing.Union:
        return any(_type_ok(value, arg) for arg in typing.get_args(expected))
    if expected is type(None):
        return value is None
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:  # YAML "120" is an int; accept it for float keys
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, expected)  # type: ignore[arg-type]


def _type_name(expected: object) -> str:
    if typing.get_origin(expected) is typing.Union or isinstance(expected, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(expected))
    names: dict[object, str] = {
        type(None): "null",
        int: "an integer",
        float: "a number",
        bool: "true/false",
        str: "a string",
    }
    return names.get(expected, str(expected))


def _as_field_types(values: dict) -> dict:
    """Checked values with the integers given for float keys (YAML "120", KEY=120) as floats."""
    return {k: float(v) if _TYPES[k] is float else v for k, v in values.items()}


def _build(name: str, values: dict, path: Path) -> Preset:
    preset = Preset(name=name, **_as_field_types(values))
    _check_consistency(preset, path)
    return preset


def _check_consistency(p: Preset, path: Path) -> None:
    problems = []
    if p.guidance in MULTIVIEW_GUIDANCE and p.batch_size % 4:
        problems.append(
            f"'batch_size' = {p.batch_size} must be a multiple of 4 for {p.guidance} (4-view groups)"
        )
    if p.ref_size % 8:
        problems.append(f"'ref_size' = {p.ref_size} must be a multiple of 8 (VAE downsampling)")
    if p.radius_min > p.radius_max:
        problems.append("'radius_min' must not exceed 'radius_max'")
    if p.elevation_min > p.elevation_max:
        problems.append("'elevation_min' must not exceed 'elevation_max'")
    if p.density_start_iter > p.density_end_iter:
        problems.append("'density_start_iter' must not exceed 'density_end_iter'")
    if p.lr_position_final > p.lr_position_init:
        problems.append("'lr_position_final' must not exceed 'lr_position_init'")
    if p.num_pts > p.max_gaussians:
        problems.append("'num_pts' must not exceed 'max_gaussians'")
    if problems:
        raise PresetError(f"{path}: " + "; ".join(problems))
