#!/usr/bin/env bash
# Refit the shipped previewers of one latent space into weights/:  bash benchmarks/fit_weights.sh SPACE [--device cuda] [--resume]
# Teacher: the space's TAESD-family decoder in ../shared; training crops: ../shared/data/train (2,048 augmented 128²
# crops, 8,192 for flux1's and flux2's conv nets, half of them noised along the space's trajectory); held-out
# metrics (stored in each file): ../shared/data/kodak24. Pairs are cached, so the families after the first reuse the
# same encoded and decoded crops.
# Per-pixel families (linear, affine, quadratic, mlp) fit the photos alone, without hue rotation: one colour per
# latent pixel cannot serve flat-shaded illustrations and photos at once. The nets with spatial context keep every
# image and the full augmentation.
# Extra arguments go to every `latent-preview fit` (--resume continues killed Adam fits from their checkpoints).
# Why each choice, with the figures: benchmarks/README.md, "How the shipped files were trained".
set -euo pipefail
space=${1:?usage: fit_weights.sh sd1|sdxl|sd3|flux1|flux2 [fit options]}; shift
root=$(cd "$(dirname "$0")/.." && pwd)
shared=$root/../shared
source "$root/benchmarks/validation_images.sh"
# conv: a residual net of four 32-wide layers on a linear k×k conv (`base`), the best design within the speed floor
# (DESIGN.md, "Measuring") in every space's frontier (benchmarks/results/frontier-cpu-*.md). With 16 or 32 channels
# the first layer is a 1x1 mix, so the 3x3 layers work on 32 channels whatever the latent width.
# flux1's net validates on six kodak-sized photos, left out of its training (--val-images): a random tenth of the
# images (two photos, four illustrations) did not steer it. For flux2 no photo validation set worked, so it keeps the random
# tenth.
conv_val=()
conv_lr=()
conv_crops=()
mlp_steps=()
case $space in
  # sd1: four layers, the best design within the floor in benchmarks/results/frontier-cpu-sd1.md
  sd1) teacher=taesd_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [3, 3, 3, 3, 1], "base": 3}'
       why='benchmarks/results/frontier-cpu-sd1.md (8,000 steps each): residual 32-32-32-32 is the best design within the speed floor' ;;
  # sdxl's mlp is its quadratic base (0 Adam steps): fitted with six photos held out, no mlp rose above its base on
  # them (benchmarks/results/per-pixel-mix-cpu-sdxl.md)
  sdxl) teacher=taesdxl_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [3, 3, 3, 3, 1], "base": 3}'
        mlp_steps=(--steps 0 --why 'benchmarks/results/per-pixel-mix-cpu-sdxl.md: validated on six photos left out of the fit, every mlp (16 to 64-64 hidden, lr 2e-3 and 2e-4, noised or clean pairs, 2,048 or 8,192 crops) kept its base (best step 0); the file fitted on a random tenth of the crops scored 0.37 dB under the quadratic on those photos')
        why='benchmarks/results/frontier-cpu-sdxl.md (8,000 steps each): residual 32-32-32-32 is the best design within the speed floor' ;;
  # sd3: four layers, the best design within the floor in benchmarks/results/frontier-cpu-sd3.md; 1x1 first (16 channels)
  sd3) teacher=taesd3_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [1, 3, 3, 3, 3], "base": 3}'
       why='benchmarks/results/frontier-cpu-sd3.md: residual 32-32-32-32 is the best design within the speed floor' ;;
  # flux1: four layers at lr 5e-4, the best design within the floor in benchmarks/results/frontier-cpu-flux1.md; at
  # 2e-3 every net wider or deeper than 32-32 lost ReLU layers there (frontier-cpu-flux1-lr2e-3.md)
  # It trains on 8,192 crops: on 2,048 it memorised them (benchmarks/results/generalisation-cpu.md).
  flux1) teacher=taef1_decoder.safetensors; context=3; net='{"channels": [32, 32, 32, 32], "kernels": [1, 3, 3, 3, 3], "base": 3}'
         conv_val=(--val-images "$flux1_val_images")
         conv_lr=(--lr 5e-4)
         conv_crops=(--crops 8192)
         why='benchmarks/results/frontier-cpu-flux1.md (8,000 steps each at lr 5e-4, photo validation): residual 32-32-32-32 is the best design within the speed floor; fitted on 8,192 crops, as benchmarks/results/generalisation-cpu.md showed the 2,048-crop net memorising (+1.47 dB excess gain)' ;;
  # FLUX.2 latents need more spatial context: a 5x5 base. Three layers with a 3x3 last layer at lr 5e-4: the
  # four-layer net sat at the edge of the speed floor, three keep the quality target with a margin
  # (benchmarks/results/flux2-conv-margin-cpu.md); at 2e-3 deeper flux2 nets lost their last ReLU layer
  # (frontier-cpu-flux2-lr2e-3.md). On 8,192 crops, since on 2,048 it memorised them (generalisation-cpu.md).
  flux2) teacher=taef2_decoder.pth; context=5; net='{"channels": [32, 32, 32], "kernels": [1, 3, 3, 3], "base": 5}'
         conv_lr=(--lr 5e-4)
         conv_crops=(--crops 8192)
         why='benchmarks/results/flux2-conv-margin-cpu.md: residual 32-32-32 (three layers, 3x3 last) for a margin over the 400x speed floor (442-512x taef2 where the four-layer net ran 358-418x, one run: benchmarks/results/speed-cpu-flux2.md) at 28.15 dB on kodak24, over the 27.5 dB target; 8,192 crops, as benchmarks/results/generalisation-cpu.md showed the 2,048-crop net memorising' ;;
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
# so the file is that base; a lower lr did not move the sd1 and sdxl mlps (benchmarks/README.md).
per_pixel --family mlp --args '{"hidden": [32, 32], "base": 2}' --steps 8000 --batch 64 --patience 30 "${mlp_steps[@]}" "$@"
fit --family conv --args "$net" --steps 15000 --batch 64 --patience 40 --why "$why" "${conv_val[@]}" "${conv_lr[@]}" \
  "${conv_crops[@]}" "$@"
