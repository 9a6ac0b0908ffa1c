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
    """An affine previewer followed by `kernel` (3, 3) on each RGB channel, built as training.factor_tables builds
    InvokeAI's preview: the previewer written as a tool's table (RGB in [-1, 1] = x · factors + bias, on
    model-space latents) with the kernel as its smoothing."""
    from training.factor_tables import TABLES, as_previewer

    weight = previewer.body.weight[:, :, 0, 0]  # (3, C), display units, on normalised latents
    factors = (weight * previewer.in_scale).T * 2  # (C, 3)
    bias = (previewer.body.bias + weight @ previewer.in_shift) * 2 - 1
    table = dataclasses.replace(TABLES[TABLE], tool="latent-preview", factors=tuple(map(tuple, factors.tolist())),
                                bias=tuple(bias.tolist()), smooth=tuple(map(tuple, kernel.tolist())),
                                source="this project's affine file")
    out = as_previewer(table)
    out.meta = {}
    return out


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
