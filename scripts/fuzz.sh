#!/usr/bin/env bash
# Fuzzes the parsers with libFuzzer: builds gptq-fuzz with -sanitize=fuzzer into .build-fuzz,
# seeds each target's corpus with the real files of Tests/Fixtures, and runs each target in
# turn until FUZZ_RUNS inputs or FUZZ_SECONDS seconds (per target), whichever comes first.
#   scripts/fuzz.sh [TARGET...]          (default: every target)
#   FUZZ_RUNS=1000000 FUZZ_SECONDS=1200 scripts/fuzz.sh json
# A crash, a hang (over 10 s on one input) or more than 2 GB of memory fails the run; the
# input is kept as .build-fuzz/crashes/<target>/crash-*, and `gptq-fuzz TARGET FILE`
# (a plain build) replays it. Prints one summary line per target.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${FUZZ_RUNS:-1000000}
seconds=${FUZZ_SECONDS:-1200}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors gguf json config tokenizer regex jinja calibration)

swift build -c release --product gptq-fuzz --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer -Xswiftc -DFUZZING -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld >&2
fuzzer=.build-fuzz/release/gptq-fuzz
fixtures=Tests/Fixtures

# Seeds: the fixtures each parser reads (tokenizers reduced to their first 300 ids by
# Tests/Fixtures/fuzz/make_seeds.py, so that an input parses in microseconds).
seed() {
  local target=$1 dir=.build-fuzz/corpus/$1
  mkdir -p "$dir"
  case $target in
    safetensors) for f in $fixtures/arch/*/reference.safetensors $fixtures/autogptq_ckpt/*/reference.safetensors \
                          $fixtures/rope/reference.safetensors; do cp "$f" "$dir/$(echo "$f" | tr / _)"; done ;;
    gguf) cp $fixtures/gguf/*.gguf "$dir"/ ;;
    json|config) for f in $fixtures/arch/*/*.json $fixtures/autogptq_ckpt/*/*.json $fixtures/tokenizers/*/tokenizer_config.json \
                          $fixtures/gguf/reference/*/*config.json; do cp "$f" "$dir/$(echo "$f" | tr / _)"; done ;;
    tokenizer) cp $fixtures/fuzz/tokenizer/* "$dir"/ ;;
    regex) cp $fixtures/fuzz/regex/* "$dir"/ ;;
    jinja) cp $fixtures/chat_templates/*.jinja "$dir"/ ;;
    calibration) printf '\0%s' "$(head -c 2000 $fixtures/data/wikitext2-test.txt)" > "$dir/text"
                 printf '\1{"text": "a b"}\n{"text": "c"}\n' > "$dir/jsonl"
                 printf '\2[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [11, 12]]' > "$dir/json"
                 { printf '\3'; head -c 4096 $fixtures/data/wikitext2-test-smollm2-ids.safetensors; } > "$dir/safetensors"
                 { printf '\4'; head -c 400 $fixtures/tokenizers/llama3/wikitext2-head.ids.bin; } > "$dir/bin" ;;
  esac
}

status=0
for target in "${targets[@]}"; do
  seed "$target"
  crashes=.build-fuzz/crashes/$target
  mkdir -p "$crashes"
  log=.build-fuzz/$target.log
  start=$(date +%s%N)
  # SWIFT_BACKTRACE off: libFuzzer, not Swift's backtracer, must see the crash to keep the input.
  if SWIFT_BACKTRACE=enable=no "$fuzzer" "$target" -runs="$runs" -max_total_time="$seconds" -timeout=10 \
       -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=131072 -print_final_stats=1 \
       -artifact_prefix="$crashes/" .build-fuzz/corpus/"$target" >"$log" 2>&1; then result="crashes: 0"; else result="FAILED (see $log)"; status=1; fi
  end=$(date +%s%N)
  inputs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  milliseconds=$(( (end - start) / 1000000 ))
  peak=$(grep -o 'stat::peak_rss_mb: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  printf '%-12s %8s inputs in %5d.%01d s (%s/s), peak RSS %s MB, %s\n' "$target" "$inputs" $((milliseconds / 1000)) $((milliseconds % 1000 / 100)) \
    "$(( ${inputs/\?/0} * 1000 / (milliseconds + 1) ))" "$peak" "$result"
done
exit $status
