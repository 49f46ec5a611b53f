# Expected outputs of CPython's random module for PythonRandomTests.
# Seeds and getrandbits values are decimal strings: JSON numbers are doubles.
# Regenerate with: python3 generate.py > expected.json
import json, random, sys

cases = []
for seed in [0, 1, 42, -7, 2**32 + 5, 12345678901234567]:
    r = random.Random(seed)
    bits = {k: [str(r.getrandbits(k)) for _ in range(3)] for k in (1, 7, 31, 32, 33, 63, 64)}
    # GPTQ's datautils: random.seed(seed); i = random.randint(0, ntokens - seqlen - 1) per sample.
    r = random.Random(seed)
    windows = [r.randint(0, 304986 - 512 - 1) for _ in range(128)]
    r = random.Random(seed)
    small = [r.randint(3, 5) for _ in range(20)] + [r.randint(0, 0) for _ in range(2)] + [r.randint(-10, 2**40) for _ in range(5)]
    cases.append({"seed": str(seed), "getrandbits": {str(k): v for k, v in bits.items()}, "windows": windows, "small": small})
json.dump({"python": sys.version.split()[0], "window_bound": 304986 - 512 - 1, "cases": cases}, sys.stdout, indent=1)
