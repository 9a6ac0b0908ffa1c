"""Per-pixel training mixes chosen on held-out photos: candidate weight files beside the shipped per-pixel files and
the space's per-pixel peers, scored in one process on validation photos and on kodak24.

    python -m benchmarks.per_pixel_mix --space sdxl FILE [FILE ...] [--out benchmarks/results/per-pixel-mix-cpu-sdxl.md]

Each candidate is a `latent-preview fit` file fitted with the validation photos left out (`--val-images`, the same
globs): its row names the recipe its metadata records. Validation: up to 256 unaugmented 128² tiles of those photos in
../shared/data/train (the tiles `--val-images` early-stops on); kodak24: its 144 256² tiles (the reported held-out
set, as benchmarks.quality). PSNR clean / noised at latent resolution against the space's TAESD-family decoder. The
shipped files saw the validation photos: their validation column is not held out.
"""

import argparse
import re
import sys
from pathlib import Path

import torch

from benchmarks.timing import machine, publish
from previewers.models.spaces import SPACES
from training.shared_folder import SHARED

PER_PIXEL = ("affine", "quadratic", "mlp")


def recipe(meta: dict) -> str:
    """What a fit file's metadata says its training mix was, in a few words."""
    r = meta.get("recipe") or {}
    data, training = r.get("data") or {}, r.get("training") or {}
    crops = data.get("crops", {})
    parts = [meta.get("family", "?")]
    if hidden := meta.get("args", {}).get("hidden"):
        parts[0] += " " + "-".join(map(str, hidden))
    parts.append(f"{data.get('image_count', '?')} images, {crops.get('count', '?')} crops")
    parts.append(f"noise mix {data.get('noise_mix', '?')}")
    if crops.get("dihedral", 0) == 0 and crops.get("contrast", 0) == 0:
        parts.append("no augmentation")
    if training.get("steps") == 0:
        parts.append("0 Adam steps (its least-squares base)")
    elif training:
        parts.append(f"lr {training['lr']:g}, best step {(r.get('result') or {}).get('best_step')}")
    return ", ".join(parts)


def validation_globs() -> str:
    """The photos the per-pixel and flux1 fits validate on, as benchmarks/validation_images.sh names them."""
    text = (Path(__file__).parent / "validation_images.sh").read_text()
    return re.search(r"^flux1_val_images='([^']+)'", text, re.MULTILINE).group(1)


def per_pixel_peers(space: str) -> dict:
    """The space's peer previewers that map each latent pixel to one colour: birchlabs' MLPs."""
    from training.evaluate import baselines

    return {name: m for name, m in baselines(space).items() if m.meta.get("peer", "").startswith("birchlabs")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="candidate weight files (latent-preview fit --out)")
    parser.add_argument("--space", required=True, choices=tuple(SPACES))
    parser.add_argument("--val-images", default=validation_globs(),
                        help="globs of ../shared/data/train the candidates left out (default: validation_images.sh's)")
    parser.add_argument("--out", type=Path, help="markdown file (default benchmarks/results/per-pixel-mix-cpu-SPACE.md)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import previewers
    from benchmarks.quality import teacher_file
    from training.evaluate import evaluate, held_out
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such weight file: {', '.join(missing)}")
    candidates = {str(f): previewers.load(f) for f in args.files}
    wrong = [f"{name} ({m.meta.get('space')})" for name, m in candidates.items() if m.meta.get("space") != args.space]
    if wrong:
        parser.error(f"not {args.space} files: {', '.join(wrong)}")
    shipped = {f"shipped {args.space}-{f}": previewers.load(f"{args.space}-{f}") for f in PER_PIXEL}
    modules = {**per_pixel_peers(args.space), **shipped, **candidates}

    path = teacher_file(SPACES[args.space].teacher)
    teacher = load_teacher(path)
    cache = dict(cache_dir=default_cache_dir(), teacher_id=fingerprint(path))
    globs = tuple(args.val_images.split(","))
    sets = {"validation": held_out(teacher, SHARED / "data" / "train", size=128, count=256, only=globs, **cache),
            "kodak24": held_out(teacher, SHARED / "data" / "kodak24", **cache)}
    scores = {label: {r.name: r for r in evaluate(modules, data)} for label, data in sets.items()}

    def cells(name: str) -> str:
        return " | ".join(f"{scores[s][name].clean['psnr']:.2f} / {scores[s][name].noised['psnr']:.2f}" for s in sets)

    lines = [f"## {args.space}: per-pixel training mixes on held-out photos", "",
             f"Validation: {len(sets['validation'].clean)} 128² tiles of `{args.val_images}` (../shared/data/train, "
             f"left out of every candidate's fit); kodak24: {len(sets['kodak24'].clean)} 256² tiles. PSNR dB clean / "
             f"noised at latent resolution against {teacher.name}; one run on {machine(torch.device('cpu'), torch.float32)}. "
             f"`python -m benchmarks.per_pixel_mix --space {args.space} FILES`.", "",
             "| previewer | training mix | validation clean / noised | kodak24 clean / noised |", "|---|---|---|---|"]
    for name, module in modules.items():
        mix = "(published)" if name.endswith("(peer)") else recipe(module.meta)
        if name in shipped:
            mix += " (saw the validation photos)"
        lines.append(f"| {name} | {mix} | {cells(name)} |")
    publish("\n".join(lines) + "\n", args.out or Path(f"benchmarks/results/per-pixel-mix-cpu-{args.space}.md"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
