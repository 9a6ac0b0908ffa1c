"""Choosing a preview method: quality and cost of each, side by side, from one run.

    python -m benchmarks.methods --space sd1 --threads 1     # writes benchmarks/results/methods-cpu-sd1.md

The methods users know from other tools (issue 12): a factor table (our `affine`), the `conv`
previewer, the `upsampler`, a TAESD-family decoder and the full VAE. In one process:
- quality against the space's TAESD-family teacher (../shared) on 256² tiles of kodak24, clean
  and noised (z = 0.5·z + 0.5·ε), scored at full resolution for every method (latent-resolution
  outputs bicubic-upscaled 8x, as a viewer shows them) and at the method's own output resolution
  (the teacher's decode area-pooled to it, as in benchmarks/quality.py); beside them the ceiling
  of any latent-resolution preview: the teacher's decode pooled 8x and upscaled back;
- cost: median time of one 1×C×64² preview (a 512² image), as a multiple of the full-size diffusers
  VAE decode of the same latents (random weights, benchmarks/reference.py), and multiply-accumulates.
The teachers here ARE TAESD-family decoders: TAESD's quality against them is the reference (it is
the teacher), not a measurement of TAESD against the full VAE. The full VAE's quality cannot be
scored here (no full VAE weights are reachable); by construction it is the pipeline's final image.
"""

import argparse
import datetime
import sys
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch
import torch.nn.functional as F

from benchmarks.quality import SHARED, teacher_file
from benchmarks.reference import decoder_parameters, full_vae
from benchmarks.speed import RESULTS, Row, measure_cost, ratio, run_model, run_vae, si, times
from benchmarks.timing import machine, progress, publish
from previewers import SPACES, load
from training.evaluate import METRICS, held_out, score

# (method, how users know it, registry family): the shipped previewer of the space for each family
SHIPPED_METHODS = (
    ("factor table", "ComfyUI latent2rgb, A1111 Approx cheap, sd.cpp proj", "affine"),
    ("conv", "our latent-resolution conv net", "conv"),
    ("upsampler", "our tiny 8x decoder", "upsampler"),
)
TIMING = dict(budget_s=1.0, min_repeats=3)
VAE_TIMING = dict(budget_s=0.0, min_repeats=1)  # tens of seconds a call on one CPU thread
QUICK_TIMING = dict(budget_s=0.0, min_repeats=1)


class Upscaled(torch.nn.Module):
    """A previewer's output bicubic-upscaled to full resolution (8x latents), clamped as a display shows it."""

    scale = 8

    def __init__(self, previewer):
        super().__init__()
        self.previewer = previewer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.previewer(x)
        factor = self.scale // self.previewer.scale
        return y if factor == 1 else F.interpolate(y, scale_factor=factor, mode="bicubic").clamp_(0, 1)


@dataclass
class Method:
    """One line of the table: how users know the method, its quality (None where it is not measured) and its cost."""

    method: str
    known_as: str
    cost: Row  # benchmarks/speed.py's: previewer label, output, params, MACs and seconds at the one setting
    full: dict | None = None  # {"clean": metrics, "noised": metrics} at full resolution
    own: dict | None = None  # at the method's own output resolution


def methods(space: str) -> list[tuple[str, str, str, torch.nn.Module]]:
    """(method, known as, previewer label, module) for the space: shipped families, then its TAESD decoder file."""
    found = []
    for method, known_as, family in SHIPPED_METHODS:
        name = f"{space}-{family}"
        found.append((method, known_as, name, load(name)))
    path = teacher_file(SPACES[space].teacher)
    found.append(("TAESD", "A1111/Forge, ComfyUI, SD.Next TAESD, sd.cpp tae", path.name, load(path)))
    return found


def ceiling(data) -> dict:
    """Best any latent-resolution preview can do at full resolution: the teacher's decode pooled 8x, upscaled back."""
    out = {}
    for kind, rgb in (("clean", data.clean_rgb), ("noised", data.noised_rgb)):
        up = F.interpolate(F.avg_pool2d(rgb, 8), scale_factor=8, mode="bicubic").clamp(0, 1)
        out[kind] = {k: round(float(metric(up, rgb).mean()), 4) for k, metric in METRICS.items()}
    return out


@torch.inference_mode()
def measure(space: str, count: int, side: int, quick: bool) -> tuple[list[Method], dict, str, int]:
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    path = teacher_file(SPACES[space].teacher)
    teacher = load_teacher(path)
    progress(f"{space}: held-out tiles with {teacher.name}")
    data = held_out(teacher, SHARED / "data" / "kodak24", count=count, cache_dir=default_cache_dir(),
                    teacher_id=fingerprint(path), progress=False)
    channels = SPACES[space].channels
    setting = (1, side)
    latents = {setting: torch.randn(1, channels, side, side, generator=torch.Generator().manual_seed(0))}
    cpu = torch.device("cpu")
    rows = []
    for method, known_as, label, module in methods(space):
        progress(f"{space}: {method} ({label})")
        kind = "teacher" if method == "TAESD" else "previewer"
        cost = Row(label, kind, getattr(module, "family", None), sum(p.numel() for p in module.parameters()),
                   f"{module.scale}×" if module.scale > 1 else "latent")
        row = Method(method, known_as, measure_cost(cost, run_model, module, latents, [setting], cpu,
                                                    QUICK_TIMING if quick else TIMING))
        if method != "TAESD":  # TAESD is the teacher: its score against itself is the reference, not a measurement
            upscaled = Upscaled(module)
            row.full = {"clean": score(upscaled, data.clean, data.clean_rgb),
                        "noised": score(upscaled, data.noised, data.noised_rgb)}
            row.own = {"clean": score(module, data.clean, data.clean_rgb),
                       "noised": score(module, data.noised, data.noised_rgb)}
        rows.append(row)
    label, vae = full_vae(channels)
    progress(f"{space}: full VAE decode ({label}, random weights)")
    cost = Row(f"{label} (random weights)", "full VAE", None, decoder_parameters(vae), "8×")
    rows.append(Method("full VAE", "A1111/SD.Next Full, sd.cpp vae: the pipeline's own decode",
                       measure_cost(cost, run_vae, vae, latents, [setting], cpu, QUICK_TIMING if quick else VAE_TIMING)))
    return rows, ceiling(data), teacher.name, len(data.clean)


def cell(metrics: dict | None, key: str, fmt: str) -> str:
    if metrics is None:
        return "—"
    return f"{metrics['clean'][key]:{fmt}} / {metrics['noised'][key]:{fmt}}"


def report(space: str, rows: list[Method], limit: dict, teacher: str, tiles: int, side: int, command: str,
           quick: bool) -> str:
    vae, setting = rows[-1].cost, (1, side)
    c = SPACES[space].channels
    lines = [
        f"# Preview methods for {space}: quality and cost from one run", "",
        *(["**Quick run (--quick): tiny latents, few tiles and repeats, the numbers mean nothing.**", ""] if quick else []),
        f"Machine: {machine(torch.device('cpu'), torch.float32)}.  ",
        f"Run: `{command}` on {datetime.date.today().isoformat()}.", "",
        f"Quality: {tiles} 256² tiles of kodak24 against {teacher}, the space's TAESD-family teacher; cells are clean / "
        "noised (z = 0.5·z + 0.5·ε). \"Full res\": every method at the image's resolution (latent-resolution outputs "
        "bicubic-upscaled 8x, as a viewer shows them); \"own res\": against the teacher's decode area-pooled to the "
        "method's output. Cost: median time of one "
        f"1×{c}×{side}² preview ({8 * side}² image) on the CPU, every method in this process, as a multiple of the full "
        "VAE decode of the same latents, and multiply-accumulates per preview (torch.utils.flop_counter).",
        "",
        f"The teacher here is {teacher}, a TAESD-family decoder: TAESD's row is the reference the others are scored "
        "against, not a measurement of TAESD against the full VAE (no full VAE weights are reachable here). The full VAE's picture is by construction the "
        "pipeline's final image; only its cost is measured, with random weights (cost does not depend on them).",
        "",
        "| method | known as | previewer | output | params | PSNR full res | SSIM full res | ΔE00 full res "
        "| PSNR own res | MACs | × faster than full VAE | share of a full VAE decode |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.method == "TAESD":
            quality = ["reference (is the teacher)"] * 3 + ["—"]
        elif r.method == "full VAE":
            quality = ["exact (the final image)"] + ["—"] * 3
        else:
            quality = [cell(r.full, "psnr", ".2f"), cell(r.full, "ssim", ".3f"), cell(r.full, "ciede2000", ".2f"),
                       cell(r.own, "psnr", ".2f")]
        speedup = ratio(vae, r.cost, setting)
        lines.append(f"| {r.method} | {r.known_as} | {r.cost.label} | {r.cost.output} | {si(r.cost.params)} | "
                     + " | ".join(quality) + f" | {si(r.cost.macs)} | {times(speedup)} | {100 / speedup:.3g}% |")
    lines += [
        f"| ceiling of any latent-res preview | the teacher's decode pooled 8x, bicubic back | — | latent | — | "
        f"{cell(limit, 'psnr', '.2f')} | {cell(limit, 'ssim', '.3f')} | {cell(limit, 'ciede2000', '.2f')} | — | — | — | — |",
        "",
        "A full-resolution method earns its cost only above the ceiling row. Absolute times are left out on the CPU "
        "(a shared machine; DESIGN.md, Measuring): compare ratios.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.methods", description=__doc__.splitlines()[0])
    parser.add_argument("--space", choices=tuple(SPACES), default="sd1", help="latent space")
    parser.add_argument("--count", type=int, default=6, help="held-out 256² kodak24 tiles")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); 1 gives steadier ratios")
    parser.add_argument("--out", type=Path, help="markdown file to write (default benchmarks/results/methods-cpu-<space>.md)")
    parser.add_argument("--quick", action="store_true", help="2 tiles, 4² latents, one repeat: checks that it runs")
    args = parser.parse_args(argv)

    diffusers.utils.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    count, side = (2, 4) if args.quick else (args.count, 64)
    rows, limit, teacher, tiles = measure(args.space, count, side, args.quick)
    command = "python -m benchmarks.methods " + " ".join(sys.argv[1:] if argv is None else argv)
    publish(report(args.space, rows, limit, teacher, tiles, side, command.strip(), args.quick),
            args.out or RESULTS / f"methods-cpu-{args.space}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
