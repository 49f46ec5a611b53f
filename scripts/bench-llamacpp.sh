#!/usr/bin/env bash
# llama.cpp against swift-gptq on this machine, side by side: llama-bench on SmolLM2's Q4_1
# GGUF (the file scripts/fetch-model.sh keeps beside the converted model) and `gptq bench` on
# the GPTQ 4-bit g128 folder (scripts/main-job.sh makes it), both on THREADS threads, in
# alternation for ROUNDS rounds; prints each round's tokens/s and the ratios ours / llama.cpp
# for decode and prefill, then their medians.
#
# llama.cpp is built from the source vendored in the PyPI sdist of llama-cpp-python
# (`pip download --no-binary llama-cpp-python`), configured with its defaults (a Release
# build for the host CPU), llama-bench target only, once into
# ${GPTQ_CACHE:-~/.cache/swift-gptq}/llama.cpp-<version>.
#
# The measurements are equivalent: llama-bench's pp512 is one forward of 512 tokens, ours
# --prompt-tokens 512; its tg128 generates 128 tokens from an empty KV cache, ours
# --decode-tokens 128 --decode-context 0. Third, both decode 128 tokens after 512 cached
# positions (llama-bench -p 0 -n 128 -d 512; `gptq bench`'s default): the longer KV cache's cost.
#
# Each build and timing run holds BENCH_LOCK (/tmp/swift-build.lock) so that nothing else
# compiles meanwhile: do not call this script under that lock.
#
# Usage: scripts/bench-llamacpp.sh [GPTQ_FOLDER] [-- GPTQ_BENCH_FLAGS...]
#   e.g. scripts/bench-llamacpp.sh -- --int8-head
# Environment: ROUNDS (3), THREADS (2), LLAMA_CPP_PYTHON (llama-cpp-python's version, default the newest).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
lock="${BENCH_LOCK:-/tmp/swift-build.lock}"
cache="${GPTQ_CACHE:-$HOME/.cache/swift-gptq}"
folder="$cache/SmolLM2-135M-Instruct-gptq-4bit-g128"
if [ $# -gt 0 ] && [ "$1" != "--" ]; then folder="$1"; shift; fi
[ "${1:-}" = "--" ] && shift
extra=("$@")

model="$(flock "$lock" scripts/fetch-model.sh | tail -n 1)"
gguf="$model/SmolLM2-135M-Instruct.Q4_1.gguf"
[ -f "$gguf" ] || { echo "error: $gguf is missing (scripts/fetch-model.sh keeps it beside the converted model)" >&2; exit 1; }
[ -f "$folder/config.json" ] || { echo "error: no GPTQ folder at $folder; scripts/main-job.sh makes it" >&2; exit 1; }

echo "== building gptq" >&2
flock "$lock" swift build -c release --product gptq >&2
gptq="$(swift build -c release --show-bin-path)/gptq"

# llama.cpp from llama-cpp-python's sdist.
spec="llama-cpp-python${LLAMA_CPP_PYTHON:+==$LLAMA_CPP_PYTHON}"
sdists="$cache/sdists"
mkdir -p "$sdists"
echo "== fetching the $spec sdist" >&2
python3 -m pip download --quiet --no-deps --no-binary llama-cpp-python --dest "$sdists" "$spec" >&2
sdist="$(ls -t "$sdists"/llama_cpp_python-*.tar.gz | head -n 1)"
version="$(basename "$sdist" .tar.gz)"
version="${version#llama_cpp_python-}"
llama="$cache/llama.cpp-$version"
bench="$llama/build/bin/llama-bench"
# Built in place (its binaries find their shared libraries by absolute path); the marker is
# written last, so an interrupted build starts over.
if [ ! -f "$llama/.build-complete" ]; then
  if ! command -v cmake >/dev/null; then
    echo "== installing cmake (pip)" >&2
    python3 -m pip install --quiet cmake >&2
  fi
  rm -rf "$llama"
  mkdir -p "$llama"
  tar -xzf "$sdist" -C "$llama" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
  echo "== building llama-bench from llama-cpp-python $version's vendored llama.cpp" >&2
  cmake -S "$llama" -B "$llama/build" >&2
  flock "$lock" cmake --build "$llama/build" --target llama-bench -j "$(nproc)" >&2
  touch "$llama/.build-complete"
fi

# One round of llama-bench: "prefill decode decode_after_512" tokens/s (means over its 5 repetitions).
run_llama() {
  { flock "$lock" "$bench" -m "$gguf" -t "$threads" -p 512 -n 128 -o csv 2>/dev/null
    flock "$lock" "$bench" -m "$gguf" -t "$threads" -p 0 -n 128 -d 512 -o csv 2>/dev/null | tail -n +2; } | python3 -c '
import csv, sys
rows = {(int(r["n_prompt"]), int(r["n_gen"]), int(r["n_depth"])): float(r["avg_ts"]) for r in csv.DictReader(sys.stdin)}
print(rows[(512, 0, 0)], rows[(0, 128, 0)], rows[(0, 128, 512)])'
}

# One gptq bench run: "prefill decode decode_after_prompt" tokens/s.
run_gptq() {
  local empty full
  empty="$(flock "$lock" "$gptq" bench --model "$folder" --threads "$threads" --prompt-tokens 512 --decode-tokens 128 --decode-context 0 "${extra[@]}")"
  full="$(flock "$lock" "$gptq" bench --model "$folder" --threads "$threads" --prompt-tokens 512 --decode-tokens 128 "${extra[@]}")"
  python3 - "$empty" "$full" <<'PY'
import re, sys
def rate(text, what): return float(re.search(rf"^{what}: .* = ([0-9.]+) tokens/s", text, re.M).group(1))
empty, full = sys.argv[1:]
print(rate(empty, "prefill"), rate(empty, "decode"), rate(full, "decode"))
PY
}

echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(nproc) cores; load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "llama.cpp: llama-cpp-python $version vendored source, llama-bench -t $threads -p 512 -n 128 on $(basename "$gguf")"
echo "gptq: bench --threads $threads --prompt-tokens 512 --decode-tokens 128 --decode-context 0 ${extra[*]} on $folder"
echo "tokens/s; ratios ours / llama.cpp"
printf '%-6s | %8s %8s %8s | %8s %8s %8s | %7s %7s %7s\n' round "pp512" "tg128" "tg@512" "pp512" "tg128" "tg@512" decode prefill tg@512
printf '%-6s | %-26s | %-26s |\n' "" "llama.cpp" "gptq"
results=()
for round in $(seq 1 "$rounds"); do
  read -r lp ld lf < <(run_llama)
  read -r op od of < <(run_gptq)
  results+=("$lp $ld $lf $op $od $of")
  python3 -c '
import sys
n = sys.argv[1]; lp, ld, lf, op, od, of = map(float, sys.argv[2:])
print(f"{n:<6} | {lp:8.1f} {ld:8.1f} {lf:8.1f} | {op:8.1f} {od:8.1f} {of:8.1f} | {od/ld:6.2f}x {op/lp:6.2f}x {of/lf:6.2f}x")' "$round" "$lp" "$ld" "$lf" "$op" "$od" "$of"
done
printf '%s\n' "${results[@]}" | python3 -c '
import statistics, sys
rows = [list(map(float, line.split())) for line in sys.stdin if line.strip()]
lp, ld, lf, op, od, of = (statistics.median(c) for c in zip(*rows))
decode, prefill, late = (statistics.median(r[i + 3] / r[i] for r in rows) for i in (1, 0, 2))
print(f"median | {lp:8.1f} {ld:8.1f} {lf:8.1f} | {op:8.1f} {od:8.1f} {of:8.1f} | {decode:6.2f}x {prefill:6.2f}x {late:6.2f}x")
print(f"ratios (ours / llama.cpp, median of {len(rows)} rounds): decode {decode:.2f}x, prefill {prefill:.2f}x, decode after 512 positions {late:.2f}x")'
