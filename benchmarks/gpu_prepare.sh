#!/usr/bin/env bash
# Prepare the first GPU run (issue 29): run HERE, before the device-tool call, from any directory.
#
#     bash benchmarks/gpu_prepare.sh            # fills .gpu-carry/ and .whl/, prints the device-tool call
#
# The device tool copies the working tree (tracked + untracked-not-ignored files) and up to 8 named git-ignored
# paths ("carry"), 64 MiB in all; ../shared beside the checkout does NOT travel. This script copies what
# benchmarks/gpu.sh needs from ../shared into the git-ignored folder .gpu-carry/shared (gpu.sh links it as
# ../shared there), downloads the Python 3.12 wheels the GPU image may lack into .whl/ (gpu.sh installs only the
# missing ones), adds both folders to .git/info/exclude (not .gitignore) and checks the total against 64 MiB.
#
# Environment: SHARED (default ../shared beside the checkout), PYTHON (default .venv/bin/python, for pip),
# KODAK=half|all|none (kodak24 images carried for the day-one scoring: half, the default, is the 12 odd-numbered
# images, 7.5 MB; all, 15 MB, scores the same tiles as the CPU runs of benchmarks.day_one but leaves under 5 MiB
# of the 64 MiB for the tree to grow), NO_WHEELS=1 (skip the download).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED=${SHARED:-$ROOT/../shared}
PYTHON=${PYTHON:-$ROOT/.venv/bin/python}
KODAK=${KODAK:-half}
CARRY=.gpu-carry
WHEELS=.whl
LIMIT=$((64 * 1024 * 1024))

# 1. ignore the carried folders (.git/info/exclude: local to this clone, unlike .gitignore)
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
for folder in "/$CARRY/" "/$WHEELS/"; do
    grep -qxF "$folder" "$exclude" || echo "$folder" >>"$exclude"
done

# 2. what gpu.sh reads from ../shared: every space's TAESD-family teacher decoder (speed), taesd's encoder
#    (the day-one fit against AutoencoderTiny(taesd) and the torchrun fit), kodak24 (day-one scoring)
teachers="$SHARED/models/teachers"
[ -d "$teachers" ] || { echo "no $teachers: set SHARED=/path/to/shared" >&2; exit 1; }
rm -rf "$CARRY"
mkdir -p "$CARRY/shared/models/teachers" "$CARRY/shared/data"
for f in taesd_decoder.safetensors taesd_encoder.safetensors taesdxl_decoder.safetensors taesd3_decoder.safetensors \
         taef1_decoder.safetensors taef2_decoder.pth LICENSE; do
    cp "$teachers/$f" "$CARRY/shared/models/teachers/"
done
case "$KODAK" in
    all) cp -r "$SHARED/data/kodak24" "$CARRY/shared/data/" ;;
    half) mkdir -p "$CARRY/shared/data/kodak24"
          for i in 01 03 05 07 09 11 13 15 17 19 21 23; do cp "$SHARED/data/kodak24/kodim$i.png" "$CARRY/shared/data/kodak24/"; done ;;
    none) ;;
    *) echo "KODAK must be all, half or none" >&2; exit 1 ;;
esac

# 3. wheels for the device's Python 3.12 (manylinux x86_64). The device image ('cuda', KINDS.md) holds torch 2.11,
#    numpy, pillow, safetensors, huggingface_hub 1.33, scikit-image, pytest, transformers ... but not diffusers;
#    diffusers' own needs and pytest's ride along (small) in case the image changed: gpu.sh installs a wheel only
#    when its distribution is missing there or older than this project needs. Not carried (too large for 64 MiB,
#    and in the image): numpy, pillow, scipy/scikit-image, hf_xet, torch.
if [ "${NO_WHEELS:-0}" != 1 ]; then
    rm -rf "$WHEELS"
    mkdir -p "$WHEELS"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform manylinux_2_5_x86_64 -d "$WHEELS" \
        diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2 lazy_importer==0.1.0 \
        huggingface_hub==2.4.0 httpx2==2.17.0 httpcore2==2.17.0 anyio==4.16.0 h11==0.16.0 idna==3.21 \
        truststore==0.10.5 click==8.5.1 fsspec==2026.9.0 pyyaml==6.0.4 typing_extensions==4.16.0 \
        safetensors==0.8.0 regex==2026.12.2 filelock==4.3.2 requests==2.34.2 urllib3==2.8.0 \
        certifi==2026.10.19.post1 charset_normalizer==3.5.3 tqdm==4.70.1 packaging==26.4 \
        pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0 2>&1 | grep -v "is ignored: it is neither" || true
fi

# 4. sizes: what travels is the tracked and untracked-not-ignored files plus the carried folders
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carried=$(find "$CARRY" "$WHEELS" -type f -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}')
total=$((tree + carried))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "working tree $(mib "$tree"), $CARRY $(du -sh "$CARRY" | cut -f1), $WHEELS $(du -sh "$WHEELS" 2>/dev/null | cut -f1): total $(mib "$total") of 64 MiB"
ls "$WHEELS" 2>/dev/null | wc -l | xargs echo "wheels:"
if [ "$total" -ge "$LIMIT" ]; then
    echo "OVER the device tool's 64 MiB: rerun with KODAK=none (or NO_WHEELS=1 if the image has diffusers)" >&2
    exit 1
fi

cat <<EOF

Device-tool call (first run; the script keeps itself under GPU_SH_BUDGET=465 s, under 8 minutes):
  run(carry=["$CARRY", "$WHEELS"], timeout_s=540, command="bash benchmarks/gpu.sh")
Its files come back as gpu-run.tgz (every results/*-cuda.md and logs/*.log), gpu-summary-cuda.md and gpu.log; here:
  tar xzf <files_at>/gpu-run.tgz -C benchmarks results     # -> benchmarks/results/*-cuda*.md, gpu-run-cuda.md
  mkdir -p /tmp/gpu-logs && tar xzf <files_at>/gpu-run.tgz -C /tmp/gpu-logs logs   # every step's full log
If the machine is still warm and time is left, the steps the first call skipped (its summary lists them), e.g.:
  run(carry=["$CARRY", "$WHEELS"], timeout_s=300, command="GPU_SH_BUDGET=240 GPU_SH_STEPS='first-use-module overhead-fp32 speed-fp16-rest' bash benchmarks/gpu.sh")
EOF
