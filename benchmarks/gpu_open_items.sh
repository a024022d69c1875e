#!/usr/bin/env bash
# Device call 1 of 2 for the open acceptance items (run from the repo root on the GPU box, wheels
# installed, PYTHONPATH set; writes $OUT/open_items.log and .cache/levers.json for call 2):
#   GPU tests: graphed and compiled guidance against eager (tests/test_bench.py, CUDA only)
#   issue 8: `gen404 generate --random-weights --preset text_mv_fast` end to end (time, peak memory)
#   issue 4: endpoint request overhead with a full-size random-weight model
#   issue 9: text_mv's speed levers side by side at text_mv shapes, 300 steps each (channels-last,
#            torch.compile, both); benchmarks/gpu_text_mv_best.sh then runs the winner in full.
source benchmarks/gpu_env.sh open_items
gen404() { python3 -c "import sys; from engine.cli import main; sys.exit(main())" "$@"; }
echo "== GPU tests: graphed / compiled+graphed guidance vs eager" | tee -a "$LOG"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/test_bench.py -k cuda 2>&1 | tail -5 | tee -a "$LOG"
echo "== issue 8: gen404 generate (the first gsplat call builds its CUDA code) [t=${SECONDS}s]" | tee -a "$LOG"
timeout 300 python3 -m engine.cli generate "a red sports car" --preset text_mv_fast --random-weights --device cuda \
  -o "$OUT/car.ply" 2>&1 | grep -v "steps " | tee -a "$LOG"
gen404 inspect "$OUT/car.ply" 2>&1 | tee -a "$LOG"
echo "== issue 4: endpoint overhead, full-size random weights [t=${SECONDS}s]" | tee -a "$LOG"
timeout 180 python3 benchmarks/bench_endpoint_overhead.py --preset text_mv_fast --random-weights \
  --device cuda -n 10 2>&1 | tail -12 | tee -a "$LOG"
left=$((575 - SECONDS))
echo "== issue 9: text_mv levers, 300 steps each, ${left}s left [t=${SECONDS}s]" | tee -a "$LOG"
base="text_mv+iters=300"
timeout "$left" python3 -m engine.cli bench --runs 2 --no-stages --random-weights --device cuda \
  --presets "$base,$base+channels_last=true,$base+compile=true+channels_last=true,$base+compile=true" \
  --json .cache/levers.json 2>&1 | tail -30 | tee -a "$LOG"
cp .cache/levers.json "$OUT/" 2>/dev/null
echo "== done [t=${SECONDS}s]" | tee -a "$LOG"
