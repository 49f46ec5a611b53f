#!/usr/bin/env bash
# GPTQ on the GPU, run on the GPU machine from the repository root, out of a carried
# folder holding the static gptq binary, lib/*.xz (as scripts/gpu.sh prepares them) and
# this script: gpu-check --gptq-only, `gptq quantize` of the llama fixture on the CPU and
# on the GPU compared, gpu-bench --quantize (GPTQ alone, act-order, whole pipeline). GPU_STEPS selects steps (default: all):
# check, pipeline, bench. Logs in $OUT, summary last.
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/gptq-gpu-out}; mkdir -p "$OUT"
mkdir -p /tmp/gptq-lib && for f in "$D"/lib/*.xz; do xz -dc "$f" > "/tmp/gptq-lib/$(basename "$f" .xz)"; done
export LD_LIBRARY_PATH=/tmp/gptq-lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTQ_CACHE=/tmp/gptq-cache
G=$D/gptq
status=0
for step in ${GPU_STEPS:-check pipeline bench}; do
  case $step in
    check)
      $G gpu-check --gptq-only --log "$OUT/gptq-check.log" > "$OUT/gptq-check.out" 2>&1 || status=1 ;;
    pipeline)
      python3 -c "print([i * 7 % 384 for i in range(8000)])" > /tmp/ids.json
      for dev in cpu cuda; do
        start=$SECONDS
        $G quantize --model Tests/Fixtures/arch/llama --out /tmp/q-$dev --calib /tmp/ids.json \
          --nsamples 16 --seqlen 256 --group-size 32 --desc-act --device $dev --overwrite > "$OUT/quantize-$dev.log" 2>&1 || status=1
        echo "$dev: $((SECONDS - start)) s wall" >> "$OUT/quantize-$dev.log"
      done
      python3 - > "$OUT/quantize-compare.out" 2>&1 <<'PY' || status=1
import numpy as np
from safetensors.numpy import load_file
a, b = load_file("/tmp/q-cpu/model.safetensors"), load_file("/tmp/q-cuda/model.safetensors")
assert a.keys() == b.keys(), "different tensors"
for k in sorted(a):
    if k.endswith((".qweight", ".qzeros", ".g_idx")):
        print(f"{k}: {np.mean(a[k] == b[k]) * 100:.2f}% of int32 words identical")
    elif k.endswith(".scales"):
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        print(f"{k}: scales rel.diff {np.linalg.norm(x - y) / np.linalg.norm(x):.2e}")
PY
      ;;
    bench)
      $G gpu-bench --quantize --log "$OUT/gptq-bench.log" > "$OUT/gptq-bench.out" 2>&1 || status=1
      $G gpu-bench --quantize --act-order --layers 1 --log "$OUT/gptq-bench-act.log" > "$OUT/gptq-bench-act.out" 2>&1 || status=1
      $G gpu-bench --quantize --pipeline --log "$OUT/gptq-bench-pipeline.log" > "$OUT/gptq-bench-pipeline.out" 2>&1 || status=1 ;;
  esac
done
echo "==== summary"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
[ -f "$OUT/gptq-check.out" ] && grep -E 'FAIL|passed|rror|pipeline on the GPU' "$OUT/gptq-check.out" | tail -25
for dev in cpu cuda; do [ -f "$OUT/quantize-$dev.log" ] && grep -E 'GPTQ on|quantized|rror|wall' "$OUT/quantize-$dev.log" | tail -5; done
[ -f "$OUT/quantize-compare.out" ] && grep -E "qweight|rror" "$OUT/quantize-compare.out" | tail -14
[ -f "$OUT/gptq-bench.out" ] && cat "$OUT/gptq-bench.out"
[ -f "$OUT/gptq-bench-act.out" ] && cat "$OUT/gptq-bench-act.out"
[ -f "$OUT/gptq-bench-pipeline.out" ] && cat "$OUT/gptq-bench-pipeline.out"
exit $status
