"""Why InvokeAI's SDXL preview scores above our `sdxl-affine`: its factors, or the fixed 3x3 smoothing it applies
after them? Issue 29's goal is `affine` at or above every published table; that entry is a table and a blur, one
linear 3x3 conv of the latent (training/factor_tables.py), so it is scored here apart and together, beside our affine
map with the same blur and our `conv-fast` (a linear 3x3 conv fitted by least squares: the same cost).

    python -m benchmarks.smoothing [--count 48] [--out benchmarks/results/smoothing-cpu-sdxl.md]

On ../shared/data/kodak24 256² tiles (the reported held-out set, as benchmarks.quality) and on the validation photos
of ../shared/data/train (mate_*: in no per-pixel fit and not kodak24), against taesdxl.
"""

import argparse
import dataclasses
import sys

import torch

from benchmarks.timing import machine, publish
from training.shared_folder import SHARED

TABLE = "sdxl/invokeai"


@torch.no_grad()
def smoothed(previewer, kernel: torch.Tensor):
    """An affine previewer followed by `kernel` (3, 3) on each RGB channel, as one linear 3x3 conv (the bias
    scaled by the kernel's sum, as factor_tables.as_previewer builds InvokeAI's)."""
    from previewers.models.families import conv

    out = conv(previewer.latent_channels, channels=(), kernels=(3,))
    layer = out.body[0]
    weight = previewer.body.weight * previewer.in_scale.view(1, -1, 1, 1)  # (3, C, 1, 1) on model-space latents
    bias = previewer.body.bias + (previewer.body.weight[:, :, 0, 0] * previewer.in_shift).sum(1)
    layer.weight.copy_(weight * kernel)
    layer.bias.copy_((bias - 0.5) * kernel.sum() + 0.5)
    out.meta = {}
    return out.eval()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=48, help="tiles per set (default 48, as benchmarks.quality)")
    parser.add_argument("--out", default="benchmarks/results/smoothing-cpu-sdxl.md", help="markdown file to write")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    import previewers
    from benchmarks.quality import teacher_file
    from training.evaluate import evaluate, held_out, markdown
    from training.factor_tables import TABLES, as_previewer
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    table = TABLES[TABLE]
    kernel = torch.tensor(table.smooth)
    ours = previewers.load("sdxl-affine")
    modules = {
        "invokeai table, smoothed (as InvokeAI shows it)": as_previewer(table),
        "invokeai factors alone": as_previewer(dataclasses.replace(table, smooth=None)),
        "sdxl-affine": ours,
        "sdxl-affine, smoothed with InvokeAI's kernel": smoothed(ours, kernel),
        "sdxl-conv-fast": previewers.load("sdxl-conv-fast"),
    }
    path = teacher_file("taesdxl")
    teacher = load_teacher(path)
    sets = {"kodak24": dict(images=SHARED / "data" / "kodak24"),
            "validation photos (mate_*)": dict(images=SHARED / "data" / "train", only=("mate_*",))}
    tables = []
    for label, where in sets.items():
        data = held_out(teacher, count=args.count, cache_dir=default_cache_dir(), teacher_id=fingerprint(path),
                        **where)
        rows = evaluate(modules, data, progress=False)
        note = (f"{len(data.clean)} 256² tiles of {label} against {teacher.name}, one run on "
                f"{machine(torch.device('cpu'), torch.float32)}. `python -m benchmarks.smoothing --count {args.count}`.")
        tables.append(markdown(rows, title=f"SDXL: InvokeAI's table and smoothing, on {label}", note=note))
    publish("\n".join(tables), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
