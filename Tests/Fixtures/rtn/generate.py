# Round-to-nearest reference for RoundToNearestTests: AutoGPTQ's Quantizer (quantizer.py,
# weight=True, per channel) applied per group of columns, in float32 with numpy.
# Regenerate with: python3 generate.py (from this folder).
import numpy as np
from safetensors.numpy import load_file, save_file

def find_params(x, bits, sym):
    maxq = np.float32(2**bits - 1)
    xmin = np.minimum(x.min(1), 0).astype(np.float32)
    xmax = np.maximum(x.max(1), 0).astype(np.float32)
    if sym:
        xmax = np.maximum(np.abs(xmin), xmax)
        neg = xmin < 0
        xmin[neg] = -xmax[neg]
    both = (xmin == 0) & (xmax == 0)
    xmin[both] = -1
    xmax[both] = 1
    scale = ((xmax - xmin) / maxq).astype(np.float32)
    zero = np.full_like(scale, (maxq + 1) / 2) if sym else np.round(-xmin / scale).astype(np.float32)
    return scale, zero, maxq

# A group size that does not divide the columns leaves a partial last group (48, 48, 48, 16).
def rtn(w, bits, group, sym):
    q = np.zeros_like(w)
    group = w.shape[1] if group == -1 else group
    scales, zeros = [], []
    for g in range(0, w.shape[1], group):
        x = w[:, g:g + group]
        scale, zero, maxq = find_params(x, bits, sym)
        qi = np.clip(np.round(x / scale[:, None]) + zero[:, None], 0, maxq)
        q[:, g:g + group] = scale[:, None] * (qi - zero[:, None])
        scales.append(scale); zeros.append(zero)
    return q, np.stack(scales, 1), np.stack(zeros, 1)

w = load_file("../arch/llama/model.safetensors")["model.layers.0.mlp.down_proj.weight"].astype(np.float32)  # [64, 160]
out = {"W": w}
for bits, group, sym in [(4, 32, True), (3, -1, False), (2, 32, False), (8, 160, True), (4, 48, False)]:
    key = f"b{bits}_g{group}_sym{int(sym)}"
    q, s, z = rtn(w, bits, group, sym)
    out[key + ".Q"], out[key + ".scales"], out[key + ".zeros"] = q, s, z
save_file(out, "rtn_reference.safetensors")
