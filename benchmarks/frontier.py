"""Quality against cost of latent-resolution conv designs, to choose what ships (the speed floor decides).

    python -m benchmarks.frontier --space sdxl [--steps 2000] [--out benchmarks/results/frontier-cpu-sdxl.md]

In one process, for one latent space: the training pairs of benchmarks/fit_weights.sh (the same cache), the
held-out kodak24 tiles, and for each design in `designs` (a closed-form linear k×k conv, then residual nets of
growing width and depth, one with a dilated layer) a fit with the same Adam budget; each is scored on kodak24
(PSNR/SSIM clean and noised, dead ReLU layers) and timed at 1×C×64² on one thread beside the space's teacher decoder and the full-size VAE decode (random
weights, benchmarks/reference.py), with its multiply-accumulates. A design meets the speed floor when it is at
least FLOOR["teacher"]× faster than the teacher and FLOOR["full VAE"]× faster than the full VAE decode, measured
in this run; the table marks the best one that does.
"""

import argparse
import shlex
import sys
from pathlib import Path

import torch

from benchmarks.reference import full_vae
from benchmarks.speed import count_macs, run_model, run_vae
from benchmarks.timing import interleaved_seconds, machine, median_seconds, progress, publish
from previewers.models.spaces import SPACES
from training.adam import Training
from training.shared_folder import SHARED

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
FLOOR = {"teacher": 400, "full VAE": 5_000}
# The data recipe of benchmarks/fit_weights.sh, so both share the cached pairs.
CROPS = dict(count=2048, size=128, dihedral=0.5, hue=0.5, contrast=0.5)


def designs(channels: int, context: int) -> dict:
    """name → conv args. With 16+ latent channels the first layer is a 1x1 mix (a 3x3 on 16-32 channels costs
    more than the rest of the net)."""
    first = 3 if channels <= 4 else 1

    def net(widths, base=context, **extra):
        kernels = [first] + [3] * (len(widths) - 1) + [1 if first == 3 else 3]
        return {"channels": list(widths), "kernels": kernels, "base": base, **extra}

    return {
        f"linear {context}x{context} (closed form)": {"channels": [], "kernels": [context]},
        "residual 16-16": net((16, 16)),
        "residual 32-32": net((32, 32)),
        "residual 48-48": net((48, 48)),
        "residual 32-32-32": net((32, 32, 32)),
        # the second layer's taps 2 pixels apart: a 9×9 receptive field for the cost of 32-32-32's 7×7
        "residual 32-32-32, dilated": net((32, 32, 32), dilations=[1, 2, 1, 1]),
        "residual 32-32-32-32": net((32, 32, 32, 32)),
        "residual 64-64": net((64, 64)),
    }


def teacher_and_kodak24(teacher_name: str, count: int | None):
    """(teacher, its fingerprint, the pair cache folder, held-out kodak24 tiles) for a teacher in ../shared."""
    from benchmarks.quality import teacher_file
    from training.evaluate import held_out
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    path = teacher_file(teacher_name)
    teacher, teacher_id, cache = load_teacher(path), fingerprint(path), default_cache_dir()
    data = held_out(teacher, SHARED / "data" / "kodak24", count=count, cache_dir=cache, teacher_id=teacher_id)
    return teacher, teacher_id, cache, data


def space_data(name: str, count: int | None, val_images: tuple[str, ...] = ()):
    """(space, teacher, training pairs of the refit recipe, validation pairs or None, held-out kodak24 tiles, linear
    base kernel) for a space, from the shared cache. `val_images`: file-name patterns of training images to validate
    on instead of the random tenth (`fit --val-images`), left out of the training pairs."""
    from previewers.models.spaces import get_space
    from training.commands.fit import validation_tiles
    from training.crops import Crops
    from training.data import make_pairs
    from training.evaluate import validation_pairs

    space = get_space(name)
    teacher, teacher_id, cache, data = teacher_and_kodak24(space.teacher, count)
    images = SHARED / "data" / "train"
    pairs = make_pairs(teacher, space.noise, images=images, exclude=val_images, crops=Crops(**CROPS), noise_mix=0.5,
                       cache_dir=cache, teacher_id=teacher_id)
    validation = (validation_pairs(validation_tiles(teacher, images, val_images, CROPS["size"], cache, teacher_id))
                  if val_images else None)
    return space, teacher, pairs, validation, data, base_kernel(name)


def base_kernel(space_name: str) -> int:
    """Side of the linear conv the nets of a space are a residual on: the shipped conv file's, which fit_weights.sh
    chose (5 for FLUX.2, whose latents need more spatial context; 3 elsewhere)."""
    from previewers.models.registry import weights_dir
    from previewers.models.weightfile import read_card

    return read_card(weights_dir() / f"{space_name}-conv.safetensors").args["base"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space", required=True, choices=tuple(SPACES))
    parser.add_argument("--steps", type=int, default=2000, help="Adam steps per design (the same for all)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=Training.lr,
                        help="peak Adam learning rate (the same for all); at the default, deep flux2 nets lost a ReLU layer")
    parser.add_argument("--count", type=int, help="held-out tiles (default: all 144)")
    parser.add_argument("--val-images", metavar="GLOBS",
                        help="validate on these training images (comma-separated file-name patterns, as `fit "
                             "--val-images`; flux1's are in benchmarks/validation_images.sh) instead of a random tenth")
    parser.add_argument("--timing-only", action="store_true",
                        help="cost columns only: untrained designs (cost does not depend on the weights), no data")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/frontier[-timing]-cpu-SPACE.md)")
    args = parser.parse_args(argv)

    from benchmarks.quality import teacher_file
    from previewers import build, load
    from previewers.models.spaces import get_space
    from training.commands.fit import globs
    from training.evaluate import evaluate
    from training.fit import dead_relus, fit

    if args.val_images:  # before the minutes of encoding pairs, as fit checks it
        from training.commands.fit import check_val_images

        try:
            check_val_images(SHARED / "data" / "train", (), globs(args.val_images))
        except ValueError as e:
            parser.error(f"--val-images: {e}")
    torch.set_num_threads(1)  # tiny nets train about as fast on one thread, and timings need one
    if args.timing_only:
        space, context = get_space(args.space), base_kernel(args.space)
        teacher = load(teacher_file(space.teacher))
        models = {name: build("conv", space.channels, **design) for name, design in designs(space.channels, context).items()}
        rows = {name: None for name in models}
    else:
        space, teacher_obj, pairs, validation, data, context = space_data(args.space, args.count, globs(args.val_images))
        teacher = teacher_obj.decoder
        # a fixed budget for every design
        training = Training(steps=args.steps, batch=args.batch, lr=args.lr, patience=args.steps)
        models, rows, dead = {}, {}, {}
        for name, design in designs(space.channels, context).items():
            progress(f"{args.space}: {name}")
            models[name] = fit(teacher_obj, "conv", pairs, space=args.space, args=design, device="cpu", training=training,
                               validation=validation)
            (rows[name],) = evaluate({name: models[name]}, data, progress=False)
            dead[name] = dead_relus(models[name], data.clean)
    x = torch.randn(1, space.channels, 64, 64)
    progress(f"{args.space}: timing the designs in turns with the teacher, then the full VAE decode")
    seconds = interleaved_seconds({"teacher": teacher, **models}, x)
    teacher_s = seconds.pop("teacher")
    vae_label, vae = full_vae(space.channels)
    vae_s = median_seconds(lambda: run_vae(vae, x), torch.device("cpu"), budget_s=0.0, min_repeats=3)
    vae = None  # free the full VAE before the next space

    def meets(name):
        return teacher_s / seconds[name] >= FLOOR["teacher"] and vae_s / seconds[name] >= FLOOR["full VAE"]

    eligible = [n for n in models if meets(n) and rows[n] is not None]
    best = max(eligible, key=lambda n: rows[n].clean["psnr"], default=None)
    if args.timing_only:
        what = ("Cost only: the designs untrained (their cost does not depend on the weights). PSNR columns: see "
                f"benchmarks/results/frontier-cpu-{args.space}.md.")
    else:
        what = (f"Every design trained with the same budget ({args.steps} Adam steps of {args.batch} at peak lr "
                f"{args.lr:g}, or least squares) "
                f"on the pairs of benchmarks/fit_weights.sh ({pairs.source['image_count']} images, {len(pairs)} "
                f"augmented {CROPS['size']}² crops), validated on "
                + (f"{len(validation) // 2} {CROPS['size']}² tiles of {args.val_images} (left out of training)"
                   if validation is not None else "a random tenth of the images")
                + f", scored on {len(data.clean)} 256² kodak24 tiles against {teacher_obj.name} pooled to latent "
                "resolution.")
    lines = [
        f"# Conv designs for {args.space}: quality against cost",
        "",
        f"Machine: {machine(torch.device('cpu'), torch.float32)} (timings on one thread; other work shared the CPU).  ",
        f"Run: `python -m benchmarks.frontier {shlex.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        what + " Residual designs add the net to a least-squares linear conv (`base`). Times: medians of 7 rounds "
        "timing each design and the teacher in turn. Speed floor: "
        f"≥ {FLOOR['teacher']}× faster than the teacher and ≥ {FLOOR['full VAE']:,}× faster than the full VAE "
        f"decode ({vae_label}), both at 1×{space.channels}×64², in this run. Dead ReLUs: layers (module order) that "
        "output zero on every held-out tile, so the layers behind them add only a constant (training.fit.dead_relus).",
        "",
        "| design | args | params | MACs / 64² latent | ms / 64² latent | × teacher | × full VAE | floor | "
        "PSNR clean | SSIM clean | PSNR noised | dead ReLUs |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|",
    ]
    for name, model in models.items():
        row = rows[name]
        mark = "**best within floor**" if name == best else ("yes" if meets(name) else "no")
        quality = (f"{row.clean['psnr']:.2f} | {row.clean['ssim']:.3f} | {row.noised['psnr']:.2f} | "
                   f"{', '.join(map(str, dead[name])) or 'none'}" if row is not None else "— | — | — | —")
        params = sum(p.numel() for p in model.parameters())
        lines.append(f"| {name} | `{model.args}` | {params:,} | {count_macs(run_model, model, x) / 1e6:.1f} M | "
                     f"{seconds[name] * 1000:.2f} | {teacher_s / seconds[name]:,.0f}× | {vae_s / seconds[name]:,.0f}× | "
                     f"{mark} | {quality} |")
    lines += ["", f"Teacher: {teacher_s * 1000:.0f} ms; full VAE decode: {vae_s * 1000:.0f} ms (one thread, 1×C×64²)."]
    default = f"frontier-timing-cpu-{args.space}.md" if args.timing_only else f"frontier-cpu-{args.space}.md"
    publish("\n".join(lines) + "\n", args.out or RESULTS / default)
    return 0


if __name__ == "__main__":
    sys.exit(main())
