"""Quality against cost of upsampler designs, to choose what ships (benchmarks/fit_upsampler.sh).

    python -m benchmarks.upsampler_frontier --space sd1 [--steps 2000] [--design NAME ...] [--save DIR] [--out FILE]

In one process, for one latent space: the training pairs of benchmarks/fit_weights.sh (the same cache), the held-out
kodak24 tiles, and for each design of designs() (or each named with --design) a fit with the same Adam budget, scored
at full resolution against the teacher's decode (PSNR/SSIM clean and noised), pooled to latent resolution, and timed
at 1×C×64² on one thread beside the teacher, with its multiply-accumulates; the ceiling of any latent-resolution
preview (training.full_res) in the same run.
"""

import argparse
import shlex
import sys
from pathlib import Path

import torch

from benchmarks.frontier import CROPS, RESULTS, space_data
from benchmarks.speed import count_macs, run_model
from benchmarks.timing import machine, median_seconds, progress, publish


def designs(context: int) -> dict:
    """name → (upsampler args, loss). The first design as shipped before, then pixel-shuffle designs with leaky ReLUs
    (the shipped recipe: at lr 5e-4 they train smoothly where ReLU stages can die)."""

    def shuffle(width, depth, stages, activation="leaky", refine=()):
        args = {"width": width, "depth": depth, "stages": list(stages), "upsample": "shuffle", "base": context}
        return args | ({"activation": activation} if activation != "relu" else {}) | ({"refine": list(refine)}
                                                                                      if refine else {})

    return {
        "first design (nearest stages)": ({"width": 64, "depth": 2, "stages": [48, 32, 16]}, "mse"),
        "shuffle 32, 2 blocks, 16-8-8": (shuffle(32, 2, (16, 8, 8)), "mse"),
        "shuffle 64, 2 blocks, 32-16-8": (shuffle(64, 2, (32, 16, 8)), "mse"),
        "shuffle 64, 2 blocks, 32-16-8, ReLU": (shuffle(64, 2, (32, 16, 8), "relu"), "mse"),
        "shuffle 96, 3 blocks, 32-16-8": (shuffle(96, 3, (32, 16, 8)), "mse"),
        "shuffle 64, 2 blocks, 48-24-16": (shuffle(64, 2, (48, 24, 16)), "mse"),
        "shuffle 64, 2 blocks, 32-16-8, L1 + gradient loss": (shuffle(64, 2, (32, 16, 8)), "l1-gradient"),
        "shuffle 96, 3 blocks, 32-16-8, L1 + gradient loss (shipped)": (shuffle(96, 3, (32, 16, 8)), "l1-gradient"),
        "shuffle 96, 3 blocks, 32-16-8, L1 + gradient + SSIM loss": (shuffle(96, 3, (32, 16, 8)), "l1-gradient-ssim"),
        "shuffle 96, 3 blocks, 64-32-16, L1 + gradient loss": (shuffle(96, 3, (64, 32, 16)), "l1-gradient"),
        "shuffle 128, 4 blocks, 32-16-8, L1 + gradient loss": (shuffle(128, 4, (32, 16, 8)), "l1-gradient"),
        # the third round: one more conv after the first stage, at 2x (6.09 G MACs; one more at 4x too would cost
        # 6.70 G, under the 10x floor in benchmarks.speed)
        "shuffle 96, 3 blocks, 64-32-16, one more conv at 2x": (shuffle(96, 3, (64, 32, 16), refine=(1, 0, 0)),
                                                                "l1-gradient"),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", required=True, choices=("sd1", "sdxl", "sd3", "flux1", "flux2"))
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps per design (the same for all)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-4, help="peak Adam learning rate (the shipped recipe's)")
    parser.add_argument("--count", type=int, help="held-out tiles (default: all 144)")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/upsampler-frontier-cpu-SPACE.md)")
    names = list(designs(0))  # the names do not depend on the base kernel
    parser.add_argument("--design", action="append", choices=names, metavar="NAME",
                        help="measure only this design (repeat for several; default: all of them): "
                             + "; ".join(repr(name) for name in names))
    parser.add_argument("--save", metavar="DIR",
                        help="also write each design's fitted weights to DIR/SPACE-upsampler-N.safetensors (N: its "
                             "row), to continue the chosen one with `previewers fit --init`")
    args = parser.parse_args(argv)

    from previewers.models.weightfile import save
    from training.adam import Training
    from training.evaluate import evaluate
    from training.fit import fit
    from training.full_res import CEILING, Ceiling, Pooled

    space, teacher, pairs, _, data, context = space_data(args.space, args.count)

    threads = torch.get_num_threads()  # for training; OMP_NUM_THREADS=1 leaves the other core to other work
    torch.set_num_threads(1)
    x = torch.randn(1, space.channels, 64, 64)
    progress(f"{args.space}: timing the teacher; scoring the ceiling")
    teacher_s = median_seconds(lambda: run_model(teacher.decoder, x), torch.device("cpu"))
    (ceiling,) = evaluate({CEILING: Ceiling(teacher)}, data, progress=False)

    rows = []
    chosen = {name: entry for name, entry in designs(context).items() if not args.design or name in args.design}
    for row, (name, (design, loss)) in enumerate(chosen.items(), 1):
        progress(f"{args.space}: {name}")
        torch.set_num_threads(threads)
        training = Training(steps=args.steps, batch=args.batch, lr=args.lr, patience=args.steps, loss=loss)  # a fixed budget
        previewer = fit(teacher, "upsampler", pairs, space=args.space, args=design, device="cpu", training=training)
        torch.set_num_threads(1)
        if args.save:
            save(previewer, Path(args.save) / f"{args.space}-upsampler-{row}.safetensors")
        full, pooled = evaluate({name: previewer, "pooled": Pooled(previewer)}, data, progress=False)
        seconds = median_seconds(lambda: run_model(previewer, x), torch.device("cpu"))
        rows.append((name, design, loss, full, pooled, count_macs(run_model, previewer, x), seconds))

    lines = [
        f"# Upsampler designs for {args.space}: quality against cost",
        "",
        f"Machine: {machine(torch.device('cpu'), torch.float32)} (timings on one thread; other work shared the CPU).  ",
        f"Run: `python -m benchmarks.upsampler_frontier {shlex.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        f"Every design trained with the same budget ({args.steps} Adam steps of {args.batch} 16² latent crops, peak lr "
        f"{args.lr:g}) on the "
        f"pairs of benchmarks/fit_weights.sh ({pairs.source['image_count']} images, {len(pairs)} augmented "
        f"{CROPS['size']}² crops), scored on {len(data.clean)} 256² kodak24 tiles against {teacher.name} at the "
        "full resolution, and pooled to latent resolution. "
        f"Ceiling of any latent-resolution preview (the teacher's decode pooled {teacher.scale_factor}x, bicubic "
        f"back): {ceiling.clean['psnr']:.2f} dB, SSIM {ceiling.clean['ssim']:.3f} clean; "
        f"{ceiling.noised['psnr']:.2f} dB noised.",
        "",
        "| design | args | loss | params | MACs / 64² latent | ms / 64² latent | × teacher | PSNR full res | "
        "SSIM full res | PSNR noised | PSNR pooled |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, design, loss, full, pooled, macs, seconds in rows:
        lines.append(f"| {name} | `{design}` | {loss} | {full.params:,} | {macs / 1e9:.2f} G | {seconds * 1000:.1f} | "
                     f"{teacher_s / seconds:,.1f}× | {full.clean['psnr']:.2f} | {full.clean['ssim']:.3f} | "
                     f"{full.noised['psnr']:.2f} | {pooled.clean['psnr']:.2f} |")
    lines += ["", f"Teacher {teacher.name}: {teacher_s * 1000:.0f} ms (one thread, 1×C×64²)."]
    publish("\n".join(lines) + "\n", args.out or RESULTS / f"upsampler-frontier-cpu-{args.space}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
