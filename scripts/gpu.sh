#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) for a run on a GPU machine that has no Swift: a static,
# stripped gptq binary, the shared libraries it needs that such a machine may lack
# (OpenBLAS and its Fortran runtime), the gptq layer fixture when /work/shared has it,
# and .gpu/run.sh, the script to run there. Prints the command to give the device tool
# (carry [".gpu"]); run.sh writes its logs into $OUT and prints a short table last.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --static-swift-stdlib --product gptq --scratch-path .build-gpu
rm -rf .gpu && mkdir -p .gpu
cp .build-gpu/release/gptq .gpu/gptq
strip .gpu/gptq
# The libraries travel xz-compressed (OpenBLAS alone is 36 MB, the tool carries 64 MiB).
mkdir -p .gpu/lib
for lib in $(ldd .gpu/gptq | awk '/=> \// {print $3}'); do
  case "$(basename "$lib")" in
    libopenblas*|libgfortran*|libquadmath*) xz -T2 -c "$lib" > ".gpu/lib/$(basename "$lib").xz" ;;
  esac
done
# The gptq fixture without the calibration inputs (what gpu-check reads: packed layers, x_forward, y).
fixture=/work/shared/fixtures/gptq/layer_reference.safetensors
if [ -f "$fixture" ]; then
  python3 - "$fixture" .gpu/gptq_layers.safetensors <<'PY'
import sys
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: v for k, v in t.items() if k == "x_forward" or ".packed." in k or k.endswith(".y")}, sys.argv[2])
PY
fi
cp scripts/gpu-run.sh .gpu/run.sh
du -sh .gpu
echo
echo 'device command (carry [".gpu"]):'
echo '  bash .gpu/run.sh'
