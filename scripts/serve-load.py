#!/usr/bin/env python3
"""Load test of `gptq serve` on loopback: many concurrent streaming clients with random
prompt and completion lengths, some of which disconnect mid-stream. Checks that nothing
crashes, every completed response is well-formed, and the KV slots all come back (the
metrics return to zero); prints throughput and time-to-first-token / inter-token latency
percentiles as measured by the clients.

usage: scripts/serve-load.py [--gptq .build/release/gptq] [--model DIR] [--requests 1000]
                             [--concurrency 64] [--max-batch 16] [--disconnect 0.1] [--prefill-chunk 128]
Without --model it serves the tiny fixture that scripts/make-serve-fixture.py builds.
Exits 1 on any failure.
"""
import argparse
import asyncio
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

import openai

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
parser = argparse.ArgumentParser()
parser.add_argument("--gptq", default=os.path.join(root, ".build/release/gptq"))
parser.add_argument("--model")
parser.add_argument("--requests", type=int, default=1000)
parser.add_argument("--concurrency", type=int, default=64)
parser.add_argument("--max-batch", type=int, default=16)
parser.add_argument("--max-model-len", type=int, default=128)
parser.add_argument("--prefill-chunk", type=int, default=128)
parser.add_argument("--max-tokens", type=int, default=48, help="completion lengths are drawn from 1...this")
parser.add_argument("--disconnect", type=float, default=0.1, help="share of clients that hang up mid-stream")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--timeout", type=float, default=600, help="seconds the whole run may take")
args = parser.parse_args()

model_dir = args.model or os.path.join(tempfile.mkdtemp(prefix="gptq-serve-load-"), "tiny-llama")
if not args.model:
    subprocess.run([sys.executable, os.path.join(root, "scripts/make-serve-fixture.py"), model_dir], check=True, stdout=subprocess.DEVNULL)
with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
base = f"http://127.0.0.1:{port}"
server = subprocess.Popen([args.gptq, "serve", "--model", model_dir, "--host", "127.0.0.1", "--port", str(port),
                           "--max-batch", str(args.max_batch), "--max-model-len", str(args.max_model_len), "--prefill-chunk", str(args.prefill_chunk),
                           "--served-model-name", "load"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def metrics():
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    return {line.split(" ")[0]: float(line.split(" ")[-1]) for line in text.splitlines() if line and not line.startswith("#")}


failures = []
ttft, itl = [], []
completed = disconnected = completion_tokens = 0


async def one(client, rng):
    global completed, disconnected, completion_tokens
    max_tokens = rng.randint(1, args.max_tokens)
    prompt = [rng.randrange(4, 384) for _ in range(rng.randint(1, args.max_model_len - max_tokens))]
    hang_up_after = rng.randint(0, max_tokens) if rng.random() < args.disconnect else None
    started = time.monotonic()
    last = None
    chunks = 0
    finish = usage = None
    stream = await client.completions.create(model="load", prompt=prompt, max_tokens=max_tokens, temperature=1.0, seed=rng.randrange(1 << 31),
                                             stream=True, stream_options={"include_usage": True})
    async for chunk in stream:
        now = time.monotonic()
        if chunk.choices:
            if last is None:
                ttft.append(now - started)
            else:
                itl.append(now - last)
            last = now
            chunks += 1
            if chunk.choices[0].finish_reason:
                finish = chunk.choices[0].finish_reason
        if chunk.usage:
            usage = chunk.usage
        if hang_up_after is not None and chunks > hang_up_after:
            await stream.close()
            disconnected += 1
            return
    if finish not in ("stop", "length") or usage is None or not (1 <= usage.completion_tokens <= max_tokens) \
            or usage.prompt_tokens != len(prompt):
        failures.append(f"malformed response: finish {finish}, usage {usage}, max_tokens {max_tokens}, prompt {len(prompt)}")
        return
    completed += 1
    completion_tokens += usage.completion_tokens


async def main():
    for _ in range(600):
        try:
            urllib.request.urlopen(base + "/health", timeout=1)
            break
        except OSError:
            if server.poll() is not None:
                sys.exit(f"the server exited with {server.returncode}")
            await asyncio.sleep(0.1)
    client = openai.AsyncOpenAI(base_url=base + "/v1", api_key="unused", max_retries=0, timeout=args.timeout)
    queue = list(range(args.requests))
    rng = random.Random(args.seed)
    seeds = [rng.randrange(1 << 62) for _ in queue]

    async def worker():
        while queue:
            i = queue.pop()
            try:
                await one(client, random.Random(seeds[i]))
            except Exception as error:  # every failure is reported, none stops the run
                failures.append(f"request {i}: {type(error).__name__}: {error}")

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(args.concurrency))), args.timeout)
    return time.monotonic() - started


try:
    elapsed = asyncio.run(main())
    # Disconnected sequences are freed at the scheduler's next step; give it a moment.
    for _ in range(100):
        values = metrics()
        if values["gptq_kv_slots_in_use"] == 0 and values["gptq_sequences_running"] == 0 and values["gptq_sequences_waiting"] == 0:
            break
        time.sleep(0.1)
    else:
        failures.append(f"KV slots still held after the run: {values}")
    if server.poll() is not None:
        failures.append(f"the server exited with {server.returncode}")
finally:
    server.terminate()
    server.wait(timeout=30)


def percentile(values, p):
    return sorted(values)[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


print(f"requests: {args.requests} from {args.concurrency} clients, max batch {args.max_batch}; completed {completed}, "
      f"disconnected {disconnected}, failed {len(failures)}")
print(f"wall {elapsed:.1f} s; {completion_tokens} completion tokens of completed requests, {completion_tokens / elapsed:.1f} tokens/s; "
      f"server counted {values.get('gptq_generation_tokens_total', 0):.0f} generated tokens, "
      f"{values.get('gptq_sequences_cancelled_total', 0):.0f} cancelled sequences")
print(f"time to first token: p50 {percentile(ttft, 50) * 1000:.1f} ms, p99 {percentile(ttft, 99) * 1000:.1f} ms")
print(f"inter-token latency: p50 {percentile(itl, 50) * 1000:.1f} ms, p99 {percentile(itl, 99) * 1000:.1f} ms")
print(f"after the run: KV slots in use {values['gptq_kv_slots_in_use']:.0f}, cached tokens {values['gptq_kv_tokens_in_use']:.0f}")
for failure in failures[:20]:
    print("FAILED:", failure)
sys.exit(1 if failures else 0)
