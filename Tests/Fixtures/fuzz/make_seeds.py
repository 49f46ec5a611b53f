"""Writes the fuzz seeds derived from the tokenizer fixtures: each tokenizer.json with its
vocabulary cut to the first 300 ids (merges and added tokens that use the rest dropped), so
that the tokenizer target parses an input in microseconds, and every Split regex pattern.

    python3 Tests/Fixtures/fuzz/make_seeds.py
"""
import glob
import json
import os

here = os.path.dirname(os.path.abspath(__file__))
fixtures = os.path.dirname(here)
os.makedirs(os.path.join(here, "tokenizer"), exist_ok=True)
os.makedirs(os.path.join(here, "regex"), exist_ok=True)


def patterns(node):
    if isinstance(node, dict):
        if isinstance(node.get("Regex"), str):
            yield node["Regex"]
        for value in node.values():
            yield from patterns(value)
    elif isinstance(node, list):
        for value in node:
            yield from patterns(value)


seen = set()
for path in sorted(glob.glob(os.path.join(fixtures, "tokenizers", "*", "tokenizer.json"))):
    name = os.path.basename(os.path.dirname(path))
    with open(path, encoding="utf-8") as f:
        tokenizer = json.load(f)
    model = tokenizer["model"]
    vocab = {token: i for token, i in model["vocab"].items() if i < 300}
    def kept(merge):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        prefix = model.get("continuing_subword_prefix") or ""
        merged = left + (right[len(prefix):] if prefix and right.startswith(prefix) else right)
        return left in vocab and right in vocab and merged in vocab
    model["vocab"] = vocab
    model["merges"] = [m for m in model.get("merges", []) if kept(m)]
    if model.get("unk_token") not in (None, *vocab):
        model["unk_token"] = None
    tokenizer["added_tokens"] = [t for t in tokenizer.get("added_tokens", []) if t["id"] < 300]
    with open(os.path.join(here, "tokenizer", name + ".json"), "w", encoding="utf-8") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    for pattern in patterns(tokenizer):
        if pattern not in seen:
            seen.add(pattern)
            with open(os.path.join(here, "regex", f"{name}-{len(seen)}.txt"), "w", encoding="utf-8") as f:
                f.write(pattern)
