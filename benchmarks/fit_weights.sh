#!/usr/bin/env bash
# Refit the shipped previewers of one latent space into weights/:  bash benchmarks/fit_weights.sh SPACE [--device cuda]
# Teacher: the space's TAESD-family decoder in ../shared; training crops: ../shared/data/train; held-out
# metrics (stored in each file): ../shared/data/kodak24. Pairs are cached, so the families after the
# first reuse the same encoded and decoded crops. Extra arguments go to every `latent-preview fit`.
set -euo pipefail
space=${1:?usage: fit_weights.sh sd1|sdxl|sd3|flux1|flux2 [fit options]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
shared=$root/../shared
case $space in
  sd1) teacher=taesd_decoder.safetensors; context=3; net='{"channels": [64, 64], "kernels": [3, 3, 1]}' ;;
  sdxl) teacher=taesdxl_decoder.safetensors; context=3; net='{"channels": [64, 64], "kernels": [3, 3, 1]}' ;;
  sd3) teacher=taesd3_decoder.safetensors; context=3; net='{"channels": [64, 64], "kernels": [3, 3, 1]}' ;;
  flux1) teacher=taef1_decoder.safetensors; context=3; net='{"channels": [64, 64], "kernels": [3, 3, 1]}' ;;
  # FLUX.2 latents need more spatial context (5x5 beats 3x3 by ~1.7 dB as a linear conv): 7x7 for the net.
  flux2) teacher=taef2_decoder.pth; context=5; net='{"channels": [64, 48], "kernels": [3, 3, 3]}' ;;
  *) echo "unknown space $space (sd1, sdxl, sd3, flux1, flux2)" >&2; exit 2 ;;
esac
fit() {
  latent-preview fit --teacher "$shared/models/teachers/$teacher" --space "$space" --images "$shared/data/train" \
    --eval-images "$shared/data/kodak24" --out "$root/weights" "$@"
}
fit --family linear,affine,quadratic "$@"
fit --family conv --variant fast --args "{\"channels\": [], \"kernels\": [$context]}" "$@"
fit --family mlp --steps 1500 "$@"
fit --family conv --args "$net" --steps 1500 "$@"
fit --family upsampler --steps 1200 --batch 8 "$@"
