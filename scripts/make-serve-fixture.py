#!/usr/bin/env python3
"""Builds a tiny servable model folder: the random llama fixture (Tests/Fixtures/arch/llama,
384 ids) with the llama3 fixture tokenizer cut down to those 384 ids and a ChatML chat
template. The server tests and scripts/serve-load.py run against it.

usage: scripts/make-serve-fixture.py DEST
"""
import json
import os
import shutil
import sys

root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
dest = sys.argv[1]
os.makedirs(dest, exist_ok=True)
model = os.path.join(root, "Tests/Fixtures/arch/llama")
for name in ("config.json", "model.safetensors"):
    shutil.copyfile(os.path.join(model, name), os.path.join(dest, name))
vocab_size = json.load(open(os.path.join(model, "config.json")))["vocab_size"]

tokenizer = json.load(open(os.path.join(root, "Tests/Fixtures/tokenizers/llama3/tokenizer.json")))
bpe = tokenizer["model"]
# Ids 0-3 are special tokens and 4-259 the byte-level alphabet, so every text still
# tokenizes; merges go only where their result keeps an id the model has.
bpe["vocab"] = {token: i for token, i in bpe["vocab"].items() if i < vocab_size}
def merged(merge):
    left, right = merge.split(" ") if isinstance(merge, str) else merge
    return left in bpe["vocab"] and right in bpe["vocab"] and left + right in bpe["vocab"]
bpe["merges"] = [m for m in bpe["merges"] if merged(m)]
tokenizer["added_tokens"] = [t for t in tokenizer["added_tokens"] if t["id"] < vocab_size]
json.dump(tokenizer, open(os.path.join(dest, "tokenizer.json"), "w"))

chatml = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
json.dump({"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "chat_template": chatml},
          open(os.path.join(dest, "tokenizer_config.json"), "w"))
print(dest)
