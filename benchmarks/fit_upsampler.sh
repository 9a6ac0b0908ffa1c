#!/usr/bin/env bash
# Fit the shipped upsampler of one latent space into weights/:  bash benchmarks/fit_upsampler.sh SPACE [--device cuda] [--resume]
# Same teacher, training pairs (2,048 augmented 128² crops of ../shared/data/train, cached by fit_weights.sh) and
# held-out metrics (../shared/data/kodak24, stored in the file with the full-resolution comparison) as fit_weights.sh.
# Design: the pixel-shuffle upsampler (residual trunk at latent resolution, sub-pixel stages 32/16/8; 64/32/16 for
# sd1, sdxl and flux2, below) over a least-squares linear k×k conv upscaled bilinearly, so training starts at that
# preview; k is the shipped conv's, which fit_weights.sh chose (5 for flux2, whose latents need more spatial context).
# The trunk is 96 wide with three residual blocks (3.17 G MACs per 64² latent at 4 channels), trained with the L1 +
# gradient loss, which won the 2,000-step frontier (benchmarks/results/upsampler-frontier-cpu-sd1.md).
# Against 64-wide, two-block files (1.58 G, MSE loss), at full budget on kodak24 sd1 gained 0.38 dB and SSIM 0.017
# (26.33 -> 26.71 dB, 0.719 -> 0.736; 53 min on 1 core), sdxl
# 0.20 dB and SSIM 0.015 (25.91 -> 26.11, 0.702 -> 0.717; 44 min), sd3 0.49 dB and SSIM 0.020 (28.88 -> 29.37,
# 0.828 -> 0.848; 44 min), flux1 0.76 dB and SSIM 0.048 in 10,000 steps against the 64-wide file's 15,000
# (27.15 -> 27.91, 0.766 -> 0.813; 44 min), flux2 1.33 dB and SSIM 0.075 over its 64-wide file's 24,000 steps
# (24.87 -> 26.20 dB, 0.772 -> 0.847; 51 min on 1 core). The flux1, flux2 and sd3 files were then continued
# 5,000 steps with the command at the end of this header (flux1 27.91 -> 28.38 dB, SSIM 0.835, and twice more
# 28.55, 0.841, then 28.65, 0.845; flux2 26.20 -> 26.36 dB, SSIM 0.853; sd3 29.37 -> 29.61 dB, SSIM 0.854; 12-32 min
# each); sd1's continuation never passed its starting validation PSNR and stopped early after 4,000 steps
# (the file unchanged). flux1 was continued a fourth time with `--loss l1-gradient-ssim` (the same loss plus
# 0.5 x (1 - SSIM); 5,000 steps, 43 min on 1 core beside other work): 28.65 -> 28.70 dB, SSIM 0.845 -> 0.856, noised
# 26.93 -> 27.08 dB, pooled 39.59 -> 39.29 dB; then a fifth time, with that loss, on four times the crops, as its
# net memorised its 2,048 (benchmarks/results/generalisation-cpu.md; --crops 8192 --steps 3000 --lr 2e-4, encoding
# 34 min, training 25 min on 1 core beside another fit): 28.99 dB, SSIM 0.866, noised 27.53 dB, pooled 39.56 dB.
# sd1 then moved to wider stages, 64/32/16 (5.49 G MACs, 16x cheaper than taesd), the winner of a second frontier
# round (benchmarks/results/upsampler-frontier-cpu-sd1-round2.md: +0.36 dB, SSIM +0.016 over 32/16/8 in 2,000
# steps). Its file is that round's 2,000-step fit (--save) continued 8,000 steps with --init (58 min on 1 core beside
# another fit): 26.71 -> 26.93 dB, SSIM 0.736 -> 0.747, noised 23.56 -> 23.71 dB, pooled 34.23 -> 34.41 dB. This
# script fits the same design afresh in 10,000 steps. sdxl's file is that design fitted afresh in 8,000 steps (57 min
# on 1 core beside another fit): 26.11 -> 26.30 dB, SSIM 0.717 -> 0.727, noised 24.54 -> 24.75 dB, pooled 34.99 dB.
# flux2's file is that design fitted afresh in 10,000 steps (86 min on 1 core beside one or two other jobs):
# 26.36 -> 26.62 dB, SSIM 0.853 -> 0.869, noised 28.07 -> 28.29 dB, pooled 30.08 -> 30.05 dB; then, as its nets
# gain more on their own crops than on held-out images (benchmarks/results/generalisation-cpu.md), continued 3,000
# steps on four times the crops (--init weights/flux2-upsampler.safetensors --crops 8192 --steps 3000 --lr 2e-4;
# encoding them took 50 min, training 26 min, on 1 core): 27.04 dB, SSIM 0.874, noised 28.65 dB, pooled 30.61 dB;
# then 6,000 more steps the same way (53 min on 1 core beside another fit; validation dipped 1 dB and passed its start
# only after 3,500 steps, as the learning rate fell): 27.22 dB, SSIM 0.879, noised 28.81 dB, pooled 30.84 dB; then
# 2,500 steps with the loss the metric measures (--loss mse --lr 1e-4, same crops; 21 min on 1 core beside another
# fit): 27.33 dB, SSIM 0.877, noised 28.86 dB, pooled 31.00 dB. The same MSE finisher on sd1 (2,048 crops) never
# passed its starting validation PSNR, so sd1's file is unchanged.
# Fixed budget: the shipped file's Adam steps (below) of 16 whole 16² latent crops (128² targets), validation PSNR
# at full resolution every 100 steps; resumable with --resume (checkpoint beside the output, written at every
# validation pass). Extra arguments go to the fit.
# flux1 validates on the six kodak-sized photos fit_weights.sh names, for the same reason: on a random tenth of the
# images its validation PSNR swung ±1 dB around its base for 3,400 steps, so early stopping could not steer it.
# Every space uses leaky ReLUs and a 4× lower learning rate (5e-4) than the first fits (ReLU, 2e-3): at 2e-3 flux1's
# validation PSNR dropped by 1 dB every few hundred steps; with ReLUs its last stage died (output zero everywhere,
# so the net added nothing), with leaky ReLUs it diverged (−17 dB) after 700 steps. With the new recipe flux1 gained
# 4.6 dB on kodak24, sdxl 0.4 and sd3 0.46 in as many or fewer steps.
# To continue a finished fit with more steps (a new cosine schedule from its weights; at the first fit's 2e-3 a
# restart knocked flux2's validation PSNR down by up to 4 dB; at 5e-4 its 64-wide file rose from the start, its
# 96-wide file dipped for 2,000 steps, then ended higher):
#   bash benchmarks/fit_upsampler.sh SPACE --init weights/SPACE-upsampler.safetensors --steps N --lr 5e-4 \
#     --out runs/up/SPACE-upsampler.safetensors --force
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
