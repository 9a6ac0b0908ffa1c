"""Quality against cost of latent-resolution conv designs, to choose what ships (the speed floor decides).

    python -m benchmarks.frontier --space sdxl [--steps 2000] [--out benchmarks/results/frontier-cpu-sdxl.md]

In one process, for one latent space: the training pairs of benchmarks/fit_weights.sh (the same cache), the
held-out kodak24 tiles, and for each design in DESIGNS (a closed-form linear k×k conv, then residual nets of
growing width and depth) a fit with the same Adam budget; each is scored on kodak24 (PSNR/SSIM clean and noised)
and timed at 1×C×64² on one thread beside the space's teacher decoder and the full-size VAE decode (random
weights, benchmarks/reference.py), with its multiply-accumulates. A design meets the speed floor when it is at
least FLOOR["teacher"]× faster than the teacher and FLOOR["full VAE"]× faster than the full VAE decode, measured
in this run; the table marks the best one that does.
"""

import argparse
import sys
from pathlib import Path

import torch

from benchmarks.reference import full_vae
from benchmarks.speed import count_macs, run_model, run_vae
from benchmarks.timing import machine, median_seconds, progress, publish

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
RESULTS = ROOT / "benchmarks" / "results"
FLOOR = {"teacher": 400, "full VAE": 5_000}
# The data recipe of benchmarks/fit_weights.sh, so both share the cached pairs.
CROPS = dict(count=2048, size=128, dihedral=0.5, hue=0.5, contrast=0.5)


def designs(channels: int, context: int) -> dict:
    """name → conv args. With 16+ latent channels the first layer is a 1x1 mix (a 3x3 on 16-32 channels costs
    more than the rest of the net)."""
    first = 3 if channels <= 4 else 1

    def net(widths, base=context):
        kernels = [first] + [3] * (len(widths) - 1) + [1 if first == 3 else 3]
        return {"channels": list(widths), "kernels": kernels, "base": base}

    return {
        f"linear {context}x{context} (closed form)": {"channels": [], "kernels": [context]},
        "residual 16-16": net((16, 16)),
        "residual 32-32": net((32, 32)),
        "residual 48-48": net((48, 48)),
        "residual 32-32-32": net((32, 32, 32)),
        "residual 64-64": net((64, 64)),
    }


def space_data(name: str, count: int | None):
    """(space, teacher, training pairs of the refit recipe, held-out kodak24 tiles, linear base kernel) for a space,
    from the shared cache."""
    from benchmarks.quality import teacher_file
    from previewers.spaces import get_space
    from training.data import Crops, default_cache_dir, fingerprint, make_pairs
    from training.evaluate import held_out
    from training.teachers import load_teacher

    space = get_space(name)
    path = teacher_file(space.teacher)
    teacher, teacher_id, cache = load_teacher(path), fingerprint(path), default_cache_dir()
    pairs = make_pairs(teacher, space.kind, images=SHARED / "data" / "train", crops=Crops(**CROPS), noise_mix=0.5,
                       cache_dir=cache, teacher_id=teacher_id)
    data = held_out(teacher, SHARED / "data" / "kodak24", count=count, cache_dir=cache, teacher_id=teacher_id)
    return space, teacher, pairs, data, 5 if name == "flux2" else 3  # FLUX.2 latents need more spatial context


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", required=True, choices=("sd1", "sdxl", "sd3", "flux1", "flux2"))
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps per design (the same for all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--count", type=int, help="held-out tiles (default: all 144)")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/frontier-cpu-SPACE.md)")
    args = parser.parse_args(argv)

    from training.evaluate import evaluate
    from training.fit import fit
    from training.gradient import Training

    space, teacher, pairs, data, context = space_data(args.space, args.count)
    training = Training(steps=args.steps, batch=args.batch, patience=args.steps)  # a fixed budget for every design

    torch.set_num_threads(1)  # tiny nets train about as fast on one thread, and timings need one
    x = torch.randn(1, space.channels, 64, 64)
    progress(f"{args.space}: timing the teacher and the full VAE decode")
    teacher_s = median_seconds(lambda: run_model(teacher.decoder, x), torch.device("cpu"))
    vae_label, vae = full_vae(space.channels)
    vae_s = median_seconds(lambda: run_vae(vae, x), torch.device("cpu"), budget_s=0.0, min_repeats=3)
    del vae

    rows = []
    for name, design in designs(space.channels, context).items():
        progress(f"{args.space}: {name}")
        previewer = fit(teacher, "conv", pairs, space=args.space, args=design, device="cpu", training=training)
        (row,) = evaluate({name: previewer}, data, progress=False)
        seconds = median_seconds(lambda: run_model(previewer, x), torch.device("cpu"))
        rows.append((name, design, row, count_macs(run_model, previewer, x), seconds))

    def meets(seconds):
        return teacher_s / seconds >= FLOOR["teacher"] and vae_s / seconds >= FLOOR["full VAE"]

    eligible = [r for r in rows if meets(r[4])]
    best = max(eligible, key=lambda r: r[2].clean["psnr"], default=None)
    lines = [
        f"# Conv designs for {args.space}: quality against cost",
        "",
        f"Machine: {machine(torch.device('cpu'), torch.float32)} (timings on one thread; other work shared the CPU).  ",
        f"Run: `python -m benchmarks.frontier {' '.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        f"Every design trained with the same budget ({args.steps} Adam steps of {args.batch}, or least squares) on "
        f"the pairs of benchmarks/fit_weights.sh ({pairs.source['image_count']} images, {len(pairs)} augmented "
        f"{CROPS['size']}² crops), scored on {len(data.clean)} 256² kodak24 tiles against {teacher.name} pooled "
        "to latent resolution. Residual designs add the net to a least-squares linear conv (`base`). Speed floor: "
        f"≥ {FLOOR['teacher']}× faster than the teacher and ≥ {FLOOR['full VAE']:,}× faster than the full VAE "
        f"decode ({vae_label}), both at 1×{space.channels}×64², in this run.",
        "",
        "| design | args | params | MACs / 64² latent | ms / 64² latent | × teacher | × full VAE | floor | "
        "PSNR clean | SSIM clean | PSNR noised |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, design, row, macs, seconds in rows:
        mark = "**best within floor**" if best is not None and name == best[0] else ("yes" if meets(seconds) else "no")
        lines.append(f"| {name} | `{design}` | {row.params:,} | {macs / 1e6:.1f} M | {seconds * 1000:.2f} | "
                     f"{teacher_s / seconds:,.0f}× | {vae_s / seconds:,.0f}× | {mark} | {row.clean['psnr']:.2f} | "
                     f"{row.clean['ssim']:.3f} | {row.noised['psnr']:.2f} |")
    lines += ["", f"Teacher {teacher.name}: {teacher_s * 1000:.0f} ms; full VAE decode: {vae_s * 1000:.0f} ms "
              "(one thread, 1×C×64²)."]
    publish("\n".join(lines) + "\n", args.out or RESULTS / f"frontier-cpu-{args.space}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
