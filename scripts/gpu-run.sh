#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (copied to DEST/run.sh by
# scripts/gpu.sh, DEST being .gpu or another carry folder): checks first, then benchmarks;
# logs in $OUT, summary table last.
# GPU_STEPS selects steps (default: check kernels model): check, kernels, shapes, model.
set -uo pipefail
OUT=${OUT:-/tmp/gptq-gpu-out}; mkdir -p "$OUT"
dir=$(dirname "$0")
mkdir -p /tmp/gptq-lib && for f in "$dir"/lib/*.xz; do xz -dc "$f" > "/tmp/gptq-lib/$(basename "$f" .xz)"; done
export LD_LIBRARY_PATH=/tmp/gptq-lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTQ_CACHE=/tmp/gptq-cache
steps=${GPU_STEPS:-check kernels model}
G=$dir/gptq
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  ls /usr/local/cuda/lib64 2>/dev/null | grep -E '^lib(nvrtc|cublas)\.so' | tr '\n' ' '; echo
} 2>&1 | tee "$OUT/env.log"
status=0
fixture=""; [ -f "$dir"/gptq_layers.safetensors ] && fixture="--gptq-fixture $dir/gptq_layers.safetensors"
for step in $steps; do
  case $step in
    check) $G gpu-check $fixture --log "$OUT/check.log" > "$OUT/check.out" 2>&1 || status=1
           grep -E 'FAIL|passed|error|Error' "$OUT/check.out" | tail -40 ;;
    kernels) $G gpu-bench --kernels --log "$OUT/kernels.log" 2>&1 | tee "$OUT/kernels.out" | tail -3 || status=1 ;;
    shapes) $G gpu-bench --tiled-shapes --log "$OUT/shapes.log" 2>&1 | tee "$OUT/shapes.out" | tail -3 || status=1 ;;
    model) $G gpu-bench --model --log "$OUT/model.log" 2>&1 | tee "$OUT/model.out" | tail -3 || status=1 ;;
  esac
done
echo "==== summary"
cat "$OUT/env.log"
[ -f "$OUT/check.out" ] && grep -E 'passed|Error' "$OUT/check.out"
[ -f "$OUT/kernels.out" ] && cat "$OUT/kernels.out"
[ -f "$OUT/shapes.out" ] && cat "$OUT/shapes.out"
[ -f "$OUT/model.out" ] && cat "$OUT/model.out"
exit $status
