#!/usr/bin/env bash
# The whole story on a fresh machine: fetch SmolLM2-135M-Instruct, quantize it with GPTQ
# (4-bit, group 128, 128 windows of 512 tokens of wikitext-2 valid, seed 0: AutoGPTQ's
# reference protocol), compare float and quantized perplexity on wikitext-2 test
# (16 windows of 2048 tokens), measure decode speed quantized vs float and chat with the
# quantized model.
# Output folder: ${GPTQ_CACHE:-~/.cache/swift-gptq}/SmolLM2-135M-Instruct-gptq-4bit-g128.
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
if ! dpkg -s libopenblas-dev >/dev/null 2>&1; then
  apt-get update -qq
  apt-get install -y -qq libopenblas-dev >/dev/null
fi

model="$(scripts/fetch-model.sh | tail -n 1)"
cache="${GPTQ_CACHE:-$HOME/.cache/swift-gptq}"
out="$cache/SmolLM2-135M-Instruct-gptq-4bit-g128"
calib=Tests/Fixtures/data/wikitext2-valid-tokenized.txt
eval_text=Tests/Fixtures/data/wikitext2-test.txt

swift build -c release --product gptq >&2
gptq="$(swift build -c release --show-bin-path)/gptq"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "== quantizing $model (GPTQ 4-bit, group 128, 128 x 512 calibration tokens)" >&2
"$gptq" quantize --model "$model" --out "$out" --overwrite --bits 4 --group-size 128 \
  --calib "$calib" --nsamples 128 --seqlen 512 --seed 0 | tee -a "$log"

echo "== perplexity, wikitext-2 test, 16 windows of 2048 tokens" >&2
float_ppl="$("$gptq" perplexity --model "$model" --text "$eval_text" --windows 16 | tail -n 1)"
quant_ppl="$("$gptq" perplexity --model "$out" --text "$eval_text" --windows 16 | tail -n 1)"

echo "== decode and prefill speed, quantized then float, in one process" >&2
speed="$("$gptq" bench --model "$out" --baseline "$model" | grep -E '^(model|prefill|decode|speed vs baseline):')"

echo "== chatting with the quantized model" >&2
answer="$("$gptq" generate --model "$out" --chat --prompt "What is the capital of France? Answer in one sentence." \
  --max-new-tokens 48 --temperature 0)"

cat <<SUMMARY

===== summary =====
model:            $model
quantized folder: $out
$(grep '^quantized' "$log")
float perplexity:     $float_ppl
quantized perplexity: $quant_ppl
(AutoGPTQ, same protocol: float 20.7146, GPTQ 4-bit g128 29.1335)
$speed
chat answer: $answer
SUMMARY
