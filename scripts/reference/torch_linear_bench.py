#!/usr/bin/env python3
"""Float16 linear layers through PyTorch (torch.nn.functional.linear, which runs cuBLAS), the
way the issue's H100 baselines were taken, beside `gptq gpu-bench --kernels`' own fp16 cuBLAS
calls: the Llama-2-7B shapes at batch 1, 2, 4 and 8, microseconds a call and weight GB/s,
launched eagerly from Python and replayed from a CUDA graph. Weight copies rotate so that
together they are four times the L2 (every call reads its weights from device memory), as in
gpu-bench; the median of 15 samples of at least 24 calls.
Usage (on the GPU machine): scripts/reference/torch_linear_bench.py"""
import statistics
import torch

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (8192, 28672)]
BATCHES = [1, 2, 4, 8]


def microseconds_a_call(run, calls):
    times = []
    for _ in range(15):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / calls)
    return statistics.median(times)


def main():
    device = torch.cuda.get_device_properties(0)
    print(f"{device.name}, PyTorch {torch.__version__}, CUDA {torch.version.cuda}")
    for k, n in SHAPES:
        weight_bytes = k * n * 2
        copies = max(2, -(-4 * device.L2_cache_size // weight_bytes))
        weights = [torch.empty(n, k, dtype=torch.float16, device="cuda").uniform_(-0.05, 0.05) for _ in range(copies)]
        for batch in BATCHES:
            x = torch.empty(batch, k, dtype=torch.float16, device="cuda").uniform_(-1, 1)
            calls = max(copies, 24)

            def run():
                for i in range(calls):
                    torch.nn.functional.linear(x, weights[i % copies])

            run()
            torch.cuda.synchronize()
            eager = microseconds_a_call(run, calls)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run()
            replayed = microseconds_a_call(graph.replay, calls)
            print(f"{k}x{n} b{batch}: eager {eager:6.1f} us {weight_bytes / eager / 1e3:5.0f} GB/s   "
                  f"graph {replayed:6.1f} us {weight_bytes / replayed / 1e3:5.0f} GB/s")
        del weights


if __name__ == "__main__":
    main()
