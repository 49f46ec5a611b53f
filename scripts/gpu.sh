#!/usr/bin/env bash
# Prepares DEST (default .gpu/, git-ignored; an engineer sharing the device tool passes
# their own carry folder, e.g. /work/main/.gpu-NAME) for a run on a GPU machine that has no Swift: a static,
# stripped gptq binary, the shared libraries it needs that such a machine may lack
# (OpenBLAS and its Fortran runtime), the gptq layer fixture when /work/shared has it,
# a tiny chat-capable model (the qwen2 arch fixture with the tiny-llama fixture's
# tokenizer, whose ids stay below the fixture's 384), cubins of earlier runs (CUBINS=folder)
# so the kernels need not compile again, and DEST/run.sh (scripts/gpu-run.sh), which
# checks and benchmarks everything in one device call. Prints the command to give the device tool
# (carry [DEST]); run.sh writes its logs into $OUT and prints a short table last.
# Usage: scripts/gpu.sh [DEST]
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpu}
swift build -c release --static-swift-stdlib --product gptq --scratch-path .build-gpu
rm -rf "$dest" && mkdir -p "$dest"
# The binary travels xz-compressed too (the server's NIO and Hummingbird make it 28 MB stripped).
cp .build-gpu/release/gptq "$dest"/gptq
strip "$dest"/gptq
xz -T2 -f "$dest"/gptq
# The libraries travel xz-compressed (OpenBLAS alone is 36 MB, the tool carries 64 MiB).
mkdir -p "$dest"/lib
for lib in $(ldd "$dest"/gptq | awk '/=> \// {print $3}'); do
  case "$(basename "$lib")" in
    libopenblas*|libgfortran*|libquadmath*) xz -T2 -c "$lib" > "$dest/lib/$(basename "$lib").xz" ;;
  esac
done
# The gptq fixture without the calibration inputs (what gpu-check reads: packed layers, x_forward, y).
fixture=/work/shared/fixtures/gptq/layer_reference.safetensors
if [ -f "$fixture" ]; then
  python3 - "$fixture" "$dest"/gptq_layers.safetensors <<'PY'
import sys
from safetensors.numpy import load_file, save_file
t = load_file(sys.argv[1])
save_file({k: v for k, v in t.items() if k == "x_forward" or ".packed." in k or k.endswith(".y")}, sys.argv[2])
PY
fi
mkdir -p "$dest"/cubins "$dest"/tiny-chat
[ -n "${CUBINS:-}" ] && cp "$CUBINS"/*.cubin "$dest"/cubins/ || true
cp Tests/Fixtures/arch/qwen2/{config.json,model.safetensors} "$dest"/tiny-chat/
cp Tests/Fixtures/gguf/reference/tiny-llama/{tokenizer.json,tokenizer_config.json,generation_config.json} "$dest"/tiny-chat/
cp scripts/gpu-run.sh "$dest"/run.sh
du -sh "$dest"
echo
echo "device command (carry [\"$(basename "$dest")\"]):"
echo "  bash $(basename "$dest")/run.sh"
