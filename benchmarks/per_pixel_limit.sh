#!/usr/bin/env bash
# How far a per-pixel map can go on kodak24:  bash benchmarks/per_pixel_limit.sh SPACE TEACHER OUT_DIR
# Fits affine, quadratic and mlp with fit_weights.sh's per-pixel recipe three ways, each scored on all 144 kodak24
# tiles (the "wrote" lines, and each file's metadata): OUT_DIR/shipped (the shipped recipe, as fit_weights.sh),
# OUT_DIR/clean (clean latents only, --noise-mix 0) and OUT_DIR/oracle (fitted on kodak24 itself: an upper bound
# for a map that has to transfer from other photos, never shipped). What it showed: benchmarks/README.md,
# "Per-pixel families".
set -euo pipefail
space=${1:?usage: per_pixel_limit.sh SPACE TEACHER OUT_DIR}; teacher=${2:?teacher decoder file}; out=${3:?output folder}
root=$(cd "$(dirname "$0")/.." && pwd)
shared=$root/../shared
fit() {
  python -m previewers fit --teacher "$teacher" --space "$space" --crops 2048 --crop-size 128 --augment 0.5 --hue 0 \
    --eval-images "$shared/data/kodak24" --family affine,quadratic,mlp --args '{"mlp": {"hidden": [32, 32], "base": 2}}' \
    --steps 8000 --batch 64 --patience 30 --force "$@"
}
fit --images "$shared/data/train" --exclude-images 'gnome_*,ukui_*' --out "$out/shipped"
fit --images "$shared/data/train" --exclude-images 'gnome_*,ukui_*' --noise-mix 0 --out "$out/clean"
fit --images "$shared/data/kodak24" --out "$out/oracle"
