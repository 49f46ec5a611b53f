"""Minimal Llama (SmolLM2) in torch, independent of swift-gptq, plus GPTQ checkpoint dequantization
(AutoGPTQ's v1 packing, unpacked here with numpy): an independent evaluator of our checkpoints.

Usage (torch: the CPU wheel, e.g. `pip install torch`; also numpy, safetensors, tokenizers):
    python3 scripts/reference/torch_llama.py FOLDER [fp16]
prints the perplexity of FOLDER (float or GPTQ) on Tests/Fixtures/data/wikitext2-test.txt with the
GPTQ protocol (2048-token windows, the first 16). The tokenizer is SMOLLM2's (environment
variable, default ~/.cache/swift-gptq/SmolLM2-135M-Instruct)."""
import json, math, os, sys
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.numpy import load_file

MODEL = os.path.expanduser(os.environ.get("SMOLLM2", "~/.cache/swift-gptq/SmolLM2-135M-Instruct"))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class RMSNorm(nn.Module):
    def __init__(self, w, eps):
        super().__init__()
        self.weight = nn.Parameter(w, requires_grad=False)
        self.eps = eps

    def forward(self, x):
        dt = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dt)  # as HF LlamaRMSNorm


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


class Attn(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, d = cfg["hidden_size"], cfg["head_dim"]
        self.nh, self.nkv, self.hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], d
        self.q_proj = nn.Linear(h, self.nh * d, bias=False)
        self.k_proj = nn.Linear(h, self.nkv * d, bias=False)
        self.v_proj = nn.Linear(h, self.nkv * d, bias=False)
        self.o_proj = nn.Linear(self.nh * d, h, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.nh, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.nkv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.nh // self.nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        o = o.transpose(1, 2).reshape(B, T, self.nh * self.hd)
        return self.o_proj(o)


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        h, i = cfg["hidden_size"], cfg["intermediate_size"]
        self.gate_proj = nn.Linear(h, i, bias=False)
        self.up_proj = nn.Linear(h, i, bias=False)
        self.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Layer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self_attn = Attn(cfg)
        self.mlp = MLP(cfg)
        self.input_layernorm = None
        self.post_attention_layernorm = None

    def forward(self, x, cos, sin):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin)
        x = x + self.mlp(self.post_attention_layernorm(x))
        return x


class Llama(nn.Module):
    def __init__(self, cfg, tensors, dtype):
        super().__init__()
        self.cfg = cfg
        eps = cfg["rms_norm_eps"]
        t = lambda n: torch.from_numpy(np.ascontiguousarray(tensors[n])).to(dtype)
        self.embed = t("model.embed_tokens.weight")
        self.layers = nn.ModuleList()
        for l in range(cfg["num_hidden_layers"]):
            L = Layer(cfg)
            p = f"model.layers.{l}."
            L.input_layernorm = RMSNorm(t(p + "input_layernorm.weight"), eps)
            L.post_attention_layernorm = RMSNorm(t(p + "post_attention_layernorm.weight"), eps)
            for mod, names in (("self_attn", ["q_proj", "k_proj", "v_proj", "o_proj"]), ("mlp", ["gate_proj", "up_proj", "down_proj"])):
                for n in names:
                    getattr(getattr(L, mod), n).weight = nn.Parameter(t(p + f"{mod}.{n}.weight"), requires_grad=False)
            self.layers.append(L)
        self.norm = RMSNorm(t("model.norm.weight"), eps)
        self.lm_head = t("lm_head.weight") if "lm_head.weight" in tensors else self.embed
        self.dtype = dtype
        hd = cfg["head_dim"]
        self.inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))

    def rope(self, T):
        pos = torch.arange(T).float()
        freqs = torch.outer(pos, self.inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        return emb.cos().to(self.dtype), emb.sin().to(self.dtype)

    def logits(self, ids):
        x = self.embed[ids].unsqueeze(0)
        cos, sin = self.rope(ids.shape[0])
        for L in self.layers:
            x = L(x, cos, sin)
        x = self.norm(x)
        return (x @ self.lm_head.t()).float()[0]


def unpack_bits_rows(packed, bits, n):
    """packed: uint32 [w, C] words along axis 0, values packed LSB-first as one bit stream
    (AutoGPTQ v1). Returns int [n, C]."""
    p = packed.astype("<u4")
    W, C = p.shape
    # bit stream along axis 0: byte view little-endian then bits little-endian
    by = p.T.copy().view(np.uint8).reshape(C, W * 4)  # per column, words consecutive
    b = np.unpackbits(by, axis=1, bitorder="little")  # [C, W*32]
    b = b[:, : n * bits].reshape(C, n, bits).astype(np.int64)
    vals = (b * (1 << np.arange(bits))).sum(-1)  # [C, n]
    return vals.T


def dequantize(tensors, qcfg):
    bits = qcfg["bits"]
    out = dict(tensors)
    for name in [k[: -len(".qweight")] for k in tensors if k.endswith(".qweight")]:
        qw = tensors[name + ".qweight"].view(np.uint32)
        qz = tensors[name + ".qzeros"].view(np.uint32)
        sc = tensors[name + ".scales"].astype(np.float32)  # [groups, out]
        g = tensors[name + ".g_idx"].astype(np.int64)  # [in]
        infeat = qw.shape[0] * 32 // bits
        outfeat = qw.shape[1]
        assert infeat == g.shape[0], (name, infeat, g.shape)
        q = unpack_bits_rows(qw, bits, infeat)  # [in, out]
        z = unpack_bits_rows(qz.T.copy(), bits, outfeat).T  # qz [groups, out*bits/32] -> [groups, out]
        if qcfg.get("checkpoint_format", "gptq") == "gptq":
            z = z + 1
        W = sc[g] * (q - z[g])  # [in, out]
        out[name + ".weight"] = W.T.astype(np.float32)
        for s in (".qweight", ".qzeros", ".scales", ".g_idx"):
            del out[name + s]
    return out


def load(folder, dtype=torch.float32):
    cfg = json.load(open(os.path.join(folder, "config.json")))
    tensors = load_file(os.path.join(folder, "model.safetensors"))
    qc = os.path.join(folder, "quantize_config.json")
    if os.path.exists(qc):
        tensors = dequantize(tensors, json.load(open(qc)))
    return Llama(cfg, tensors, dtype)


def eval_ids():
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(MODEL, "tokenizer.json"))
    text = open(os.path.join(REPO, "Tests/Fixtures/data/wikitext2-test.txt")).read()
    ids = tok.encode(text, add_special_tokens=False).ids
    return ids


@torch.no_grad()
def perplexity(model, ids, seqlen=2048, windows=16, log=None):
    nlls = []
    for w in range(windows):
        x = torch.tensor(ids[w * seqlen:(w + 1) * seqlen])
        lg = model.logits(x)
        nll = F.cross_entropy(lg[:-1].double(), x[1:]).item()
        nlls.append(nll)
        if log:
            print(f"window {w} nll {nll:.5f} ppl so far {math.exp(sum(nlls)/len(nlls)):.4f}", file=log, flush=True)
    return math.exp(sum(nlls) / len(nlls)), nlls


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("THREADS", "2")))
    folder = sys.argv[1]
    dtype = torch.float16 if len(sys.argv) > 2 and sys.argv[2] == "fp16" else torch.float32
    ids = eval_ids()
    print("tokens", len(ids), ids[:10], flush=True)
    m = load(folder, dtype)
    ppl, nlls = perplexity(m, ids, log=sys.stdout)
    print("PPL", folder, dtype, ppl)
