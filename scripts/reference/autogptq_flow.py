"""AutoGPTQ v0.7.1's quantize() flow, layer by layer, on SmolLM2 with torch_llama.py's Llama:
the reference our GPTQ pipeline is compared with (docs/benchmarks-log.md, "GPTQ on SmolLM2 (CPU)").

gptq.py and quantizer.py are AutoGPTQ's own, unmodified: extract them from the PyPI sdist
(`pip download auto-gptq==0.7.1 --no-deps --no-binary :all:` or the tarball) into
$AUTOGPTQ_DIR/auto_gptq_quant/ (with an empty __init__.py). `--variant auto_gptq_f64` names a
copy in $AUTOGPTQ_DIR/auto_gptq_f64/ whose fasterquant factorises H in float64 (`H = H.double()`
before the Cholesky, `Hinv = H.float()` after), as swift-gptq does.
Usage: AUTOGPTQ_DIR=DIR python3 scripts/reference/autogptq_flow.py --bits 3 --group 128 --seed 0 --out OUT
(128 windows of 512 tokens from Tests/Fixtures/data/wikitext2-valid-tokenized.txt drawn as
random.seed(seed); randint(0, n - 513); sym, damp 0.01, true-sequential; float32 by default).
Writes OUT/losses.txt (every module's loss), the fake-quantized float16 model, and prints its perplexity."""
import argparse, json, math, os, random, sys, time
import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.environ["AUTOGPTQ_DIR"])
import torch_llama as llama
from tokenizers import Tokenizer

import types
_tf = types.ModuleType("transformers"); _tf.pytorch_utils = types.ModuleType("transformers.pytorch_utils")
class _NoConv1D: pass
_tf.Conv1D = _tf.pytorch_utils.Conv1D = _NoConv1D
sys.modules["transformers"] = _tf; sys.modules["transformers.pytorch_utils"] = _tf.pytorch_utils  # gptq.py only uses it for isinstance checks
torch.cuda.synchronize = lambda *a, **k: None  # CPU-only torch: fasterquant calls it for timing only
torch.cuda.empty_cache = lambda *a, **k: None


ap = argparse.ArgumentParser()
ap.add_argument("--bits", type=int, default=3)
ap.add_argument("--group", type=int, default=128)
ap.add_argument("--dtype", default="fp32")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--nsamples", type=int, default=128)
ap.add_argument("--seqlen", type=int, default=512)
ap.add_argument("--layers", type=int, default=None, help="quantize only the first N layers")
ap.add_argument("--out", required=True)
ap.add_argument("--variant", default="auto_gptq_quant", help="auto_gptq_quant (unmodified) or auto_gptq_f64 (float64 Cholesky)")
ap.add_argument("--reverse", action="store_true", help="accumulate the Hessians over the samples in reverse order (rounding noise only)")
ap.add_argument("--save-inputs", default=None, help="comma list of layer indices whose inputs to save")
args = ap.parse_args()
import importlib
GPTQ = importlib.import_module(args.variant + ".gptq").GPTQ
torch.set_num_threads(int(os.environ.get("THREADS", "2")))
os.makedirs(args.out, exist_ok=True)
dtype = torch.float16 if args.dtype == "fp16" else torch.float32

tok = Tokenizer.from_file(os.path.join(llama.MODEL, "tokenizer.json"))
ids = tok.encode(open(os.path.join(llama.REPO, "Tests/Fixtures/data/wikitext2-valid-tokenized.txt")).read(), add_special_tokens=False).ids
n = len(ids)
random.seed(args.seed)
samples = []
for _ in range(args.nsamples):
    i = random.randint(0, n - args.seqlen - 1)
    samples.append(torch.tensor(ids[i:i + args.seqlen]))
print("calibration tokens", n, "first starts", [int(s[0]) for s in samples[:3]], flush=True)

model = llama.load(llama.MODEL, dtype)
cos, sin = model.rope(args.seqlen)
inps = [model.embed[s].unsqueeze(0) for s in samples]
groups = [["self_attn.k_proj", "self_attn.v_proj", "self_attn.q_proj"], ["self_attn.o_proj"],
          ["mlp.up_proj", "mlp.gate_proj"], ["mlp.down_proj"]]
exec_order = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
save_inputs = set(int(x) for x in args.save_inputs.split(",")) if args.save_inputs else set()


class StopForward(Exception):
    pass


losses = {}
log = open(os.path.join(args.out, "losses.txt"), "w")
t0 = time.time()
nl = args.layers or len(model.layers)
with torch.no_grad():
    for li in range(nl):
        layer = model.layers[li]
        if li in save_inputs:
            torch.save(torch.cat(inps), os.path.join(args.out, f"inputs_layer{li}.pt"))
        mods = {n: layer.get_submodule(n) for g in groups for n in g}
        for names in groups:
            gptq = {}
            for name in names:
                gptq[name] = GPTQ(mods[name])
                gptq[name].quantizer.configure(args.bits, perchannel=True, sym=True, mse=False)
            last = max(names, key=exec_order.index)

            def add_batch(name):
                def tmp(_, inp, out):
                    gptq[name].add_batch(inp[0].data, out.data)
                    if name == last:
                        raise StopForward  # the rest of the layer is not needed for these Hessians
                return tmp

            handles = [mods[name].register_forward_hook(add_batch(name)) for name in names]
            for x in (inps[::-1] if args.reverse else inps):
                try:
                    layer(x, cos, sin)
                except StopForward:
                    pass
            for h in handles:
                h.remove()
            for name in names:
                # fasterquant logs the avg loss; recompute it the same way from its Losses via a wrapper:
                W0 = mods[name].weight.data.clone()
                tick = time.time()
                import logging
                rec = []

                class H(logging.Handler):
                    def emit(self, r):
                        rec.append(r.getMessage())
                lg = logging.getLogger(args.variant + ".gptq")
                lg.setLevel(logging.INFO)
                hd = H()
                lg.addHandler(hd)
                scale, zero, g_idx = gptq[name].fasterquant(percdamp=0.01, group_size=args.group, actorder=False, static_groups=False)
                lg.removeHandler(hd)
                avg = float([m for m in rec if m.startswith("avg loss")][0].split(":")[1])
                losses[f"{li}.{name}"] = avg * gptq[name].nsamples
                line = f"layer {li + 1}/{len(model.layers)} {name} loss {avg * gptq[name].nsamples:.3f} (avg {avg:.5f}) {time.time() - tick:.1f}s total {time.time() - t0:.0f}s"
                print(line, flush=True)
                print(line, file=log, flush=True)
                gptq[name].free()
        inps = [layer(x, cos, sin) for x in inps]

json.dump(losses, open(os.path.join(args.out, "losses.json"), "w"), indent=1)
# the fake-quantized model as a float16 HF folder
from safetensors.torch import save_file
sd = {"model.embed_tokens.weight": model.embed.half().contiguous(), "model.norm.weight": model.norm.weight.half().contiguous()}
for li, L in enumerate(model.layers):
    p = f"model.layers.{li}."
    sd[p + "input_layernorm.weight"] = L.input_layernorm.weight.half().contiguous()
    sd[p + "post_attention_layernorm.weight"] = L.post_attention_layernorm.weight.half().contiguous()
    for n in exec_order:
        sd[p + n + ".weight"] = L.get_submodule(n).weight.data.half().contiguous()
save_file(sd, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
for f in ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]:
    os.system(f"cp {llama.MODEL}/{f} {args.out}/")
print("quantized in", time.time() - t0, "s", flush=True)
# evaluate the fake-quantized model in float32 (weights as quantized, not re-rounded)
model32 = model.float()
model32.embed = model32.embed.float(); model32.lm_head = model32.lm_head.float(); model32.dtype = torch.float32
for L in model32.layers:
    for m in L.modules():
        if isinstance(m, llama.RMSNorm):
            m.weight.data = m.weight.data.float()
ppl, nlls = llama.perplexity(model32, llama.eval_ids(), log=sys.stdout)
print("PPL", args.out, ppl, flush=True)
json.dump({"ppl": ppl, "nlls": nlls}, open(os.path.join(args.out, "ppl.json"), "w"))
