"""Do the shipped nets overfit or underfit? Their quality on the crops they were trained on against the images
their fit held out, and kodak24.

    python -m benchmarks.generalisation [--spaces sd1,sdxl,sd3,flux1,flux2] [--families conv,upsampler]

For each shipped file, in one process: its training pairs rebuilt from its recipe (the same crops, augmentation,
excluded images and noise mix, so the fit's cache answers), split by image the way its fit split them
(training.adam.split with the file's seed and validation fraction), or, where the fit validated on named
images (`fit --val-images`), every crop against those images' tiles. Each side is scored on clean latents only,
as training.evaluate scores kodak24 (mean PSNR/SSIM per crop against the teacher's decode, clamped, at the file's
output resolution). The held-out images differ from the training ones in content, so the same is measured for
the file's closed-form base alone (a linear conv; the mlp's quadratic form; its net's last layer zeroed: it cannot
memorise). A net that memorised its crops gains more over its base on them than on the held-out images (more data
would help); one that gains as much or more on the held-out images is limited by its capacity or training.
"""

import argparse
import copy
import shlex
import sys

import torch

from benchmarks.frontier import RESULTS, teacher_and_kodak24
from benchmarks.timing import machine, progress, publish
from training.shared_folder import SHARED

SPACES = ("sd1", "sdxl", "sd3", "flux1", "flux2")
FAMILIES = ("mlp", "conv", "upsampler")  # the mlp's pairs (no illustrations, no hue change) are encoded on first use


def seen_and_held_out(pairs, training: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of `pairs`' clean samples the fit trained on and of those it held out (training.adam.split,
    with the `training` settings of the file's recipe)."""
    from training.adam import split

    seen, held = split(pairs.image, training["val_fraction"], training["seed"])
    return seen[~pairs.noised[seen]], held[~pairs.noised[held]]


def base_alone(previewer):
    """A copy of a residual previewer (`base` in its args) with its net's last layer zeroed: its least-squares base
    alone (upscaled bilinearly in an upsampler), as at the start of its fit."""
    base = copy.deepcopy(previewer)
    last = base.body.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
    return base


def measure(name: str, count: int | None) -> dict:
    """Scores of the shipped file `name` and of its linear base on the crops it trained on ("seen"), on its
    held-out images ("held out") and on kodak24, with what each set is ("... by")."""
    from previewers import load
    from previewers.models.spaces import get_space
    from training.commands.fit import validation_tiles
    from training.crops import Crops
    from training.data import make_pairs
    from training.evaluate import score

    previewer = load(name)
    recipe = previewer.meta["recipe"]
    data, space = recipe["data"], get_space(previewer.meta["space"])
    teacher, teacher_id, cache, kodak = teacher_and_kodak24(previewer.meta["teacher"], count)
    images = SHARED / "data" / "train"
    pairs = make_pairs(teacher, space.noise, images=images, exclude=tuple(data.get("excluded", ())),
                       crops=Crops(**data["crops"]), noise_mix=data["noise_mix"], cache_dir=cache,
                       teacher_id=teacher_id)

    def crops(indices):  # latents and teacher decodes (float16 in the pairs), clamped as the held-out tiles are
        return pairs.latents[indices], pairs.full[indices].float().clamp_(0, 1)

    validation = recipe.get("validation")
    if validation:  # the fit trained on every crop and validated on the tiles of the named images
        seen = torch.nonzero(~pairs.noised).flatten()
        tiles = validation_tiles(teacher, images, tuple(validation["only"]), validation["tile"], cache, teacher_id)
        held = tiles.clean, tiles.clean_rgb
        by = f"{len(tiles.clean)} tiles of {validation['image_count']} named images"
    else:
        seen, unseen = seen_and_held_out(pairs, recipe["training"])
        held = crops(unseen)
        by = f"{len(unseen)} crops of {len(pairs.image[unseen].unique())} images"
    sets = {"seen": crops(seen), "held out": held, "kodak24": (kodak.clean, kodak.clean_rgb)}
    scored = {"seen by": f"{len(seen)} crops", "held out by": by, "kodak24 by": f"{len(kodak.clean)} tiles"}
    for label, module in (("", previewer), ("base ", base_alone(previewer))):
        scored |= {label + k: score(module, *v) for k, v in sets.items()}
    return scored


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default=",".join(SPACES), help="comma-separated latent spaces")
    parser.add_argument("--families", default="conv,upsampler",
                        help=f"comma-separated trained families of {', '.join(FAMILIES)} (the mlp's own training "
                             "pairs take minutes per space to encode the first time)")
    parser.add_argument("--count", type=int, help="kodak24 tiles (default: all 144)")
    parser.add_argument("--out", help="markdown file (default: benchmarks/results/generalisation-cpu.md)")
    args = parser.parse_args(argv)
    spaces, families = args.spaces.split(","), args.families.split(",")
    for value, known, flag in ((spaces, SPACES, "--spaces"), (families, FAMILIES, "--families")):
        if unknown := [v for v in value if v not in known]:
            parser.error(f"{flag}: unknown {', '.join(unknown)} (known: {', '.join(known)})")

    torch.set_num_threads(1)
    lines = [
        "# Trained on against held out: do the shipped nets overfit?",
        "",
        f"Machine: {machine(torch.device('cpu'), torch.float32)}.  ",
        f"Run: `python -m benchmarks.generalisation {shlex.join(argv if argv is not None else sys.argv[1:])}`.",
        "",
        "Each shipped file scored on clean latents of the training crops it was fitted on, of the images its fit held "
        "out for validation (a tenth of the images, or the named photos of `--val-images`), and of kodak24, against "
        "the teacher's decode at the file's output resolution (the upsampler's: full resolution). Gap: training "
        "PSNR minus held-out PSNR. Held-out images differ from the training ones in content, so the file's "
        "least-squares linear base (its net's last layer zeroed), which cannot memorise, is measured on the same "
        "sets. Excess gain: the net's gain over its base on the training crops less that on the held-out images "
        "(the gap less the base's gap); well above zero, the net memorised its crops, at or below zero it did not.",
        "",
        "| file | PSNR / SSIM, training crops | held out | gap | base: training, held out | "
        "excess gain on training crops | kodak24 (base) | held-out set |",
        "|---|---|---|---:|---|---:|---|---|",
    ]
    for space in spaces:
        for family in families:
            name = f"{space}-{family}"
            progress(name)
            m = measure(name, args.count)
            cell = {k: f"{m[k]['psnr']:.2f} / {m[k]['ssim']:.3f}" for k in ("seen", "held out", "kodak24")}
            gap, base_gap = (m[f"{b}seen"]["psnr"] - m[f"{b}held out"]["psnr"] for b in ("", "base "))
            lines.append(f"| {name} | {cell['seen']} ({m['seen by']}) | {cell['held out']} | {gap:+.2f} | "
                         f"{m['base seen']['psnr']:.2f}, {m['base held out']['psnr']:.2f} | "
                         f"{gap - base_gap:+.2f} | {cell['kodak24']} ({m['base kodak24']['psnr']:.2f}; "
                         f"{m['kodak24 by']}) | {m['held out by']} |")
    publish("\n".join(lines) + "\n", args.out or RESULTS / "generalisation-cpu.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
