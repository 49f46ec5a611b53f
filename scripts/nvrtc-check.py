#!/usr/bin/env python3
"""Compiles the CUDA kernel sources kept in Sources/GPTQKit/Backends/CUDA/Kernels with
NVRTC, on a machine without a GPU, and prints NVRTC's log with ptxas's register and
spill report. Usage: scripts/nvrtc-check.py [path/to/libnvrtc.so.13] [sm_90]
(libnvrtc comes with the toolkit or the nvidia-cuda-nvrtc wheel)."""
import ctypes, glob, os, re, sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Sources/GPTQKit/Backends/CUDA/Kernels")
lib = ctypes.CDLL(sys.argv[1] if len(sys.argv) > 1 else "libnvrtc.so.13")
arch = sys.argv[2] if len(sys.argv) > 2 else "sm_90"

def raw_literal(text):
    return re.search(r'#"""\n(.*?)"""#', text, re.S).group(1)

prelude = raw_literal(open(os.path.join(root, "KernelPrelude.swift")).read())
# LinearKernels.tiledFormat, which the kernels on the tiled layout put after the prelude.
tiled_format = re.search(r'static let tiledFormat = #"""\n(.*?)"""#', open(os.path.join(root, "LinearKernels.swift")).read(), re.S).group(1)
failed = False
for path in sorted(glob.glob(os.path.join(root, "*.swift"))):
    text = open(path).read()
    if "KernelPrelude.source +" not in text:
        continue
    for fragment, literal, specific in re.findall(r'KernelPrelude\.source \+ (tiledFormat \+ )?#"""\n(.*?)"""#(, architectureSpecific: true)?', text, re.S):
        source = (prelude + (tiled_format if fragment else "") + literal).encode()
        prog = ctypes.c_void_p()
        assert lib.nvrtcCreateProgram(ctypes.byref(prog), source, b"k.cu", 0, None, None) == 0
        opts = [f"--gpu-architecture={arch}{'a' if specific else ''}".encode(), b"--std=c++17", b"-default-device", b"-lineinfo", b"--ptxas-options=-v"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        status = lib.nvrtcCompileProgram(prog, len(opts), arr)
        size = ctypes.c_size_t()
        lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        lib.nvrtcGetProgramLog(prog, log)
        print(f"== {os.path.basename(path)}: {'ok' if status == 0 else 'FAILED'}")
        print(log.value.decode(errors="replace"))
        failed |= status != 0
sys.exit(1 if failed else 0)
