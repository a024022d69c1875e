"""What every gen404 process does first, before torch or the model libraries are imported.

- Bytecode: engine/bytecode_cache.py (imports read it where Python would compile them each start).
- Libraries an endpoint never uses are hidden from the model libraries: diffusers imports peft
  whenever it is installed (diffusers.hooks, for LoRA layers gen404 never loads), and
  transformers then imports scikit-learn, with scipy and pandas (for assisted generation's
  roc_curve). On the H200 box, where both are installed, that chain was 2.9 s of the ~10 s an
  endpoint spends importing (python -X importtime, session 14). Without them, transformers'
  object-detection losses still imported scipy.optimize (0.9 s). gen404 depends on none of the
  three, and its tests run where none is installed.
- transformers itself is hidden too: diffusers imports it whenever it is installed
  (diffusers.loaders.lora_base, quantization configs), ~1.1 s of ~4.7 s on the CPU dev box and
  3-4.6 s on an H200 box (session 15), and the engine's text encoder and tokenizer are its own
  (engine/guidance/clip_text.py). So is torchvision: diffusers' package of transformer models
  imports every model, and Cosmos's imports torchvision when installed (~0.4 s on the CPU dev
  box). The scorer needs both (its DINOv2; open_clip and LPIPS's AlexNet): engine/scoring calls
  `reveal(...)` before importing them. diffusers keeps the answer it got at its own import.
- A name set to None in sys.modules is Python's own "not installed": importlib.util.find_spec
  answers None, which is what both libraries ask, and importing it raises ModuleNotFoundError.
  GEN404_HIDE_LIBRARIES (comma-separated names) replaces the list; empty hides nothing.
"""

from __future__ import annotations

import os
import sys

from engine import bytecode_cache

HIDE_ENV = "GEN404_HIDE_LIBRARIES"
HIDDEN_LIBRARIES = ("peft", "sklearn", "scipy", "transformers", "torchvision")


def hide_libraries() -> list[str]:
    """Mark the hidden libraries not installed for this process; returns the names hidden
    (one already imported stays as it is)."""
    setting = os.environ.get(HIDE_ENV)
    names = HIDDEN_LIBRARIES if setting is None else tuple(n.strip() for n in setting.split(",") if n.strip())
    hidden = []
    for name in names:
        if sys.modules.get(name) is None:
            sys.modules[name] = None  # type: ignore[assignment]  # None: "not installed" to the import system
            hidden.append(name)
    return hidden


def reveal(*names: str) -> None:
    """Let this process import `names` after all (a module that needs a hidden library calls this
    before importing it); a no-op for a name that was not hidden."""
    for name in names:
        if name in sys.modules and sys.modules[name] is None:
            del sys.modules[name]


def prepare() -> None:
    """Before any heavy import: where bytecode comes from, and what the model libraries see."""
    bytecode_cache.activate()
    hide_libraries()
