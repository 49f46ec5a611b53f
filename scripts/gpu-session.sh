#!/usr/bin/env bash
# Prepares a carry folder (default /work/main/.gpu-session, git-ignored through the
# /.gpu-*/ exclude) for the CUDA session's device run: the static stripped gptq binary of
# this checkout, OpenBLAS and its Fortran runtime xz-compressed, cubins of earlier runs
# (CUBINS=folder) so the kernels need not compile again, a tiny chat-capable model (the
# qwen2 arch fixture with the tiny-llama fixture's tokenizer, ids < 280 of its 384), and
# scripts/gpu-session-run.sh as run.sh. Device command: bash .gpu-session/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
D=${1:-/work/main/.gpu-session}
swift build -c release --static-swift-stdlib --product gptq --scratch-path .build-gpu
rm -rf "$D" && mkdir -p "$D/lib" "$D/cubins" "$D/tiny-chat"
cp .build-gpu/release/gptq "$D/gptq" && strip "$D/gptq"
for lib in $(ldd "$D/gptq" | awk '/=> \// {print $3}'); do
  case "$(basename "$lib")" in
    libopenblas*|libgfortran*|libquadmath*) xz -T2 -c "$lib" > "$D/lib/$(basename "$lib").xz" ;;
  esac
done
[ -n "${CUBINS:-}" ] && cp "$CUBINS"/*.cubin "$D/cubins/" || true
cp Tests/Fixtures/arch/qwen2/{config.json,model.safetensors} "$D/tiny-chat/"
cp Tests/Fixtures/gguf/reference/tiny-llama/{tokenizer.json,tokenizer_config.json,generation_config.json} "$D/tiny-chat/"
cp scripts/gpu-session-run.sh "$D/run.sh"
du -sh "$D"
