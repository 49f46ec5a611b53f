#!/usr/bin/env python3
"""Loads GPTQ checkpoints that swift-gptq writes in ExLlamaV2 (0.3.2, on a CUDA GPU) and compares
ExLlamaV2's logits with swift-gptq's float32 logits (`gptq logits`) on the same token ids.

  scripts/reference/exllamav2_interop.py --gptq BIN --work DIR [--stage all|prepare|check]
                                         [--require-exllama] [--json FILE]

prepare (no GPU needed): a random Llama made with transformers (torch seed 0; hidden 1024, 4 layers,
8 heads of 128, 2 key/value heads, intermediate 2816, vocab 8192; transformers' init, RMSNorm
weights drawn in [0.9, 1.1], embeddings N(0, 1) as torch.nn.Embedding draws them), saved in
float16 to DIR/float; a copy whose first 32 rows of every layer linear are made non-negative
(DIR/float-zero0: asymmetric GPTQ then gives zero points of 0); the same model with transformers'
own embedding init, N(0, 0.02) (DIR/float-hfinit); `gptq quantize` (4-bit, group 128, 16 x 256
calibration ids, seed 0) of the variants below; `gptq logits` of each on 2 x 64 fixed token ids
(DIR/logits-NAME.safetensors, outside the checkpoint: ExLlamaV2 reads every *.safetensors of a
folder).

Why embeddings N(0, 1): ExLlamaV2 accumulates its products in float16 (hfma2 in its GPTQ GEMM
kernel; cublasHgemm on reconstructed float16 weights past 32 rows). With transformers' N(0, 0.02)
each block's output dominates the residual stream, and an emulation on the CPU (torch float16,
the quantized linears summed with a float16 accumulator: in chunks of 16 to 128 products for
cublasHgemm, hfma2 chains of 4 and 16 then per-128-row atomic adds for the kernel) puts the logits
2.3e-3 to 4.0e-3 (prefill) and 2.7e-3 (kernel) from swift-gptq's, the size of the bound, whatever
the depth (1 layer: 3.7e-3); torch float16 alone is 1.5e-3 off. With N(0, 1) the residual stream
carries the blocks' updates, as in trained models: emulated 1.0e-3 to 1.5e-3 (prefill) and
1.2e-3 (kernel), torch float16 0.8e-3. sym-hfinit keeps transformers' init to measure the first
case; it fails the run only if its weights are misread.

check, per checkpoint:
- ref fp32: transformers' LlamaForCausalLM in float32 with every quantized linear replaced by the
  weight dequantized in numpy as docs/FORMAT.md says (v1 words + 0x11111111 whole-word, v2 as is).
  Must match swift-gptq within 1e-4: it proves the reference reading is swift-gptq's.
- ref fp16: the same model in float16 on the GPU: what float16 arithmetic alone costs.
- ExLlamaV2: ExLlamaV2Config / ExLlamaV2 / load / ExLlamaV2Cache. Weights: every quantized linear's
  weight as ExLlamaV2 reconstructs it (`get_weight_tensor_dq`, its reading of qweight, qzeros,
  scales, g_idx and checkpoint_format) against the reference, in units of the group's scale (0 is
  bit-exact; a misread zero point is off by whole scales), and the zero points ExLlamaV2's
  reading predicts (v2: word - 0x11111111, then each 4-bit field + 1, as ext.make_q_matrix and
  the kernels do) against the true ones. Logits: prefill (both sequences at once, 128 rows:
  reconstruct + cuBLAS path) and decode (one token at a time through the cache, 2 rows: the
  quantized GEMM kernel path), relative L2 error ||exl - swift|| / ||swift|| against BOUND
  (3e-3, float16 against float32, as gpu-check uses).

Variants (4-bit, group 128): sym (v1 `gptq`, the default for sym), asym (`gptq_v2`, the default),
asym --format gptq (v1), sym --desc-act, asym --desc-act (v2), and two informational ones:
asym-zero0 (v2 with zero points of 0, which ExLlamaV2's v2 -> v1 subtraction borrows through:
expected to be misread exactly where the prediction says; it never fails the run) and sym-hfinit.

Exit status 1 when the reference disagrees with swift-gptq, a checkpoint does not load, its
weights are misread (other than asym-zero0's predicted ones) or a logits error passes BOUND.
Run by scripts/gpu-run.sh's exllama step (GPU machine, wheels from .whl/).
"""
import argparse, json, os, shutil, subprocess, sys, time, traceback
import numpy as np

BOUND = 3e-3
REF_BOUND = 1e-4
SHAPE = dict(vocab_size=8192, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
             num_attention_heads=8, num_key_value_heads=2, head_dim=128)
IDS_SHAPE = (2, 64)
ZERO0_ROWS = 32
EMBEDDING_STD = 1.0
# name, float model, quantize flags, expected checkpoint_format, informational
VARIANTS = [
    ("sym", "float", [], "gptq", False),
    ("asym", "float", ["--asym"], "gptq_v2", False),
    ("asym-v1", "float", ["--asym", "--format", "gptq"], "gptq", False),
    ("sym-descact", "float", ["--desc-act"], "gptq", False),
    ("asym-descact", "float", ["--asym", "--desc-act"], "gptq_v2", False),
    ("asym-zero0", "float-zero0", ["--asym"], "gptq_v2", True),
    ("sym-hfinit", "float-hfinit", [], "gptq", True),
]


def log(*args):
    print(*args, flush=True)


# ---------------------------------------------------------------- prepare

def make_float_model(folder, embedding_std):
    """transformers' random Llama (its init: weights N(0, 0.02)), RMSNorm weights drawn in [0.9, 1.1]
    and, unless `embedding_std` is None, embeddings N(0, embedding_std)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    config = LlamaConfig(**SHAPE, max_position_embeddings=2048, rms_norm_eps=1e-5, tie_word_embeddings=False,
                         bos_token_id=1, eos_token_id=2, attention_bias=False, mlp_bias=False)
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:  # not all ones: a misplaced norm weight shows
                p.copy_(1 + 0.2 * (torch.rand_like(p) - 0.5))
        if embedding_std is not None:
            model.model.embed_tokens.weight.normal_(0, embedding_std)
    model.to(torch.float16).save_pretrained(folder)
    path = os.path.join(folder, "config.json")
    config = json.load(open(path))
    # transformers 5 writes rope_parameters; ExLlamaV2 0.3.2 reads rope_theta (its default is 10000 too).
    theta = (config.get("rope_parameters") or {}).get("rope_theta", config.get("rope_theta", 10000.0))
    config["rope_theta"] = theta
    json.dump(config, open(path, "w"), indent=2)
    files = sorted(f for f in os.listdir(folder) if f.endswith(".safetensors"))
    assert files == ["model.safetensors"], f"unexpected weight files {files}"


def make_zero0_model(source, folder):
    """First ZERO0_ROWS output rows of every layer linear made non-negative: GPTQ's first group of
    those rows then has min >= 0, so its asymmetric zero point is 0."""
    from safetensors.numpy import load_file, save_file
    shutil.copytree(source, folder)
    path = os.path.join(folder, "model.safetensors")
    tensors = load_file(path)
    for name, t in tensors.items():
        if ".layers." in name and name.endswith("_proj.weight"):
            t = t.copy()
            t[:ZERO0_ROWS] = np.abs(t[:ZERO0_ROWS])
            tensors[name] = t
    save_file(tensors, path, metadata={"format": "pt"})


def run(cmd, log_path):
    start = time.time()
    with open(log_path, "w") as f:
        result = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        sys.stdout.write(open(log_path).read()[-3000:])
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}")
    return time.time() - start


def prepare(args):
    from safetensors.numpy import save_file
    work = args.work
    os.makedirs(work, exist_ok=True)
    float_dir, zero0_dir, hf_dir = (os.path.join(work, d) for d in ("float", "float-zero0", "float-hfinit"))
    for d in (float_dir, zero0_dir, hf_dir):
        shutil.rmtree(d, ignore_errors=True)
    make_float_model(float_dir, EMBEDDING_STD)
    make_zero0_model(float_dir, zero0_dir)
    make_float_model(hf_dir, None)
    rng = np.random.default_rng(0)
    calib = os.path.join(work, "calib.json")
    json.dump([int(i) for i in rng.integers(3, SHAPE["vocab_size"], size=8192)], open(calib, "w"))
    ids = np.random.default_rng(1).integers(3, SHAPE["vocab_size"], size=IDS_SHAPE).astype(np.int32)
    ids_path = os.path.join(work, "ids.safetensors")
    save_file({"input_ids": ids}, ids_path)
    manifest = {"ids": ids_path, "variants": []}
    for name, source, flags, expected, informational in VARIANTS:
        out = os.path.join(work, f"q-{name}")
        cmd = [args.gptq, "quantize", "--model", os.path.join(work, source), "--out", out, "--calib", calib,
               "--nsamples", "16", "--seqlen", "256", "--seed", "0", "--bits", "4", "--group-size", "128",
               "--device", args.quantize_device, "--overwrite"] + flags
        seconds = run(cmd, os.path.join(work, f"quantize-{name}.log"))
        fmt = json.load(open(os.path.join(out, "config.json")))["quantization_config"].get("checkpoint_format")
        assert fmt == expected, f"{name}: checkpoint_format {fmt}, expected {expected}"
        logits = os.path.join(work, f"logits-{name}.safetensors")
        run([args.gptq, "logits", "--model", out, "--input", ids_path, "--out", logits], os.path.join(work, f"logits-{name}.log"))
        log(f"prepared {name:13s} {fmt:8s} quantize {seconds:5.1f} s  ({' '.join(flags) or 'defaults'})")
        manifest["variants"].append(dict(name=name, folder=out, format=fmt, flags=flags, logits=logits,
                                         informational=informational, source=os.path.join(work, source)))
    json.dump(manifest, open(os.path.join(work, "manifest.json"), "w"), indent=1)


# ---------------------------------------------------------------- the reference reading (docs/FORMAT.md)

def unpack4(words, axis):
    """int32 words -> 4-bit fields, 8 per word, little end first, along `axis` (0: rows, 1: columns)."""
    w = words.astype(np.uint32)
    fields = np.stack([(w >> (4 * k)) & 0xF for k in range(8)], axis=axis + 1)
    shape = list(words.shape)
    shape[axis] *= 8
    return fields.reshape(shape).astype(np.int64)


def read_checkpoint(folder):
    from safetensors.numpy import load_file
    tensors = {}
    for f in sorted(os.listdir(folder)):
        if f.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(folder, f)))
    settings = json.load(open(os.path.join(folder, "config.json")))["quantization_config"]
    return tensors, settings


def dequantize(tensors, prefix, fmt):
    """(weight [out, in] float32, zero points [groups, out], scales, g_idx, ExLlamaV2's predicted zeros)."""
    qweight, qzeros = tensors[prefix + ".qweight"], tensors[prefix + ".qzeros"]
    scales = tensors[prefix + ".scales"].astype(np.float32)
    q = unpack4(qweight, 0)                                  # [in, out]
    words = qzeros.astype(np.uint32)
    v2 = words if fmt == "gptq_v2" else (words.astype(np.uint64) + 0x11111111).astype(np.uint32)
    zeros = unpack4(v2.view(np.int32), 1)                    # [groups, out]
    # ExLlamaV2: qzeros -= 0x11111111 (int32, whole word) for gptq_v2, then each field + 1.
    exl_words = (words.astype(np.int64) - (0x11111111 if fmt == "gptq_v2" else 0)) & 0xFFFFFFFF
    exl_zeros = unpack4(exl_words.astype(np.uint32).view(np.int32), 1) + 1
    in_features = q.shape[0]
    g_idx = tensors.get(prefix + ".g_idx")
    if g_idx is None:
        g_idx = np.arange(in_features) // (in_features // scales.shape[0])
    g_idx = g_idx.astype(np.int64)
    w = scales[g_idx] * (q - zeros[g_idx]).astype(np.float32)   # [in, out]
    return w.T.copy(), zeros, scales, g_idx, exl_zeros


def reference_weights(folder):
    tensors, settings = read_checkpoint(folder)
    fmt = settings.get("checkpoint_format", "gptq")
    assert settings["bits"] == 4, "the reference reads 4-bit checkpoints"
    layers = {}
    for key in tensors:
        if key.endswith(".qweight"):
            prefix = key[: -len(".qweight")]
            layers[prefix] = dequantize(tensors, prefix, fmt)
    return layers, fmt


def relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if not np.all(np.isfinite(a)):
        return float("nan")
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def top1(a, b):
    return float((np.asarray(a).argmax(-1) == np.asarray(b).argmax(-1)).mean())


def reference_logits(source, layers, ids, dtype, device):
    """transformers' Llama on the float folder's config and unquantized tensors, each quantized
    linear's weight set to the reference dequantization."""
    import torch
    from transformers import LlamaForCausalLM
    model = LlamaForCausalLM.from_pretrained(source, dtype=torch.float32)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for prefix, (w, *_rest) in layers.items():
            target = modules[prefix].weight
            assert tuple(target.shape) == w.shape, f"{prefix}: {tuple(target.shape)} vs {w.shape}"
            target.copy_(torch.from_numpy(w))
    model = model.to(device=device, dtype=dtype).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(ids.astype(np.int64)).to(device)).logits
    result = out.float().cpu().numpy()
    del model
    return result


# ---------------------------------------------------------------- ExLlamaV2

def exllama_run(folder, layers, ids):
    import torch
    from exllamav2 import ExLlamaV2, ExLlamaV2Cache, ExLlamaV2Config
    config = ExLlamaV2Config(folder)
    # Without flash-attn or xformers (the GPU machine has neither) ExLlamaV2 0.3.2 prefills
    # through torch SDPA, whose causal branch (attn.py, _attn_torch) passes the block-diagonal
    # mask, None without cu_seqlens: every query then sees every key. Measured on the H100:
    # prefill logits 0.22 from swift-gptq's with bit-exact weights, decode (one query) 2.5e-3.
    # Its matmul attention applies the causal mask.
    config.no_sdpa = True
    config.max_batch_size = ids.shape[0]
    model = ExLlamaV2(config)
    model.load()
    info = {"checkpoint_offset_qzeros": bool(config.checkpoint_offset_qzeros)}
    try:
        # Weights as ExLlamaV2 reads them, in units of each group's scale.
        modules = model.modules_dict                                          # key -> module, submodules included
        worst, wrong_zero_cols, checked = 0.0, 0, 0
        for prefix, (w, zeros, scales, g_idx, exl_zeros) in layers.items():
            module = modules.get(prefix)
            if module is None:
                raise RuntimeError(f"ExLlamaV2 has no module {prefix} (modules: {sorted(modules)[:8]}...)")
            got = module.get_weight_tensor_dq().float().cpu().numpy()          # [in, out(+padding)]
            got = got[:, : w.shape[0]].T                                       # [out, in]
            ref16 = w.astype(np.float16).astype(np.float32)
            scale = np.abs(scales[g_idx].T)                                    # [out, in]
            off = np.abs(got - ref16) / np.maximum(scale, 1e-30)
            worst = max(worst, float(off.max()))
            # (group, out) pairs where some weight is off by a quarter scale or more: misread zero points.
            bad = off >= 0.25
            groups = np.zeros(zeros.shape, bool)
            for g in range(zeros.shape[0]):
                groups[g] = bad[:, g_idx == g].any(axis=1)
            wrong_zero_cols += int(groups.sum())
            checked += 1
        info.update(weights_max_off_in_scales=worst, misread_groups=wrong_zero_cols, linears=checked)
        ids_t = torch.from_numpy(ids.astype(np.int64))
        cache = ExLlamaV2Cache(model, batch_size=ids.shape[0], max_seq_len=ids.shape[1])
        prefill = model.forward(ids_t, cache).float().cpu().numpy()
        cache.current_seq_len = 0
        steps = [model.forward(ids_t[:, t : t + 1].contiguous(), cache).float().cpu().numpy() for t in range(ids.shape[1])]
        decode = np.concatenate(steps, axis=1)
        vocab = SHAPE["vocab_size"]
        info.update(prefill=prefill[..., :vocab], decode=decode[..., :vocab])
        del cache
    finally:
        model.unload()
        del model
        torch.cuda.empty_cache()
    return info


def check(args):
    import torch
    from safetensors.numpy import load_file
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()
    torch.manual_seed(0)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    manifest = json.load(open(os.path.join(args.work, "manifest.json")))
    ids = load_file(manifest["ids"])["input_ids"]
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    exllama, why = None, None
    if cuda:
        try:
            start = time.time()
            import exllamav2
            from exllamav2 import ext  # noqa: F401 (builds or loads the extension)
            exllama = exllamav2.__version__
            log(f"ExLlamaV2 {exllama} (extension ready in {time.time() - start:.1f} s), torch {torch.__version__}, "
                f"{torch.cuda.get_device_name(0)}")
        except Exception as error:
            why = f"import failed: {type(error).__name__}: {str(error)[-2000:]}"
    else:
        why = "no CUDA device: ExLlamaV2 not run"
    if why:
        log(f"ExLlamaV2: {why}")
    failures, results = [], []
    for v in manifest["variants"]:
        name, fmt = v["name"], v["format"]
        ours = load_file(v["logits"])["logits"]
        layers, _ = reference_weights(v["folder"])
        zero0 = sum(int((z == 0).sum()) for _, z, *_ in layers.values())
        predicted = sum(int((e != z).sum()) for _, z, _, _, e in layers.values())
        r = dict(name=name, format=fmt, flags=v["flags"], informational=v["informational"],
                 zero_points_of_0=zero0, predicted_misread=predicted)
        r["ref_fp32"] = relative(reference_logits(v["source"], layers, ids, torch.float32, device), ours)
        if r["ref_fp32"] > REF_BOUND:
            failures.append(f"{name}: reference dequantization {r['ref_fp32']:.2e} from swift-gptq (> {REF_BOUND})")
        r["ref_fp16"] = relative(reference_logits(v["source"], layers, ids, torch.float16, device), ours) if cuda else None
        line = (f"{name:13s} {fmt:8s} zeros of 0: {zero0:4d}  ref fp32 {r['ref_fp32']:.1e}"
                + (f"  ref fp16 {r['ref_fp16']:.2e}" if r["ref_fp16"] is not None else ""))
        if exllama is None:
            r["exllama"] = why
            if args.require_exllama:
                failures.append(f"{name}: ExLlamaV2 {why}")
            log(f"{line}  ExLlamaV2: not run")
            results.append(r)
            continue
        try:
            info = exllama_run(v["folder"], layers, ids)
        except Exception as error:
            r["exllama"] = f"refused: {type(error).__name__}: {str(error)[:500]}"
            traceback.print_exc()
            log(f"{line}  ExLlamaV2: {r['exllama']}  FAIL")
            failures.append(f"{name}: ExLlamaV2 did not load it")
            results.append(r)
            continue
        prefill, decode = info.pop("prefill"), info.pop("decode")
        r.update(info, exllama="loaded", prefill=relative(prefill, ours), decode=relative(decode, ours),
                 top1_prefill=top1(prefill, ours), top1_decode=top1(decode, ours))
        weights_ok = r["misread_groups"] == 0 and r["weights_max_off_in_scales"] < 0.05
        logits_ok = r["prefill"] <= BOUND and r["decode"] <= BOUND
        if v["informational"] and predicted > 0:
            held = r["misread_groups"] == predicted
            verdict = f"INFO (prediction {'held' if held else 'did not hold'}: {predicted} zero points misread predicted)"
        elif v["informational"]:
            verdict = (f"INFO (weights {'bit-exact' if weights_ok else 'MISREAD'}; logits {'within' if logits_ok else 'past'} "
                       f"the bound with transformers' embedding init)")
            if not weights_ok:
                failures.append(f"{name}: weights misread")
        else:
            verdict = "PASS" if weights_ok and logits_ok and predicted == 0 else "FAIL"
            if verdict == "FAIL":
                failures.append(f"{name}: weights {'ok' if weights_ok else 'misread'}, prefill {r['prefill']:.2e}, decode {r['decode']:.2e}")
        r["verdict"] = verdict
        log(f"{line}  ExLlamaV2: loaded (offset_qzeros {info['checkpoint_offset_qzeros']}), weights max |diff| "
            f"{r['weights_max_off_in_scales']:.2g} scale, {r['misread_groups']} (group,row) misread; "
            f"prefill {r['prefill']:.2e} decode {r['decode']:.2e} top-1 {r['top1_prefill']:.0%}/{r['top1_decode']:.0%}  "
            f"{verdict} (bound {BOUND:g})")
        results.append(r)
    if args.json:
        json.dump(dict(exllamav2=exllama, torch=torch.__version__, bound=BOUND, shape=SHAPE, ids=list(IDS_SHAPE),
                       device=torch.cuda.get_device_name(0) if cuda else "cpu", results=results, failures=failures),
                  open(args.json, "w"), indent=1)
    for f in failures:
        log("FAIL " + f)
    log(f"exllamav2_interop: {len(results) - len(failures)} passed, {len(failures)} failed" if failures
        else f"exllamav2_interop: {len(results)} checkpoints, no failure")
    return 1 if failures else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gptq", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", ".build", "release", "gptq"))
    parser.add_argument("--work", default="/tmp/exllamav2-interop")
    parser.add_argument("--stage", choices=["all", "prepare", "check"], default="all")
    parser.add_argument("--quantize-device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--require-exllama", action="store_true", help="fail when ExLlamaV2 cannot run (no CUDA, import error)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.stage in ("all", "prepare"):
        prepare(args)
    if args.stage in ("all", "check"):
        sys.exit(check(args))


if __name__ == "__main__":
    main()
