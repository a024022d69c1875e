"""torch.compile's cache keys do not depend on what a process imported first (engine/compile_keys.py).

Real processes: one imports a module before torch that resolves "torch.channels_last" (as
cython.cimports does on the GPU box), the other does not; the key inductor's pickler writes for a
channels-last tensor must be the same in both.
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import torch

from engine import compile_keys

KEY_BYTES = """
import sys, types
if sys.argv[1] == "shadow":  # a module ahead of torch's own in sys.modules that resolves "torch.*"
    shadow = sys.modules["aaa_shadow"] = types.ModuleType("aaa_shadow")
import torch
if sys.argv[1] == "shadow":
    shadow.torch = torch
if sys.argv[2] == "fixed":
    from engine import compile_keys
    compile_keys.install()
from torch._inductor.codecache import FxGraphCachePickler, extract_tensor_metadata_for_cache_key
pickler = FxGraphCachePickler(torch.fx.GraphModule(torch.nn.Module(), torch.fx.Graph()))
t = torch.empty(2, 3, 4, 5).to(memory_format=torch.channels_last)
sys.stdout.write(pickler.dumps(extract_tensor_metadata_for_cache_key(t)).hex())
"""


def _key_bytes(order: str, fix: str) -> bytes:
    out = subprocess.run(
        [sys.executable, "-c", KEY_BYTES, order, fix], capture_output=True, text=True, timeout=300, check=True
    )
    return bytes.fromhex(out.stdout.strip())


def test_cache_key_of_a_channels_last_tensor_ignores_import_order() -> None:
    plain, shadowed = _key_bytes("plain", "fixed"), _key_bytes("shadow", "fixed")
    assert b"aaa_shadow" not in shadowed
    assert plain == shadowed


def test_the_shadow_module_does_reach_the_key_without_the_fix() -> None:
    # what the test above guards against, shown on this torch (if torch one day pickles memory
    # formats itself, this fails and compile_keys can go)
    assert b"aaa_shadow" in _key_bytes("shadow", "unfixed")


def test_memory_formats_still_round_trip_through_pickle() -> None:
    compile_keys.install()
    for fmt in (torch.channels_last, torch.contiguous_format, torch.preserve_format, torch.channels_last_3d):
        assert pickle.loads(pickle.dumps(fmt)) is fmt
    assert compile_keys.memory_format("channels_last") is torch.channels_last
