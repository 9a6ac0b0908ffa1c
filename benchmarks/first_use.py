"""How long the fit on first use, and the day-one net, take for a full-size SD-class VAE.

    python -m benchmarks.first_use --device cpu [--net-crops 32 --net-steps 200] [--out FILE.md]

Builds diffusers' AutoencoderKL with the SD 1.5 config and random weights (benchmarks/reference.py:
the cost of encode and decode does not depend on the weight values) and runs the whole fit that
`previewer="auto"` runs for a VAE without a shipped previewer (previewers/first_use/fit.py): encode and
decode the example crops, least squares for affine and the 3x3 conv, held-out scoring. Its PSNR is
meaningless (random weights); the seconds are the point. With --net-crops, the day-one net
(training/day_one.py) is then trained on that many crops for --net-steps Adam steps, and its time is scaled to the
day-one defaults (training.day_one.net_design's crops and steps): pairs by the crop count, Adam by the step count.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import diffusers
import torch

from benchmarks.reference import SD15_VAE
from benchmarks.timing import machine
from previewers.first_use.fit import fit_for_vae
from previewers.pipelines.latents import bind_vae
from training.adam import resolve_device


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="'auto' (CUDA when available), 'cpu', 'cuda', ...")
    parser.add_argument("--net-crops", type=int, help="also time the day-one net's pairs on this many crops")
    parser.add_argument("--net-steps", type=int, default=200, help="Adam steps of that timed net")
    parser.add_argument("--out", help="also write the result to this markdown file")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKL(**SD15_VAE).to(device).eval().requires_grad_(False)
    latents = bind_vae(vae)
    folder = Path(tempfile.mkdtemp(prefix="first-use-"))  # nothing cached from earlier runs
    start = time.perf_counter()
    previewer = fit_for_vae(latents, folder=folder)
    seconds = time.perf_counter() - start
    recipe = previewer.meta["recipe"]
    lines = [f"first-use fit, SD 1.5 AutoencoderKL (random weights), {recipe['data']} + held-out crops, "
             f"on {machine(device, torch.float32)}: {seconds:.1f} s (kept {recipe['family']})"]
    if args.net_crops:
        from training import day_one

        net = day_one.train_day_one_net(latents, steps=args.net_steps, crops=args.net_crops, device=device,
                                        folder=folder)
        pairs_s = net.meta["recipe"]["pairs_seconds"]
        adam_s = net.meta["recipe"]["seconds"] - pairs_s
        per_crop = pairs_s / args.net_crops
        design = day_one.net_design(latents.channels, latents.convention.space)
        whole = per_crop * design.crops + adam_s * design.steps / args.net_steps
        lines.append(f"day-one net (it reuses the first use's held-out crops): {args.net_crops} training crops "
                     f"encoded and decoded in {pairs_s:.1f} s ({per_crop:.2f} s per crop), {args.net_steps} Adam steps "
                     f"in {adam_s:.1f} s; scaled to the defaults ({design.crops} crops, {design.steps} steps): about "
                     f"{whole / 60:.0f} min for the net, after the {seconds:.0f} s first use")
    print("\n".join(lines))
    if args.out:
        command = "python -m benchmarks.first_use " + " ".join(sys.argv[1:] if argv is None else argv)
        with open(args.out, "w") as f:
            f.write(f"# First-use fit time\n\n`{command}`\n\n" + "\n\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
