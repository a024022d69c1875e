#!/usr/bin/env bash
# One device call for what the first session could not run (its device time was spent):
#   issue 8: `gen404 generate --random-weights --preset text_mv_fast` end to end (time, peak GPU memory)
#   issue 4: endpoint request overhead with a full-size random-weight model
#   issue 9: text_mv with channels-last vs without (the measured lever for its 30 s miss)
# Usage on the device, in the repo root with the wheels installed and PYTHONPATH set:
#   bash benchmarks/gpu_open_items.sh          (writes $OUT/open_items.log)
set -u -o pipefail
OUT=${OUT:-/tmp/gen404-open}
mkdir -p "$OUT"
LOG="$OUT/open_items.log"
export PYTHONUNBUFFERED=1
gen404() { python3 -c "import sys; from engine.cli import main; sys.exit(main())" "$@"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$LOG"
echo "== issue 8: gen404 generate (first call includes gsplat's CUDA build)" | tee -a "$LOG"
gen404 generate "a red sports car" --preset text_mv_fast --random-weights --device cuda \
  -o "$OUT/car.ply" 2>&1 | grep -v "steps " | tee -a "$LOG"
gen404 inspect "$OUT/car.ply" 2>&1 | tee -a "$LOG"
echo "== issue 4: endpoint overhead, full-size random weights" | tee -a "$LOG"
timeout 300 python3 benchmarks/bench_endpoint_overhead.py --preset text_mv_fast --random-weights \
  --device cuda -n 10 2>&1 | tail -12 | tee -a "$LOG"
echo "== issue 9: text_mv, channels-last off vs on (same process)" | tee -a "$LOG"
timeout 420 python3 -m engine.cli bench --presets "text_mv,text_mv+channels_last=true" --runs 1 \
  --random-weights --device cuda --json "$OUT/text_mv.json" 2>&1 | tail -25 | tee -a "$LOG"
