#!/usr/bin/env bash
# Refit the shipped previewers of one latent space into weights/:  bash benchmarks/fit_weights.sh SPACE [--device cuda] [--resume]
# Teacher: the space's TAESD-family decoder in ../shared; training crops: ../shared/data/train (2,048 augmented 128²
# crops, 8,192 for flux1's and flux2's conv nets, half of them noised along the space's trajectory); held-out
# metrics (stored in each file): ../shared/data/kodak24. Pairs are cached, so the families after the first reuse the
# same encoded and decoded crops.
# Per-pixel families (linear, affine, quadratic, mlp) fit the photos alone, without hue rotation: one colour per
# latent pixel cannot serve flat-shaded illustrations and photos at once, and on sd1 the least-squares compromise
# cost 0.5-0.7 dB on held-out photos (affine 20.99 -> 21.69 dB, quadratic 21.29 -> 21.78 on 144 kodak24 tiles); the nets
# with spatial context keep every image and the full augmentation.
# Checked on photos held out of training (the six of validation_images.sh, not kodak24) for sd1:
# photos + illustrations, no augmentation, 64-64 hidden, lr 2e-4 and clean-only pairs each lost on kodak24 or on
# noised latents, so the per-pixel recipe stays (benchmarks/results/per-pixel-mix-cpu-sd1.md).
# Extra arguments go to every `latent-preview fit` (--resume continues killed Adam fits from their checkpoints).
set -euo pipefail
space=${1:?usage: fit_weights.sh sd1|sdxl|sd3|flux1|flux2 [fit options]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
shared=$root/../shared
source "$root/benchmarks/validation_images.sh"
# conv: a residual net on a linear k×k conv (`base`) of 32-wide layers: depth beat width in every frontier
# (benchmarks/results/frontier-cpu-*.md; in sdxl's, four layers 32.90 dB, three 32.40, 32-32 31.53, 48-48 31.43,
# 64-64 30.91), and four layers, about 30 k multiply-accumulates per latent pixel, stay inside the speed floor
# (≥ 5,000× faster than the full VAE decode, ≥ 400× faster than the teacher, in the same run). With 16 or 32
# channels the first layer is a 1x1 mix, so the 3x3 layers work on 32 channels whatever the latent width.
# flux1's net validates on six kodak-sized photos, left out of its training (--val-images): with a random tenth of
# the images (two photos, four illustrations) its three-layer net ended below its own base on kodak24 (27.75 dB).
# For flux2 no photo validation set worked: on the mate_* or lomiri_* crops, or on these photos' tiles, its net never
# rose above its base and early stopping ended it there (24.1-24.2 dB against 27.39), so flux2 keeps the random tenth.
conv_val=()
conv_lr=()
conv_crops=()
case $space in
  # sd1: four layers, the best design within the floor in benchmarks/results/frontier-cpu-sd1.md
  sd1) teacher=taesd_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [3, 3, 3, 3, 1], "base": 3}'
       why='benchmarks/results/frontier-cpu-sd1.md (8,000 steps each): residual 32-32-32-32 is the best design within the speed floor' ;;
  sdxl) teacher=taesdxl_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [3, 3, 3, 3, 1], "base": 3}'
        why='benchmarks/results/frontier-cpu-sdxl.md (8,000 steps each): residual 32-32-32-32 is the best design within the speed floor' ;;
  # sd3: four layers, the best design within the floor in benchmarks/results/frontier-cpu-sd3.md; 1x1 first (16 channels)
  sd3) teacher=taesd3_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [1, 3, 3, 3, 3], "base": 3}'
       why='benchmarks/results/frontier-cpu-sd3.md: residual 32-32-32-32 is the best design within the speed floor' ;;
  # flux1: four layers at lr 5e-4, the best design within the floor in benchmarks/results/frontier-cpu-flux1.md; at
  # 2e-3 every net wider or deeper than 32-32 lost ReLU layers there (frontier-cpu-flux1-lr2e-3.md)
  # It trains on 8,192 crops: on 2,048 it memorised them (benchmarks/results/generalisation-cpu.md, +1.47 dB excess
  # gain); four times the crops raised kodak24 from 37.37 to 37.60 dB (11 min on 1 core, 34 min more to encode them).
  flux1) teacher=taef1_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [1, 3, 3, 3, 3], "base": 3}'
         conv_val=(--val-images "$flux1_val_images")
         conv_lr=(--lr 5e-4)
         conv_crops=(--crops 8192)
         why='benchmarks/results/frontier-cpu-flux1.md (8,000 steps each at lr 5e-4, photo validation): residual 32-32-32-32 is the best design within the speed floor; fitted on 8,192 crops, as benchmarks/results/generalisation-cpu.md showed the 2,048-crop net memorising (+1.47 dB excess gain)' ;;
  # FLUX.2 latents need more spatial context (5x5 beats 3x3 by ~1.7 dB as a linear conv). Four layers at lr 5e-4, the
  # best design within the floor in benchmarks/results/frontier-cpu-flux2.md; at 2e-3 deeper flux2 nets lost their
  # last ReLU layer (frontier-cpu-flux2-lr2e-3.md). The frontier's 3x3 last layer gave 28.19 dB on kodak24 against
  # 27.74 for the earlier file's 1x1 (14 min on 1 core). On 8,192 crops, since on 2,048 it memorised them (+0.74 dB
  # excess gain in benchmarks/results/generalisation-cpu.md): 28.19 -> 28.69 dB (20 min on 1 core beside another fit).
  flux2) teacher=taef2_decoder.pth; context=5; net='{"channels": [32, 32, 32, 32], "kernels": [1, 3, 3, 3, 3], "base": 5}'
         conv_lr=(--lr 5e-4)
         conv_crops=(--crops 8192)
         why='benchmarks/results/frontier-cpu-flux2.md (8,000 steps each at lr 5e-4): residual 32-32-32-32 with a 3x3 last layer is the best design within the speed floor (28.15 dB); fitted on 8,192 crops, as benchmarks/results/generalisation-cpu.md showed the 2,048-crop net memorising (+0.74 dB excess gain)' ;;
  *) echo "unknown space $space (sd1, sdxl, sd3, flux1, flux2)" >&2; exit 2 ;;
esac
fit() {
  python -m previewers fit --teacher "$shared/models/teachers/$teacher" --space "$space" --images "$shared/data/train" \
    --crops 2048 --crop-size 128 --augment 0.5 --eval-images "$shared/data/kodak24" --out "$root/weights" --force "$@"
}
per_pixel() {
  fit --exclude-images 'gnome_*,ukui_*' --hue 0 "$@"
}
per_pixel --family linear,affine,quadratic "$@"
fit --family conv --variant fast --args "{\"channels\": [], \"kernels\": [$context]}" "$@"
# flux2's shipped mlp was fitted with --lr 5e-4: it never rose above its quadratic base on validation (best step 0),
# so the file is that base; sd1 and sdxl at 5e-4 ended within 0.03 dB of their 2e-3 files.
per_pixel --family mlp --args '{"hidden": [32, 32], "base": 2}' --steps 8000 --batch 64 --patience 30 "$@"
fit --family conv --args "$net" --steps 15000 --batch 64 --patience 40 --why "$why" "${conv_val[@]}" "${conv_lr[@]}" \
  "${conv_crops[@]}" "$@"
