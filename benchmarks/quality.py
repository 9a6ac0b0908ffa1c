"""Held-out quality of every shipped previewer beside the published factor tables and peer models.

    python -m benchmarks.quality [--spaces sd1,sdxl,...] [--out weights/README.md]

For each space, in one process: the space's TAESD-family teacher from ../shared encodes 256² tiles
of ../shared/data/kodak24 (never used for fitting), and every shipped previewer of that space, every
published table and every peer model is scored against the teacher's decode — clean latents and
noised z = 0.5·z + 0.5·ε; latent-resolution outputs against the decode area-pooled to their size.
Writes the per-space tables and a summary (with the quality target of each space) as markdown.
"""

import argparse
import sys
from pathlib import Path

from training.shared_folder import SHARED

ROOT = Path(__file__).resolve().parents[1]
# Quality target for the best latent-resolution previewer per space (dB, clean, pooled).
TARGETS = {"sd1": 30.5, "sdxl": 32.5, "sd3": 34.5, "flux1": 33.5, "flux2": 27.5}
MLP_MARGIN = 0.2  # dB the mlp must clear over the higher of our quadratic and every peer MLP
UPSAMPLER_TARGET = 28.0


def teacher_file(name: str) -> Path:
    folder = SHARED / "models" / "teachers"
    for suffix in (".safetensors", ".pth"):
        path = folder / f"{name}_decoder{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"teacher {name} not found in {folder} (this benchmark needs the shared folder, training/shared_folder.py)")


def shipped(space: str) -> dict:
    import previewers

    return {name: previewers.load(name) for name in previewers.available() if name.split("-")[0] == space}


def measure(space: str, count: int | None):
    """(rows, note) for one space."""
    from previewers.models.spaces import get_space
    from training.evaluate import baselines, evaluate, held_out
    from training.fit import dead_relus
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    path = teacher_file(get_space(space).teacher)
    teacher = load_teacher(path)
    data = held_out(teacher, SHARED / "data" / "kodak24", count=count, cache_dir=default_cache_dir(),
                    teacher_id=fingerprint(path))
    from training.full_res import comparison

    ours = shipped(space)
    modules = {**ours, **baselines(space)}
    rows = evaluate(modules, data)
    rows += comparison(rows, modules, teacher, data)  # full-res previewers beside what latent-res ones can show
    # a ReLU that outputs zero on every tile passes nothing on: its stage adds nothing (flux1's first upsampler)
    dead = {name: layers for name, p in ours.items() if (layers := dead_relus(p, data.clean))}
    note = (f"{len(data.clean)} 256² tiles of kodak24 against {teacher.name}; PSNR/SSIM/ΔE00 on clean latents "
            "and on noised z = 0.5·z + 0.5·ε; latent-resolution outputs against the decode area-pooled to their "
            "size, full-resolution previewers (scale > 1) against the full-resolution decode, beside themselves "
            "pooled, the best "
            "latent-resolution row upscaled bicubically and the ceiling (the teacher's decode pooled and upscaled back; "
            "its ms is the teacher's); ms = median CPU time per 1×C×64² preview "
            "on one thread. Dead ReLUs (output zero on every clean tile; layer positions in module order, "
            "`training.fit.dead_relus`): "
            + ("; ".join(f"{name} {layers}" for name, layers in dead.items()) or "none") + ".")
    return rows, note


def summary(results: dict) -> str:
    lines = [
        "| space | best published table | best peer | our affine | our best latent-res | target (clean dB) | full-res previewers "
        "(full res / pooled) | best latent-res, bicubic up | ceiling |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def best(rows, kinds):
        rows = [r for r in rows if r.kind in kinds]
        return max(rows, key=lambda r: r.clean["psnr"]) if rows else None

    def cell(row, full=False):
        if row is None:
            return "—"
        return f"{row.clean['psnr']:.2f} / {row.noised['psnr']:.2f} ({row.name}{', ' + f'{row.ms:.2f} ms' if full else ''})"

    for space, (rows, _) in results.items():
        by_name = {r.name: r for r in rows}
        pooled = {r.shows: r for r in rows if r.kind == "pooled"}  # previewer name → its output pooled to latent res
        # latent resolution throughout: a peer above it (A1111's Approx NN, 2x) by its output pooled to it
        peers = [pooled.get(r.name, r) if r.scale > 1 else r for r in rows if r.kind == "peer"]
        table, peer = best(rows, {"table"}), max(peers, key=lambda r: r.clean["psnr"], default=None)
        affine = next((r for r in rows if r.name == f"{space}-affine"), None)
        ours = best([r for r in rows if r.scale == 1], {"linear", "affine", "quadratic", "mlp", "conv"})
        # source name → its bicubic upscale to full resolution (training.full_res.comparison)
        upscales = {r.shows: r for r in rows if r.kind == "bicubic upscale"}
        full = [r for r in rows if r.scale > 1 and r.kind not in ("bicubic upscale", "ceiling")]

        def full_res(r):  # a previewer below full resolution (2x) is shown, and scored, bicubic-upscaled
            shown = upscales.get(r.name, r)
            label = r.name if shown is r else f"{r.name} at {r.scale}x, bicubic ×{shown.scale // r.scale}"
            return (f"{shown.clean['psnr']:.2f} dB, SSIM {shown.clean['ssim']:.3f} / "
                    f"{pooled[r.name].clean['psnr']:.2f} ({label}, {r.ms:.2f} ms)")

        full_cell = "; ".join(full_res(r) for r in full if r.name in pooled) or "—"
        upscaled = next((u for name, u in upscales.items() if by_name[name].scale == 1), None)
        ceiling = next((r for r in rows if r.kind == "ceiling"), None)
        bar = max([TARGETS[space]] + [r.clean["psnr"] + 0.5 for r in (table, peer) if r is not None])
        met = "reached" if ours is not None and ours.clean["psnr"] >= bar else "not reached"
        lines.append(f"| {space} | {cell(table)} | {cell(peer)} | {cell(affine)} | {cell(ours, True)} | "
                     f"{bar:.1f}, {met} | {full_cell} | {cell(upscaled)} | {cell(ceiling)} |")
    return "\n".join(lines)


def mlp_summary(results: dict) -> str:
    """Our per-pixel MLP against the higher of our quadratic form and every peer MLP (birchlabs), clean dB."""
    lines = ["| space | our mlp | our quadratic | best peer MLP | target (clean dB) |", "|---|---|---|---|---|"]
    for space, (rows, _) in results.items():
        by_name = {r.name: r for r in rows}
        mlp, quadratic = by_name.get(f"{space}-mlp"), by_name.get(f"{space}-quadratic")
        peers = [r for r in rows if r.kind == "peer" and r.name.startswith("birchlabs")]
        peer = max(peers, key=lambda r: r.clean["psnr"], default=None)
        rivals = [r.clean["psnr"] for r in (quadratic, peer) if r is not None]
        if mlp is None or not rivals:
            continue
        bar = max(rivals) + MLP_MARGIN
        met = "reached" if mlp.clean["psnr"] >= bar else "not reached"
        cells = [f"{r.clean['psnr']:.2f} ({r.name})" if r is not None else "—" for r in (mlp, quadratic, peer)]
        lines.append(f"| {space} | {' | '.join(cells)} | {bar:.2f}, {met} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", default="sd1,sdxl,sd3,flux1,flux2", help="comma-separated latent spaces")
    parser.add_argument("--count", type=int, help="held-out tiles per space (default: all)")
    parser.add_argument("--out", default=str(ROOT / "weights" / "README.md"), help="markdown file to write")
    args = parser.parse_args(argv)

    import torch

    from benchmarks.timing import cpu_model
    from training.evaluate import markdown

    results = {space: measure(space, args.count) for space in args.spaces.split(",")}
    text = "\n\n".join([
        "# Shipped previewers: held-out quality",
        f"Written by `python -m benchmarks.quality` on {cpu_model()} ({torch.get_num_threads()} threads), torch {torch.__version__}. "
        "Every number below comes from that one run. Cells: PSNR dB clean / noised (name). Target: the higher of the "
        "space's quality target and every table or peer + 0.5 dB, for our best latent-resolution previewer.",
        summary(results),
        f"Per-pixel MLP: ours against the higher of our quadratic form and every peer MLP, + {MLP_MARGIN} dB (clean).",
        mlp_summary(results),
        "Published tables: ComfyUI `comfy/latent_formats.py`, AUTOMATIC1111 `modules/sd_vae_approx.py`, InvokeAI "
        "`invokeai/app/util/step_callback.py`, stable-diffusion.cpp `latent-preview.h` (figures with commits in "
        "`training/factor_tables.py`). Peers: ../shared/models/peers (birchlabs, AUTOMATIC1111 Approx NN, vaelight).",
        *(markdown(rows, title=f"{space}", note=note) for space, (rows, note) in results.items()),
    ])
    Path(args.out).write_text(text + "\n")
    print(text)
    print(f"\nwrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
