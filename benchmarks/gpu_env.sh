# Sourced by the device scripts (repo root on the GPU box, wheels installed, PYTHONPATH set):
#   source benchmarks/gpu_env.sh NAME   -> $OUT exists, $LOG=$OUT/NAME.log starts with the GPU's name
# gsplat's build and inductor's cache go to .cache/ (git-ignored, so kept between warm calls).
# gsplat_restore / gsplat_save move gsplat's ~95 s CUDA build between calls on fresh machines:
# save writes $OUT/torch_ext.tar.zst; a later call carries it as .gscache/ and restores it.
set -u -o pipefail
OUT=${OUT:-/tmp/gen404-$1}
LOG="$OUT/$1.log"
mkdir -p "$OUT" .cache
export PYTHONUNBUFFERED=1
export TORCH_EXTENSIONS_DIR=$PWD/.cache/torch_extensions TORCHINDUCTOR_CACHE_DIR=$PWD/.cache/inductor
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$LOG"
# a missing wheel stops the call here, in seconds, rather than after minutes of failed starts
# (session 15 lost a call to one; gsplat_build reports gsplat itself); docs/benchmarks.md
# "Running it" lists what travels
python3 -c "import fastapi, uvicorn, multipart, diffusers, open_clip, textual, engine.commands.serve" \
  2>&1 | tail -1 | tee -a "$LOG"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "gen404: the packages above do not import: carry the wheels" | tee -a "$LOG"; exit 3; }

_zst() {  # zstd through the python wheel (no zstd binary assumed): _zst c|d SRC DST
  python3 -c "import sys, zstandard as z; f = z.ZstdCompressor(level=9).compress if sys.argv[1] == 'c' \
else z.ZstdDecompressor().decompressobj().decompress; open(sys.argv[3], 'wb').write(f(open(sys.argv[2], 'rb').read()))" "$@"
}
gsplat_restore() {
  [ -f .gscache/torch_ext.tar.zst ] || return 0
  mkdir -p "$TORCH_EXTENSIONS_DIR" && _zst d .gscache/torch_ext.tar.zst /tmp/torch_ext.tar \
    && tar -xf /tmp/torch_ext.tar -C "$TORCH_EXTENSIONS_DIR" && echo "gsplat build restored" | tee -a "$LOG"
  # The wheels were just installed, so gsplat's sources are newer than the restored objects and
  # ninja would rebuild them all (84-115 s a call in session 6). Age the sources instead: touching
  # the objects does not work, ninja then finds its stored deps out of date (a small ninja
  # project on the CPU dev box showed both; the device has not run this yet).
  local src
  src=$(python3 -c "import importlib.util as u; print(u.find_spec('gsplat').submodule_search_locations[0])") \
    && find "$src" -type f -exec touch -d 2020-01-01 {} +
}
gsplat_build() {  # one tiny render: builds (or loads) gsplat's extension
  python3 -c "
import torch
from gsplat import rasterization
n, d = 64, 'cuda'
rasterization(torch.randn(n, 3, device=d), torch.nn.functional.normalize(torch.randn(n, 4, device=d), dim=-1),
              torch.rand(n, 3, device=d) * 0.1, torch.rand(n, device=d), torch.rand(n, 3, device=d),
              torch.eye(4, device=d)[None], torch.tensor([[[64.0, 0, 32], [0, 64.0, 32], [0, 0, 1]]], device=d), 64, 64)
torch.cuda.synchronize()
print('gsplat ready')"
}
gsplat_save() {
  tar -cf /tmp/torch_ext.tar -C "$TORCH_EXTENSIONS_DIR" . 2>/dev/null \
    && _zst c /tmp/torch_ext.tar "$OUT/torch_ext.tar.zst" && ls -la "$OUT/torch_ext.tar.zst"
}
