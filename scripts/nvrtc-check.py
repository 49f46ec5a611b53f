#!/usr/bin/env python3
"""Compiles every CUDA kernel source in Sources/GPTQKit/Backends/CUDA/Kernels with NVRTC for
sm_90 (sm_90a for the warpgroup kernels), on a machine without a GPU: compile errors show here
instead of costing a device run. NVRTC comes from PyPI (GPTQ_NVRTC names libnvrtc.so):
  pip download --no-deps nvidia-cuda-nvrtc && unzip -o nvidia_cuda_nvrtc-*.whl -d /tmp/nvrtc
  GPTQ_NVRTC=/tmp/nvrtc/nvidia/cu13/lib/libnvrtc.so.13 scripts/nvrtc-check.py
The sources are read from the Swift files' raw string literals (prelude + formats + body), as
KernelSource assembles them; the fast GEMV template is compiled once per instantiation shape."""
import ctypes, os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources/GPTQKit/Backends/CUDA/Kernels")
lib = ctypes.CDLL(os.environ.get("GPTQ_NVRTC", "libnvrtc.so"))

def literal(text, after):
    """The raw string literal #\"\"\"...\"\"\"# that starts after `after`."""
    start = text.index('#"""', text.index(after)) + 4
    return text[start + 1:text.index('"""#', start)]  # drop the newline after the opening quotes

files = {f: open(os.path.join(root, f)).read() for f in os.listdir(root) if f.endswith(".swift")}
prelude = literal(files["KernelPrelude.swift"], "static let source")
tiled_format = literal(files["LinearKernels.swift"], "static let tiledFormat")
sources = {
    "decoder": (prelude + literal(files["DecoderKernels.swift"], "static let source"), "sm_90"),
    "gptq": (prelude + literal(files["GPTQKernels.swift"], "static let source"), "sm_90"),
    "sampling": (prelude + literal(files["SamplingKernels.swift"], "static let source"), "sm_90"),
    "linear-tiled": (prelude + tiled_format + literal(files["LinearKernels.swift"], "static let tiled ="), "sm_90"),
    "linear-generic": (prelude + literal(files["LinearKernels.swift"], "static let generic"), "sm_90"),
    "linear-common": (prelude + literal(files["LinearKernels.swift"], "static let common"), "sm_90"),
    "linear-wgmma": (prelude + tiled_format + literal(files["WarpgroupKernels.swift"], "static let warpgroup"), "sm_90a"),
    "gemv-q4": (prelude + literal(files["LinearKernels.swift"], "fastGEMVTemplate =") + "GEMV_Q4(8, 4, 2)\n", "sm_90"),
}
only = sys.argv[1:]
failed = 0
for name, (code, arch) in sources.items():
    if only and name not in only:
        continue
    program = ctypes.c_void_p()
    assert lib.nvrtcCreateProgram(ctypes.byref(program), code.encode(), (name + ".cu").encode(), 0, None, None) == 0
    options = [f"--gpu-architecture={arch}", "--std=c++17", "-default-device", "-lineinfo"]
    argv = (ctypes.c_char_p * len(options))(*[o.encode() for o in options])
    status = lib.nvrtcCompileProgram(program, len(options), argv)
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(program, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(program, log)
    text = log.value.decode(errors="replace").strip()
    print(f"{name}: {'ok' if status == 0 else 'FAILED'}" + (f"\n{text}" if text else ""))
    failed += status != 0
    lib.nvrtcDestroyProgram(ctypes.byref(program))
sys.exit(1 if failed else 0)
