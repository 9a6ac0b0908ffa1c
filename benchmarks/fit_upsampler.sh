#!/usr/bin/env bash
# Fit the shipped upsampler of one latent space into weights/:  bash benchmarks/fit_upsampler.sh SPACE [--device cuda] [--resume]
# Runs `python -m previewers fit --family upsampler` with the space's shipped recipe: its TAESD-family teacher in
# ../shared, the training pairs fit_weights.sh builds (cached, so shared with it), the pixel-shuffle design over a
# least-squares linear k×k conv (k: frontier.base_kernel, the shipped conv's), leaky ReLUs, the L1 + gradient loss
# and lr 5e-4. Writes weights/SPACE-upsampler.safetensors with its recipe and its held-out metrics on
# ../shared/data/kodak24 (the full-resolution comparison included); extra arguments go to the fit (--resume
# continues a killed fit from its checkpoint). To continue a finished fit with a new cosine schedule:
#   bash benchmarks/fit_upsampler.sh SPACE --init weights/SPACE-upsampler.safetensors --steps N --lr 5e-4 \
#     --out runs/up/SPACE-upsampler.safetensors --force
# Why this design and recipe, and what each shipped file's fit gave: benchmarks/README.md, "Upsamplers".
set -euo pipefail
space=${1:?usage: fit_upsampler.sh sd1|sdxl|sd3|flux1|flux2 [fit options]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
shared=$root/../shared
source "$root/benchmarks/validation_images.sh"
val=()
activation=', "activation": "leaky"'
lr=5e-4
steps=10000
trunk='"width": 96, "depth": 3'
stages='32, 16, 8'
loss=l1-gradient
# per space: stages 64-32-16 (the second frontier round's winner) where they were refitted, 32-16-8 for sd3 and
# flux1; flux1 validates on the photos of validation_images.sh instead of a random tenth of the images
case $space in
  sd1) teacher=taesd_decoder.safetensors; stages='64, 32, 16' ;;
  sdxl) teacher=taesdxl_decoder.safetensors; stages='64, 32, 16'; steps=8000 ;;
  sd3) teacher=taesd3_decoder.safetensors ;;
  flux1) teacher=taef1_decoder.safetensors
         val=(--val-images "$flux1_val_images") ;;
  flux2) teacher=taef2_decoder.pth; stages='64, 32, 16' ;;
  *) echo "unknown space $space (sd1, sdxl, sd3, flux1, flux2)" >&2; exit 2 ;;
esac
context=$(cd "$root" && python -c "from benchmarks.frontier import base_kernel; print(base_kernel('$space'))")
python -m previewers fit --teacher "$shared/models/teachers/$teacher" --space "$space" --images "$shared/data/train" \
  --crops 2048 --crop-size 128 --augment 0.5 --eval-images "$shared/data/kodak24" --out "$root/weights" \
  --family upsampler \
  --args "{$trunk, \"stages\": [$stages], \"upsample\": \"shuffle\", \"base\": $context$activation}" \
  --loss $loss --steps $steps --batch 16 --lr $lr --patience 40 "${val[@]}" "$@"
