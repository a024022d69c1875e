#!/usr/bin/env bash
# Device call 2 of issue 9's third round (after gpu_round3.sh; carry .gscache/ with its
# torch_ext.tar.zst to skip gsplat's build), writes under $OUT:
#   1. the VAE fwd+bwd probe: LayoutGroupNorm (the engine's) vs ATen's GroupNorm vs contiguous,
#      the first profiled (the aten copies under convolution_backward should be gone)
#   2. GPU tests: graphed and compiled+graphed guidance against eager
#   3. text_mv as committed, 1500 steps, end to end
source benchmarks/gpu_env.sh confirm
gsplat_restore
echo "== VAE encoder fwd+bwd variants, 4 x 256 px [t=${SECONDS}s]" | tee -a "$LOG"
timeout 240 python3 benchmarks/gpu_vae_backward_probe.py --variants cl+compile,cl+compile+nativegn,contig+compile \
  --rows 16 2>&1 | grep -v "USDT\|profiler_st\|DeviceProperties" | tee -a "$LOG"
echo "== GPU tests [t=${SECONDS}s]" | tee -a "$LOG"
timeout 150 python3 -m pytest -q -p no:cacheprovider -p no:logging tests/test_bench.py tests/test_layout_norm.py -k cuda \
  2>&1 | tail -4 | tee -a "$LOG"
left=$((590 - SECONDS))
echo "== text_mv as committed, ${left}s left [t=${SECONDS}s]" | tee -a "$LOG"
timeout "$left" python3 -m engine.cli bench --runs "${RUNS:-2}" --no-stages --random-weights --device cuda \
  --presets text_mv --json "$OUT/text_mv.json" 2>&1 | tail -8 | tee -a "$LOG"
echo "== done [t=${SECONDS}s]" | tee -a "$LOG"
