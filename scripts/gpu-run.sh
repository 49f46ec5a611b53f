#!/usr/bin/env bash
# Runs on the GPU machine from the repository root, out of the carry folder that
# scripts/gpu.sh prepares (copied there as run.sh): checks first, then benchmarks, in one
# device call; logs in $OUT, a summary last. GPU_STEPS selects steps (default: all):
#   check     gpu-check: kernels vs the CPU path, AutoGPTQ's fixture layers, the arch fixtures
#             and AutoGPTQ and GPTQModel checkpoints vs their references, sampling, GPTQ on the GPU; then the
#             fixtures' GPU logits vs the float16 roundings emulated in numpy
#   cli       generate/chat/perplexity with --device cuda against the CPU on a tiny model,
#             bench --device cuda on fixtures
#   quantize  gptq quantize of the llama fixture on the CPU and on the GPU, packed tensors compared
#   kernels   gpu-bench --kernels (4-bit GEMV/GEMM vs fp16 cuBLAS, device copy bandwidth;
#             GPU_KERNEL_ARGS adds arguments, e.g. "--batch 64 --batch 256")
#   shapes    gpu-bench --tiled-shapes (every launch shape of the 4-bit tensor-core kernel;
#             GPU_SHAPES_ARGS adds arguments, e.g. "--batch 1 --batch 8")
#   model     gpu-bench --model (Llama-2-7B shape: decode at batch 1, 8 and 64, prefill 2048, scoring)
#   serve     gptq serve --device cuda on the tiny chat model: greedy completions of 8 concurrent
#             requests (stdlib HTTP client; the machine has no openai package) equal
#             `gptq generate --device cuda`'s, and the KV block and slot gauges return to zero
#   gptq      gpu-bench --quantize (GPTQ alone, act-order, the whole pipeline; 7B shape)
#   torch     PyTorch's fp16 linear at the kernels' shapes, eager and from graphs
#             (scripts/reference/torch_linear_bench.py), beside gpu-bench's fp16 cuBLAS
#   smol      (not by default) the real model's job on the GPU from SmolLM2's GGUF, carried in
#             three parts (scripts/gpu-smol.sh): convert, GPTQ 4-bit g128 with --device cuda
#             (128 x 512 wikitext-2 valid tokens, seed 0), float and quantized perplexity on
#             wikitext-2 test, gpu-check --model against the CPU, chat on GPU and CPU, decode speed
#   exllama   (not by default) ExLlamaV2 0.3.2 loads swift-gptq's checkpoints (4-bit g128: sym v1, asym v2,
#             asym v1, act-order sym and asym, asym v2 with zero points of 0) and its logits are compared
#             with `gptq logits` (scripts/reference/exllamav2_interop.py); needs the wheels exllamav2 0.3.2
#             and ninja in .whl/ (carry [".gpu", ".whl"]); its CUDA extension JIT-builds into
#             /tmp/torch-ext while swift-gptq quantizes on the CPU; about 8 minutes at most
set -uo pipefail
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/gptq-gpu-out}; mkdir -p "$OUT"
mkdir -p /tmp/gptq-lib && for f in "$D"/lib/*.xz; do xz -dc "$f" > "/tmp/gptq-lib/$(basename "$f" .xz)"; done
export LD_LIBRARY_PATH=/tmp/gptq-lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export GPTQ_CACHE=/tmp/gptq-cache
mkdir -p $GPTQ_CACHE/cuda && cp "$D"/cubins/*.cubin $GPTQ_CACHE/cuda/ 2>/dev/null
# Line-buffered, so a crash loses no output.
xz -dc "$D"/gptq.xz > /tmp/gptq-lib/gptq && chmod +x /tmp/gptq-lib/gptq
G="stdbuf -oL -eL /tmp/gptq-lib/gptq"
T=$D/tiny-chat
{
  date -u; nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv,noheader
  ls /usr/local/cuda/lib64 2>/dev/null | grep -E '^lib(nvrtc|cublas)\.so' | tr '\n' ' '; echo
} 2>&1 | tee "$OUT/env.log"
status=0
fixture=""; [ -f "$D"/gptq_layers.safetensors ] && fixture="--gptq-fixture $D/gptq_layers.safetensors"
for step in ${GPU_STEPS:-check cli serve quantize kernels model gptq torch}; do
  case $step in
    check) {
      timeout 300 $G gpu-check $fixture --log "$OUT/check.log" --dump-logits "$OUT/fixture-logits.safetensors" || status=1
      python3 scripts/fixtures/fp16_emulation_check.py "$OUT/fixture-logits.safetensors" || status=1
    } > "$OUT/check.out" 2>&1 ;;
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
    quantize) {
      python3 -c "print([i * 7 % 384 for i in range(8000)])" > /tmp/ids.json
      for dev in cpu cuda; do
        start=$SECONDS
        timeout 120 $G quantize --model Tests/Fixtures/arch/llama --out /tmp/q-$dev --calib /tmp/ids.json \
          --nsamples 16 --seqlen 256 --group-size 32 --desc-act --device $dev --overwrite > "$OUT/quantize-$dev.log" 2>&1 || status=1
        echo "quantize $dev: $((SECONDS - start)) s wall, $(grep -E '^quantized' "$OUT/quantize-$dev.log")"
      done
      python3 - <<'PY' || status=1
import numpy as np
from safetensors.numpy import load_file
a, b = load_file("/tmp/q-cpu/model.safetensors"), load_file("/tmp/q-cuda/model.safetensors")
assert a.keys() == b.keys(), "different tensors"
for k in sorted(a):
    if k.endswith(".qweight"):
        print(f"{k}: {np.mean(a[k] == b[k]) * 100:.2f}% of int32 words identical")
    elif k.endswith(".scales"):
        x, y = a[k].astype(np.float64), b[k].astype(np.float64)
        print(f"{k}: scales rel.diff {np.linalg.norm(x - y) / np.linalg.norm(x):.2e}")
PY
    } > "$OUT/quantize.out" 2>&1 ;;
    kernels) timeout 300 $G gpu-bench --kernels ${GPU_KERNEL_ARGS:-} --log "$OUT/kernels.log" > "$OUT/kernels.out" 2>&1 || status=1 ;;
    shapes) timeout 300 $G gpu-bench --tiled-shapes ${GPU_SHAPES_ARGS:-} --log "$OUT/shapes.log" > "$OUT/shapes.out" 2>&1 || status=1 ;;
    model) timeout 180 $G gpu-bench --model --log "$OUT/model.log" > "$OUT/model.out" 2>&1 || status=1 ;;
    serve) {
      $G serve --model $T --device cuda --port 18080 --max-batch 8 --max-model-len 128 > "$OUT/serve.log" 2>&1 &
      server=$!
      python3 - "$G" "$T" <<'PY' || status=1
import concurrent.futures, json, subprocess, sys, time, urllib.request
gptq, model = sys.argv[1].split(), sys.argv[2]
base = "http://127.0.0.1:18080"
for _ in range(120):
    try:
        urllib.request.urlopen(base + "/health", timeout=1); break
    except Exception:
        time.sleep(0.5)
prompts = ["the cat sat on", "hello there", "how are you", "one two three four five", "a", "the dog", "once upon a time", "we"]
def complete(prompt):
    body = json.dumps({"model": "tiny-chat", "prompt": prompt, "max_tokens": 16, "temperature": 0}).encode()
    request = urllib.request.Request(base + "/v1/completions", body, {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(request, timeout=60))["choices"][0]["text"]
with concurrent.futures.ThreadPoolExecutor(8) as pool:
    served = list(pool.map(complete, prompts))
failed = 0
for prompt, text in zip(prompts, served):
    # stdout: the completion and a newline.
    alone = subprocess.run(gptq + ["generate", "--model", model, "--prompt", prompt, "--max-new-tokens", "16", "--temperature", "0",
                                   "--device", "cuda"], capture_output=True, text=True).stdout
    same = alone[:-1] == text
    failed += not same
    print(f"{'PASS' if same else 'FAIL'}  {prompt!r}: served {text!r}, generate {alone!r}")
metrics = urllib.request.urlopen(base + "/metrics").read().decode()
gauges = {l.split()[0]: float(l.split()[1]) for l in metrics.splitlines() if l.startswith(("gptq_kv_blocks_in_use", "gptq_kv_slots_in_use"))}
print("gauges after the requests:", gauges)
sys.exit(1 if failed or any(gauges.values()) else 0)
PY
      kill $server
    } > "$OUT/serve.out" 2>&1 ;;
    smol) {
      S=/tmp/smol; rm -rf $S; mkdir -p $S
      cat .gpu-smol?/gguf.part > $S/model.gguf || status=1  # the parts in order (scripts/gpu-smol.sh)
      sha=$(sed -n 's/^gguf_sha256="\(.*\)"$/\1/p' scripts/fetch-model.sh)
      echo "$sha  $S/model.gguf" | sha256sum --check - || status=1
      timeout 120 $G convert-gguf $S/model.gguf $S/float > "$OUT/smol-convert.log" 2>&1 || status=1
      data=Tests/Fixtures/data
      start=$SECONDS
      timeout 300 $G quantize --model $S/float --out $S/q4 --bits 4 --group-size 128 --calib $data/wikitext2-valid-tokenized.txt \
        --nsamples 128 --seqlen 512 --seed 0 --device cuda > "$OUT/smol-quantize.log" 2>&1 || status=1
      echo "quantize --device cuda: $((SECONDS - start)) s wall, $(grep -E '^quantized' "$OUT/smol-quantize.log")"
      for m in float q4; do
        echo "perplexity $m (GPU, 16 windows of 2048): $(timeout 120 $G perplexity --model $S/$m --text $data/wikitext2-test.txt --windows 16 --device cuda 2>/dev/null | tail -1)"
      done
      timeout 300 $G gpu-check --model $S/q4 --text $data/wikitext2-test.txt --log "$OUT/smol-check.log" > /dev/null 2>&1 || status=1
      grep -E 'passed|^FAIL|^PASS  q4 ' "$OUT/smol-check.log"
      for dev in cpu cuda; do
        timeout 120 $G generate --model $S/q4 --chat --prompt "What is the capital of France? Answer in one sentence." \
          --max-new-tokens 48 --temperature 0 --device $dev > "$OUT/smol-chat-$dev.txt" 2>/dev/null || status=1
      done
      cmp -s "$OUT/smol-chat-cpu.txt" "$OUT/smol-chat-cuda.txt" && echo "chat: GPU identical to CPU: $(cat "$OUT/smol-chat-cuda.txt")" \
        || { echo "chat: GPU differs from CPU"; cat "$OUT"/smol-chat-*.txt; }
      for p in "128 256" "1536 512"; do
        set -- $p
        timeout 120 $G bench --device cuda --model $S/q4 --prompt-tokens $1 --decode-tokens $2 2>&1 | grep -E 'prefill|decode' | sed "s/^/after $1: /"
      done
    } > "$OUT/smol.out" 2>&1 ;;
    torch) timeout 120 python3 scripts/reference/torch_linear_bench.py > "$OUT/torch.out" 2>&1 || status=1 ;;
    exllama) (
      start=$SECONDS
      python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 \
        TORCH_EXTENSIONS_DIR=/tmp/torch-ext TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16
      echo "nvcc: $(nvcc --version 2>&1 | tail -1); ninja $(ninja --version); $(python3 -c 'import torch; print("torch", torch.__version__, torch.version.cuda)')"
      # The extension builds (or loads, on a warm machine) while swift-gptq quantizes on the CPU.
      timeout 400 python3 -c "import exllamav2, exllamav2.ext; print('exllamav2', exllamav2.__version__, 'extension ready')" > "$OUT/exllama-build.log" 2>&1 &
      build=$!
      timeout 300 python3 scripts/reference/exllamav2_interop.py --stage prepare --gptq /tmp/gptq-lib/gptq --work /tmp/exllama-interop || exit 1
      wait $build; rc=$?
      echo "extension build: rc=$rc, $((SECONDS - start)) s since the step began"
      # A build killed by its timeout leaves torch's lock file, on which the next import would wait.
      [ $rc -eq 0 ] || { tail -40 "$OUT/exllama-build.log"; rm -f /tmp/torch-ext/exllamav2_ext/lock; }
      left=$((500 - (SECONDS - start))); [ $left -lt 60 ] && left=60
      timeout $left python3 scripts/reference/exllamav2_interop.py --stage check --require-exllama --work /tmp/exllama-interop --json "$OUT/exllama.json"
    ) > "$OUT/exllama.out" 2>&1 || status=1 ;;
    gptq) {
      timeout 200 $G gpu-bench --quantize || status=1
      timeout 60 $G gpu-bench --quantize --act-order --layers 1 || status=1
      timeout 200 $G gpu-bench --quantize --pipeline || status=1
    } > "$OUT/gptq.out" 2>&1 ;;
    *) echo "unknown step '$step'"; status=1 ;;
  esac
done
echo "==== summary"
cat "$OUT/env.log"
[ -f "$OUT/check.out" ] && grep -E 'FAIL|passed|rror|emulation' "$OUT/check.out" | tail -40
for f in cli serve quantize kernels shapes model gptq torch smol exllama; do [ -f "$OUT/$f.out" ] && { echo "---- $f"; grep -vE '^quantize.*layer [0-9]' "$OUT/$f.out" | tail -60; }; done
exit $status
