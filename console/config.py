"""Console configuration: the XDG config file (YAML) merged with command-line flags.

File (``$XDG_CONFIG_HOME/gen404/console.yaml``; every key optional)::

    refresh: 1.0                 # seconds between samples / health probes
    log_dir: ~/.local/state/gen404/logs
    spawn: true                  # false = only watch endpoints that already run (like --attach)
    preload: true                # fork endpoints from a preloaded parent (false = --no-preload)
    endpoints:
      - {port: 10006, preset: text_mv_fast, gpu: 0}
      - {port: 10007, preset: auto}          # auto = best runnable preset on this box
      - {url: "http://10.0.0.5:10006"}       # a remote box: watched, never spawned/stopped here
      - {url: "http://10.0.0.6:10006", api_key_env: BOX6_KEY}   # its key from that variable
    api_key: ...                 # Bearer key for remote endpoints (else env GEN404_API_KEY)
    keymap:                      # binding id -> key(s); see `?` in the console for the ids
      spawn_endpoint: ctrl+n

Precedence: built-in defaults < file < flags. No Textual, no torch here.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from console import paths
from console.mining.options import MiningOptions, add_mining_arguments, mining_options

DEFAULT_PORT = 10006
DEFAULT_REFRESH = 1.0
REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
AUTO = "auto"
KNOWN_PRESETS = ("text_mv_ultra_fast", "text_mv_fast", "text_mv", "smoke")
PRODUCTION_PRESET = "text_mv_fast"
FALLBACK_PRESET = "smoke"


class ConfigError(ValueError):
    """A bad config file or flag; the message names the file/flag and the key."""


@dataclass
class EndpointSpec:
    port: int
    preset: str = AUTO
    gpu: str | None = None  # CUDA_VISIBLE_DEVICES for this endpoint; None = inherit

    @property
    def name(self) -> str:
        return f"gen-{self.port}"


@dataclass(frozen=True)
class RemoteSpec:
    """An endpoint on another box (`--endpoint http://HOST:PORT`): watched and switched, never
    spawned, stopped or restarted from here. The key stays out of repr() and so out of logs."""

    url: str  # scheme://host:port, normalised by parse_remote_url
    api_key: str | None = field(default=None, repr=False)

    @property
    def host(self) -> str:
        return self.url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


def parse_remote_url(text: str, where: str) -> str:
    """ "http://HOST:PORT" (no path, no credentials) -> normalised URL; ConfigError otherwise."""
    parsed = urlsplit(text.strip())
    try:
        port = parsed.port
    except ValueError:
        port = None
    if parsed.scheme not in ("http", "https") or not parsed.hostname or port is None:
        raise ConfigError(f"{where} {text!r}: expected http://HOST:PORT")
    if parsed.username or parsed.password or parsed.path not in ("", "/") or parsed.query:
        raise ConfigError(f"{where} {text!r}: only http://HOST:PORT (the key goes in api_key / env)")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{parsed.scheme}://{host}:{port}"


def is_remote_flag(text: str) -> bool:
    return "://" in text  # a URL (parse_remote_url then insists on http(s)://HOST:PORT)


@dataclass
class ConsoleConfig:
    endpoints: list[EndpointSpec] = field(default_factory=lambda: [EndpointSpec(DEFAULT_PORT)])
    remotes: list[RemoteSpec] = field(default_factory=list)  # other boxes' endpoints (watch only)
    refresh: float = DEFAULT_REFRESH
    log_dir: Path = field(default_factory=paths.default_log_dir)
    spawn: bool = True
    preload: bool = True  # endpoints forked from a preloaded parent (console/supervisor/zygote.py)
    keymap: dict[str, str] = field(default_factory=dict)
    config_path: Path | None = None
    first_port: int = DEFAULT_PORT  # `n` spawns on the next free port from here
    once: bool = False
    json: bool = False
    mining: MiningOptions = field(default_factory=MiningOptions)  # console/mining (issue 6)
    api_key: str | None = field(default=None, repr=False)  # console.yaml `api_key:` for remotes
    bench_json: Path | None = None  # `gen404 bench --json FILE`: the advisor's times for presets not running


def remote_key_from_env() -> str | None:
    """GEN404_API_KEY, read by the same rule `gen404 serve` reads its own key with."""
    from engine.service.security import resolve_api_key  # torch-free, like engine.presets

    return resolve_api_key(None)


def available_presets() -> list[str]:
    """Preset names from engine.presets (torch-free) when it is importable, else the known four."""
    try:
        from engine.presets import list_presets  # torch-free by contract

        names = list_presets()  # sorted names (str)
    except Exception:
        return list(KNOWN_PRESETS)
    return names or list(KNOWN_PRESETS)


def weights_present(preset_name: str = PRODUCTION_PRESET) -> bool:
    """True when every weight the preset loads is on disk, by engine.models' own lookup
    (torch-free: a path and cache check, never a download)."""
    from engine.models import locate, requirements
    from engine.presets import PresetError, load_preset

    try:
        sources = requirements(load_preset(preset_name))
    except (PresetError, ValueError):
        return False
    return all(locate(source) is not None for source in sources)


def switch_refusal(preset_name: str) -> str | None:
    """Why a switch to `preset_name` cannot work on this machine (one line), or None: an invalid
    preset, or weights that are not on disk, by engine.models' own torch-free lookup (the check
    the endpoint makes too). Asked before a PUT /preset, so a switch doomed to fail never starts."""
    from engine.models import missing_weights
    from engine.presets import PresetError, load_preset

    try:
        preset = load_preset(preset_name)
    except PresetError as exc:
        return f"preset {preset_name!r} is invalid: {exc}"
    return missing_weights(preset)


def best_preset(gpu_count: int, have_weights: bool) -> tuple[str, str]:
    """(preset, reason): text_mv_fast on a CUDA box with weights, else smoke and why."""
    if gpu_count > 0 and have_weights:
        return PRODUCTION_PRESET, f"{gpu_count} CUDA GPU(s) and MVDream weights found"
    if gpu_count <= 0:
        why = "no CUDA GPU visible to NVML"
    else:
        why = "MVDream weights not found (run `gen404 models pull`)"
    return FALLBACK_PRESET, why


def _remote_from_mapping(item: dict[str, Any], where: str, default_key: str | None) -> RemoteSpec:
    unknown = set(item) - {"url", "api_key", "api_key_env"}
    if unknown:
        raise ConfigError(f"{where}: unknown remote endpoint key(s) {sorted(unknown)}")
    key = item.get("api_key")
    if item.get("api_key_env"):
        key = os.environ.get(str(item["api_key_env"])) or None
        if key is None:
            raise ConfigError(f"{where}: api_key_env {item['api_key_env']} is not set")
    return RemoteSpec(parse_remote_url(str(item["url"]), f"{where}: url"), key or default_key)


def _endpoint_from_mapping(item: Any, where: str) -> EndpointSpec:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: each endpoint must be a mapping with port/preset/gpu")
    unknown = set(item) - {"port", "preset", "gpu"}
    if unknown:
        raise ConfigError(f"{where}: unknown endpoint key(s) {sorted(unknown)}")
    try:
        port = int(item.get("port", DEFAULT_PORT))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: port must be an integer") from exc
    gpu = item.get("gpu")
    return EndpointSpec(
        port=port, preset=str(item.get("preset") or AUTO), gpu=None if gpu is None else str(gpu)
    )


def load_file(path: Path, base: ConsoleConfig | None = None) -> ConsoleConfig:
    cfg = base or ConsoleConfig()
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    unknown = set(data) - {"endpoints", "refresh", "log_dir", "spawn", "preload", "keymap", "api_key"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    cfg = replace(cfg, config_path=path)
    if data.get("api_key"):
        cfg.api_key = str(data["api_key"])
    if "endpoints" in data:
        items = data["endpoints"] or []
        if not isinstance(items, list):
            raise ConfigError(f"{path}: endpoints must be a list")
        where = [f"{path}: endpoints[{i}]" for i in range(len(items))]
        default_key = cfg.api_key or remote_key_from_env()
        cfg.remotes = [
            _remote_from_mapping(it, w, default_key)
            for it, w in zip(items, where, strict=True)
            if isinstance(it, dict) and "url" in it
        ]
        cfg.endpoints = [
            _endpoint_from_mapping(it, w)
            for it, w in zip(items, where, strict=True)
            if not (isinstance(it, dict) and "url" in it)
        ]
    if "refresh" in data:
        cfg.refresh = _refresh(data["refresh"], str(path))
    if data.get("log_dir"):
        cfg.log_dir = Path(str(data["log_dir"])).expanduser()
    if "spawn" in data:
        cfg.spawn = bool(data["spawn"])
    if "preload" in data:
        cfg.preload = bool(data["preload"])
    if "keymap" in data:
        keymap = data["keymap"] or {}
        if not isinstance(keymap, dict):
            raise ConfigError(f"{path}: keymap must map binding ids to keys")
        cfg.keymap = {str(k): str(v) for k, v in keymap.items()}
    return cfg


def _refresh(value: Any, where: str) -> float:
    try:
        refresh = float(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: refresh must be a number of seconds") from exc
    if not 0.1 <= refresh <= 60:
        raise ConfigError(f"{where}: refresh must be between 0.1 and 60 seconds")
    return refresh


def _parse_endpoint_flag(text: str) -> EndpointSpec:
    parts = text.split(":")
    if not parts[0].isdigit() or len(parts) > 3:
        raise ConfigError(f"--endpoint {text!r}: expected PORT[:PRESET[:GPU]]")
    preset = parts[1] if len(parts) > 1 and parts[1] else AUTO
    gpu = parts[2] if len(parts) > 2 and parts[2] else None
    return EndpointSpec(int(parts[0]), preset, gpu)


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gen404-console",
        description="Operations console for 404-GEN miners: supervises `gen404 serve` endpoints, "
        "shows GPU health and throughput.",
    )
    p.add_argument("--config", type=Path, help=f"config file (default: {paths.config_file()})")
    p.add_argument("--endpoints", type=int, metavar="N", help="run N endpoints on consecutive ports")
    p.add_argument("--port", type=int, metavar="P", help=f"first port (default {DEFAULT_PORT})")
    p.add_argument("--preset", help="preset for every endpoint (default: auto = best runnable)")
    p.add_argument("--gpus", metavar="LIST", help="GPUs assigned round-robin to endpoints, e.g. 0,1")
    p.add_argument(
        "--endpoint",
        action="append",
        metavar="PORT[:PRESET[:GPU]] | http://HOST:PORT",
        help="one endpoint (repeatable); replaces the configured list. A URL is another box's "
        "endpoint, watched beside the local ones (its Bearer key: config api_key or env GEN404_API_KEY)",
    )
    p.add_argument(
        "--refresh", type=float, metavar="S", help=f"refresh interval (default {DEFAULT_REFRESH}s)"
    )
    p.add_argument("--log-dir", type=Path, help="endpoint log directory (default: state dir/logs)")
    p.add_argument(
        "--no-spawn",
        "--attach",
        dest="no_spawn",
        action="store_true",
        help="start nothing: only watch (and adopt) endpoints that already run",
    )
    p.add_argument(
        "--no-preload",
        action="store_true",
        help="start every endpoint as a fresh process (default: restarts and new endpoints are"
        " forked from a process that has imported torch once: ~10 s of imports saved on the H200 box)",
    )
    p.add_argument(
        "--bench-json",
        type=Path,
        metavar="FILE",
        help="`gen404 bench --json` results: generation times the reward advisor (a) uses for presets not running",
    )
    p.add_argument("--once", action="store_true", help="print one snapshot of GPUs and endpoints, then exit")
    p.add_argument("--json", action="store_true", help="with --once: print JSON")
    add_mining_arguments(p)
    return p


def load_config(argv: Sequence[str] | None = None) -> ConsoleConfig:
    args = build_arg_parser().parse_args(argv)
    cfg = ConsoleConfig()
    path = args.config or paths.config_file()
    if args.config and not path.is_file():
        raise ConfigError(f"--config {path}: no such file")
    if path.is_file():
        cfg = load_file(path, cfg)
    local_flags = [t for t in args.endpoint or [] if not is_remote_flag(t)]
    remote_flags = [t for t in args.endpoint or [] if is_remote_flag(t)]
    if remote_flags:  # they replace the configured remotes, and leave the local list alone
        key = cfg.api_key or remote_key_from_env()
        cfg.remotes = [RemoteSpec(parse_remote_url(t, "--endpoint"), key) for t in remote_flags]
    if local_flags:
        cfg.endpoints = [_parse_endpoint_flag(t) for t in local_flags]
    elif args.endpoints is not None or args.port is not None:
        count = args.endpoints if args.endpoints is not None else max(1, len(cfg.endpoints))
        first = args.port if args.port is not None else DEFAULT_PORT
        cfg.endpoints = [EndpointSpec(first + i) for i in range(max(0, count))]
    if args.port is not None:
        cfg.first_port = args.port
    if args.preset:
        for spec in cfg.endpoints:
            spec.preset = args.preset
    if args.gpus:
        gpus = [g.strip() for g in args.gpus.split(",") if g.strip()]
        for i, spec in enumerate(cfg.endpoints):
            spec.gpu = gpus[i % len(gpus)]
    if args.refresh is not None:
        cfg.refresh = _refresh(args.refresh, "--refresh")
    if args.log_dir:
        cfg.log_dir = args.log_dir.expanduser()
    if args.no_spawn:
        cfg.spawn = False
    if args.no_preload:
        cfg.preload = False
    if args.bench_json:
        cfg.bench_json = args.bench_json.expanduser()
    cfg.once = args.once
    cfg.json = args.json
    try:
        cfg.mining = mining_options(args)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return cfg


def step_refresh(current: float, direction: int) -> float:
    """The next refresh step faster (-1) or slower (+1) than `current`."""
    steps = sorted(set(REFRESH_STEPS) | {current})
    i = steps.index(current) + direction
    return steps[max(0, min(len(steps) - 1, i))]
