#!/usr/bin/env bash
# Prepares SmolLM2-135M-Instruct's GGUF (98 MB, fetched by scripts/fetch-model.sh) for the GPU
# machine, where a call's working tree (this checkout's files and what it carries) is limited to
# 64 MiB: three git-ignored folders, .gpu-smol1 and .gpu-smol2 (40 MB) and .gpu-smol3 (the rest),
# each holding one part of the file. Carry them in three device calls close enough together that
# the machine is still held (its idle release is short): [".gpu-smol1"] and [".gpu-smol2"] running
# `true`, then [".gpu", ".gpu-smol3"] running `GPU_STEPS=smol bash .gpu/run.sh`, which joins the
# parts, checks the file's SHA-256 and runs the real model's whole job on the GPU
# (scripts/gpu-run.sh).
# Usage: scripts/gpu-smol.sh
set -euo pipefail
cd "$(dirname "$0")/.."
model="$(scripts/fetch-model.sh | tail -n 1)"
gguf="$model/SmolLM2-135M-Instruct.Q4_1.gguf"
part=40000000
rm -rf .gpu-smol?
for i in $(seq 1 $(( ($(stat -c %s "$gguf") + part - 1) / part ))); do
  mkdir -p .gpu-smol$i
  dd if="$gguf" of=.gpu-smol$i/gguf.part bs=8M iflag=skip_bytes,count_bytes skip=$(( (i - 1) * part )) count=$part status=none
done
cmp <(cat .gpu-smol?/gguf.part) "$gguf"
du -sh .gpu-smol? >&2
