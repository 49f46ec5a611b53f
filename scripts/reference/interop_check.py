#!/usr/bin/env python3
"""Loads GPTQ folders that swift-gptq wrote in GPTQModel and in transformers on the CPU and prints
how far their float32 logits are from swift-gptq's (`gptq logits`) on the same token ids.

  scripts/reference/interop_check.py [--gptq .build/release/gptq] FOLDER ...
  scripts/reference/interop_check.py [--gptq ...] --families [FIXTURE ...] [-- QUANTIZE_FLAGS ...]

--families first quantizes Tests/Fixtures/arch/FIXTURE (every one without names) with
`gptq quantize --group-size 32 --calib ids.json --nsamples 8 --seqlen 48` (8 × 48 random ids,
seed 0), twice: symmetric (v1, the default) and `--asym` (v2, the default), each followed by the
QUANTIZE_FLAGS, into a temporary folder, and checks those.

For each folder: 2 sequences of 12 token ids drawn with seed 0 below the model's vocab_size;
swift-gptq's logits from `gptq logits`; GPTQModel.load and transformers'
AutoModelForCausalLM.from_pretrained(quantization_config=GPTQConfig(bits, backend=...)) computed in
float32 (scripts/reference/gptqmodel_float32.py). Prints one line per folder and loader: the
relative difference ‖theirs − ours‖ / ‖ours‖, the top-1 agreement, or the loader's refusal.
A folder without tokenizer.json (the tiny fixtures) is loaded from a copy with a word-level
tokenizer added, since GPTQModel loads one with every model.

Needs: pip install gptqmodel==7.7.0 ninja (GPTQMODEL_CPU_WORKERS=2 on small machines).
"""
import argparse, json, os, shutil, subprocess, sys, tempfile
os.environ.setdefault("GPTQMODEL_CPU_WORKERS", "2")
import numpy as np
import torch
from safetensors.numpy import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gptqmodel_float32 import add_word_level_tokenizer, gptqmodel_float32, logits, transformers_float32

torch.set_num_threads(2)


def swift_gptq_logits(binary, folder, ids, temp):
    source, out = os.path.join(temp, "ids.safetensors"), os.path.join(temp, "logits.safetensors")
    save_file({"input_ids": ids.astype(np.int32)}, source)
    subprocess.run([binary, "logits", "--model", folder, "--input", source, "--out", out], check=True)
    return load_file(out)["logits"]


ARCH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "Tests", "Fixtures", "arch")


def quantized_fixtures(binary, fixtures, flags, temp):
    """swift-gptq's symmetric and asymmetric checkpoints of each arch fixture, in `temp`."""
    for fixture in fixtures or sorted(f for f in os.listdir(ARCH) if os.path.isdir(os.path.join(ARCH, f))):
        calibration = os.path.join(temp, f"{fixture}-calibration-ids.json")
        vocab = json.load(open(os.path.join(ARCH, fixture, "config.json")))["vocab_size"]
        with open(calibration, "w") as file:
            json.dump(np.random.default_rng(0).integers(0, vocab, size=(8, 48)).tolist(), file)
        for variant, extra in [("sym", []), ("asym", ["--asym"])]:
            out = os.path.join(temp, f"{fixture}-{variant}")
            subprocess.run([binary, "quantize", "--model", os.path.join(ARCH, fixture), "--out", out, "--group-size", "32",
                            "--calib", calibration, "--nsamples", "8", "--seqlen", "48", *extra, *flags],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            yield out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gptq", default=os.path.join(os.path.dirname(__file__), "..", "..", ".build", "release", "gptq"))
    parser.add_argument("--families", action="store_true", help="quantize the arch fixtures named (all without names) and check those")
    parser.add_argument("folders", nargs="*", help="checkpoint folders, or with --families arch fixture names")
    arguments = sys.argv[1:]
    flags = arguments[arguments.index("--") + 1:] if "--" in arguments else []
    args = parser.parse_args(arguments[:arguments.index("--")] if "--" in arguments else arguments)
    if not args.families and not args.folders:
        parser.error("name the folders to check, or --families")
    import gptqmodel, transformers
    print(f"GPTQModel {gptqmodel.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as quantized:
        folders = quantized_fixtures(args.gptq, args.folders, flags, quantized) if args.families else args.folders
        check(args.gptq, folders)


def check(binary, folders):
    for folder in folders:
        config = json.load(open(os.path.join(folder, "config.json")))
        settings = config["quantization_config"]
        name = (f"{os.path.basename(os.path.normpath(folder))} ({config['model_type']}, {settings['bits']}-bit, "
                f"{'sym' if settings.get('sym', True) else 'asym'}, desc_act {settings.get('desc_act', False)}, "
                f"{settings.get('checkpoint_format', 'gptq')})")
        ids = np.random.default_rng(0).integers(0, config["vocab_size"], size=(2, 12))
        with tempfile.TemporaryDirectory() as temp:
            ours = swift_gptq_logits(binary, folder, ids, temp)
            copy = os.path.join(temp, "model")
            shutil.copytree(folder, copy)
            if not os.path.exists(os.path.join(copy, "tokenizer.json")):
                add_word_level_tokenizer(copy, config["vocab_size"])
            for loader, load in [("GPTQModel", lambda: gptqmodel_float32(copy)), ("transformers", lambda: transformers_float32(copy))]:
                try:
                    theirs = logits(load(), ids)
                except Exception as error:  # a loader's refusal is a result to report
                    print(f"{name}  {loader}: refused: {type(error).__name__}: {str(error).splitlines()[0][:200]}")
                    continue
                difference = np.linalg.norm(theirs - ours) / np.linalg.norm(ours)
                agreement = (theirs.argmax(-1) == ours.argmax(-1)).mean()
                print(f"{name}  {loader}: relative difference {difference:.2e}, top-1 agreement {agreement:.0%}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
