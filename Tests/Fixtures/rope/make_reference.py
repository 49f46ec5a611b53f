#!/usr/bin/env python3
"""RoPE inverse frequencies and angles as transformers computes them (float32 numpy
transcription of _compute_default/_linear_scaling/_llama3_parameters and LlamaRotaryEmbedding).
Writes reference.safetensors next to this script."""
import math, os
import numpy as np
from safetensors.numpy import save_file

f32 = np.float32
def default(base, dim):
    return (f32(1.0) / (f32(base) ** (np.arange(0, dim, 2, dtype=np.int64).astype(f32) / f32(dim)))).astype(f32)

def llama3(inv, factor, low, high, old):
    low_wl, high_wl = f32(old / low), f32(old / high)
    wavelen = (f32(2 * math.pi) / inv).astype(f32)
    out = np.where(wavelen > low_wl, inv / f32(factor), inv).astype(f32)
    smooth = ((f32(old) / wavelen - f32(low)) / f32(high - low)).astype(f32)
    smoothed = ((f32(1) - smooth) * out / f32(factor) + smooth * out).astype(f32)
    medium = ~(wavelen < high_wl) & ~(wavelen > low_wl)
    return np.where(medium, smoothed, out).astype(f32)

positions = np.array([0, 1, 17, 1000, 8191], dtype=np.int64)
cases = {
    "default": default(10000.0, 64),
    "linear": (default(10000.0, 64) / f32(4.0)).astype(f32),
    "llama3": llama3(default(500000.0, 128), 8.0, 1.0, 4.0, 8192),
}
tensors = {}
for name, inv in cases.items():
    angles = (positions.astype(f32)[:, None] * inv[None, :]).astype(f32)
    tensors[name + ".inv_freq"] = inv
    tensors[name + ".cos"] = np.cos(angles).astype(f32)
    tensors[name + ".sin"] = np.sin(angles).astype(f32)
tensors["positions"] = positions.astype(np.int32)
save_file(tensors, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.safetensors"))
