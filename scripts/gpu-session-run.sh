#!/usr/bin/env bash
# Runs on the GPU machine from the repository root (copied to .gpu-session/run.sh by
# scripts/gpu-session.sh): gpu-check, the CLI with --device cuda against the CPU on a tiny
# model, gptq bench --device cuda on fixtures, gpu-bench --model. Logs in $OUT, summary last.
# STEPS selects steps (default: all): check cli model.
set -uo pipefail
D=.gpu-session
OUT=${OUT:-/tmp/gptq-session-out}; mkdir -p "$OUT"
mkdir -p /tmp/gptq-lib && for f in $D/lib/*.xz; do xz -dc "$f" > "/tmp/gptq-lib/$(basename "$f" .xz)"; done
export LD_LIBRARY_PATH=/tmp/gptq-lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTQ_CACHE=/tmp/gptq-cache
mkdir -p $GPTQ_CACHE/cuda && cp $D/cubins/*.cubin $GPTQ_CACHE/cuda/ 2>/dev/null
# Line-buffered, so a crash loses no output.
G="stdbuf -oL -eL $D/gptq"
T=$D/tiny-chat
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader; } 2>&1 | tee "$OUT/env.log"
for step in ${STEPS:-check cli model}; do
  case $step in
    check) timeout 240 $G gpu-check > "$OUT/check.out" 2>&1; echo "gpu-check rc=$?" >> "$OUT/check.out" ;;
    cli) {
      for dev in cpu cuda; do
        timeout 60 $G generate --model $T --prompt "the cat sat on" --max-new-tokens 24 --device $dev > "$OUT/gen-$dev.txt" 2>"$OUT/gen-$dev.err"; echo "generate $dev rc=$?: $(tail -1 "$OUT/gen-$dev.err")"
        timeout 60 $G generate --model $T --prompt "the cat sat on" --max-new-tokens 24 --temperature 0.8 --top-k 40 --top-p 0.9 --seed 3 --device $dev > "$OUT/sample-$dev.txt" 2>/dev/null; echo "sample $dev rc=$?"
        printf 'hello there\nhow are you\n' | timeout 60 $G chat --model $T --max-new-tokens 12 --device $dev > "$OUT/chat-$dev.txt" 2>/dev/null; echo "chat $dev rc=$?"
        timeout 60 $G perplexity --model $T --text README.md --seqlen 64 --windows 8 --device $dev 2>/dev/null | tail -1 | sed "s/^/$dev /"
      done
      # Sampled text may differ: a draw near a boundary of the float16 GPU's distribution.
      for f in gen sample chat; do cmp -s "$OUT/$f-cpu.txt" "$OUT/$f-cuda.txt" && echo "$f: GPU output identical to CPU" || echo "$f: GPU output differs from CPU"; done
      for f in Tests/Fixtures/arch/qwen2 Tests/Fixtures/autogptq_ckpt/w4_g32_descact_asym; do
        timeout 60 $G bench --device cuda --model $f --prompt-tokens 40 --decode-tokens 60 2>&1 | grep -E 'prefill|decode'; echo "bench rc=$?"
      done
      rm -f "$OUT"/*-cpu.txt "$OUT"/*-cuda.txt "$OUT"/*.err
    } > "$OUT/cli.out" 2>&1 ;;
    model) timeout 180 $G gpu-bench --model > "$OUT/model.out" 2>&1; echo "gpu-bench rc=$?" >> "$OUT/model.out" ;;
  esac
done
echo "==== summary"
[ -f "$OUT/check.out" ] && grep -vE '^PASS  (gptq|fp16) ' "$OUT/check.out" | tail -80
[ -f "$OUT/cli.out" ] && cat "$OUT/cli.out"
[ -f "$OUT/model.out" ] && cat "$OUT/model.out"
