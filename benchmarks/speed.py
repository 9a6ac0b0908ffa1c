"""Speed of the previewers beside the teacher decoder and the full VAE decode (issue 6, DESIGN.md "Measuring").

    python -m benchmarks.speed --device cpu                 # writes benchmarks/results/speed-cpu.md
    python -m benchmarks.speed --device cuda --dtype float16

In one process, on the same latents and device: every previewer of each latent space (the
shipped ones; families with none shipped are built with their default arguments) at latents
1×C×64², 4×C×64², 1×C×128², 4×C×128²; the space's TAESD-family teacher decoder on the same
latents; and a full-size diffusers VAE decode (random weights, benchmarks/reference.py) of the
1×C×64² latents. Reports how many times faster each model is than the full VAE decode and than
the teacher, its parameters and its multiply-accumulates per preview; absolute times only on a
GPU (DESIGN.md, "Measuring": on the shared CPU only ratios are meaningful).
"""

import argparse
import copy
import datetime
import sys
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.reference import decoder_parameters, full_vae
from benchmarks.timing import machine, median_seconds, progress, publish
from previewers import FAMILIES, SPACES, Previewer, available, build, load
from training.adam import resolve_device
from training.shared_folder import SHARED

TEACHERS = SHARED / "models" / "teachers"
RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

SETTINGS = ((1, 64), (4, 64), (1, 128), (4, 128))  # (batch, latent side); the first is the reference setting
QUICK_SETTINGS = ((1, 4), (2, 4))  # the smoke test's: seconds for the whole run
TIMING = dict(budget_s=1.0, min_repeats=3)  # per measurement: about a second, at least 3 calls however slow
QUICK_TIMING = dict(budget_s=0.0, min_repeats=1)

# Issue 6 targets at 1×C×64²: (family, compared with, at least this many times faster).
TARGETS = {
    "linear": ("full VAE", 100_000), "affine": ("full VAE", 100_000),
    "quadratic": ("full VAE", 10_000), "mlp": ("full VAE", 10_000),
    "conv": ("full VAE", 5_000), "upsampler": ("teacher", 4),
}


@dataclass
class Row:
    """What one model costs: its size, multiply-accumulates per preview and median seconds per call."""

    label: str
    kind: str  # "previewer", "teacher" or "full VAE"
    family: str | None
    params: int
    output: str  # output resolution relative to the latents
    macs: int = 0  # per preview at the reference setting
    seconds: dict = field(default_factory=dict)  # (batch, side) → median seconds per call


def previewers_for(space: str) -> list[tuple[str, Previewer]]:
    """The previewers benchmarked for `space`: every shipped `<space>-<family>[-<variant>]`, and each
    family with none shipped built with its default arguments (its cost does not depend on weights)."""
    try:
        names = [n for n in available() if n.split("-")[0] == space]
    except FileNotFoundError:  # a checkout without weights/
        names = []
    found = [(name, load(name)) for name in names]
    shipped = {p.family for _, p in found}
    found += [(f"{family} (default args)", build(family, SPACES[space].channels))
              for family in FAMILIES if family not in shipped]
    return found


def teacher_for(space: str, device: torch.device):
    """(name, decoder) of the space's teacher from ../shared, or None when it is not there; the decoder
    as a previewer (`previewers.load` of the TAESD file), so the row is what the callback runs."""
    files = sorted(TEACHERS.glob(f"{SPACES[space].teacher}_decoder.*"))
    if not files:
        return None
    return SPACES[space].teacher, load(files[0]).to(device)


def count_macs(call, module: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of call(module, x) in convolutions and matrix products, counted by
    torch's FlopCounterMode on a meta-device copy (shapes only: no time, no memory)."""
    meta = copy.deepcopy(module).to("meta")
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        call(meta, x.to("meta"))
    return counter.get_total_flops() // 2


def run_model(model, x):
    return model(x)


def run_vae(vae, x):
    return vae.decode(x).sample


def measure_cost(row: Row, call, model, latents: dict, settings, device, timing: dict) -> Row:
    """`row` with the MACs of call(model, x) at the first setting and its median seconds at each: latents
    {(batch, side): x}."""
    row.macs = count_macs(call, model, latents[settings[0]])
    for setting in settings:
        x = latents[setting]
        row.seconds[setting] = median_seconds(lambda: call(model, x), device, **timing)
    return row


def benchmark_space(space: str, settings, device, dtype, timing: dict, progress) -> tuple[list[Row], str | None]:
    """All rows of one latent space; the note says what was skipped and why."""
    channels = SPACES[space].channels
    g = torch.Generator().manual_seed(0)
    latents = {(b, s): torch.randn(b, channels, s, s, generator=g).to(device, dtype) for b, s in settings}
    rows, note = [], None
    for label, p in previewers_for(space):
        progress(f"{space}: {label}")
        p = p.to(device, dtype).eval()
        row = Row(label, "previewer", p.family, sum(t.numel() for t in p.parameters()), f"{p.scale}×" if p.scale > 1 else "latent")
        rows.append(measure_cost(row, run_model, p, latents, settings, device, timing))
    teacher = teacher_for(space, device)
    if teacher is None:
        note = f"teacher {SPACES[space].teacher} skipped: no decoder file in {TEACHERS}"
    else:
        name, decoder = teacher
        progress(f"{space}: teacher {name}")
        decoder = decoder.to(device, dtype).eval()
        row = Row(f"{name} (teacher)", "teacher", None, sum(t.numel() for t in decoder.parameters()), "8×")
        rows.append(measure_cost(row, run_model, decoder, latents, settings, device, timing))
    label, vae = full_vae(channels, device, dtype)
    progress(f"{space}: full VAE decode ({label})")
    row = Row(f"{label} decode", "full VAE", None, decoder_parameters(vae), "8×")
    rows.append(measure_cost(row, run_vae, vae, latents, settings[:1], device, timing))  # only 1×64²: seconds per call on a CPU
    return rows, note


def si(n: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f}"


def times(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.3g}×"


def ratio(base: Row | None, row: Row, setting) -> float | None:
    if base is None or setting not in base.seconds or setting not in row.seconds:
        return None
    return base.seconds[setting] / row.seconds[setting]


def setting_name(setting, channels: int | str = "C") -> str:
    b, s = setting
    return f"{b}×{channels}×{s}²"


def space_table(space: str, rows: list[Row], settings, with_times: bool) -> list[str]:
    vae = next(r for r in rows if r.kind == "full VAE")
    teacher = next((r for r in rows if r.kind == "teacher"), None)
    ref, c = settings[0], SPACES[space].channels
    head = ["model", "output", "params", f"MACs at {setting_name(ref, c)}", f"× full VAE, {setting_name(ref, c)}"]
    head += [f"× teacher, {setting_name(s, c)}" for s in settings]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.label, r.output, si(r.params), si(r.macs), times(ratio(vae, r, ref))]
        cells += [times(ratio(teacher, r, s)) for s in settings]
        lines.append("| " + " | ".join(cells) + " |")
    if with_times:
        head = ["model"] + [f"ms, {setting_name(s, c)}" for s in settings]
        lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rows:
            lines.append("| " + " | ".join([r.label] + [f"{r.seconds[s] * 1e3:.3g}" if s in r.seconds else "—" for s in settings]) + " |")
    return lines


def target_lines(results: dict, settings) -> list[str]:
    ref = settings[0]
    lines = ["| space | previewer | target | measured | met |", "|---|---|---|---|---|"]
    for space, (rows, _) in results.items():
        base = {r.kind: r for r in rows if r.kind != "previewer"}
        for r in rows:
            if r.family not in TARGETS:
                continue
            against, wanted = TARGETS[r.family]
            got = ratio(base.get(against), r, ref)
            met = "—" if got is None else ("yes" if got >= wanted else f"no ({got / wanted:.2f} of target)")
            lines.append(f"| {space} | {r.label} | ≥ {wanted:,}× vs {against} | {times(got)} | {met} |")
    return lines


def report(results: dict, settings, device, dtype, command: str, quick: bool) -> str:
    ref = setting_name(settings[0])
    lines = [
        "# Speed: previewers beside the teacher decoder and the full VAE decode", "",
        *(["**Quick run (--quick): tiny latents and few repeats, the numbers mean nothing.**", ""] if quick else []),
        f"Machine: {machine(device, dtype)}.  ",
        f"Run: `{command}` on {datetime.date.today().isoformat()}.", "",
        "Medians over repeats after warm-up, every model in one process on the same latents and device. "
        f"\"× full VAE\": how many times faster than the full-size VAE decode of the same {ref} latents "
        "(random weights, configs in benchmarks/reference.py); \"× teacher\": than the TAESD-family teacher "
        "decoder on the same latents. MACs: multiply-accumulates per preview in convolutions and matrix "
        "products (elementwise work excluded), counted by torch.utils.flop_counter. \"(default args)\": a "
        "family with no shipped weights for the space, built with its default arguments (cost does not "
        "depend on the weight values).",
    ]
    if device.type != "cuda":
        lines.append("Absolute times are left out on the CPU (a shared machine; DESIGN.md, Measuring): compare ratios.")
    for space, (rows, note) in results.items():
        info = SPACES[space]
        vae = next(r for r in rows if r.kind == "full VAE")
        lines += ["", f"## {space}: {info.channels}-channel latents ({info.pipelines}); full VAE: {vae.label.removesuffix(' decode')}", ""]
        if note:
            lines += [f"Note: {note}.", ""]
        lines += space_table(space, rows, settings, device.type == "cuda")
    lines += ["", f"## Targets (issue 6, at {ref})", ""] + target_lines(results, settings)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--spaces", nargs="+", choices=tuple(SPACES), default=list(SPACES))
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); 1 gives steadier ratios on a busy machine")
    parser.add_argument("--out", type=Path, help="markdown table to write (default benchmarks/results/speed-<device>[-<dtype>].md)")
    parser.add_argument("--quick", action="store_true", help="tiny latents and few repeats: checks that it runs, numbers mean nothing")
    args = parser.parse_args(argv)

    diffusers.utils.logging.set_verbosity_error()  # its fp16-cast advice for from_pretrained does not apply
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), DTYPES[args.dtype]
    settings, timing = (QUICK_SETTINGS, QUICK_TIMING) if args.quick else (SETTINGS, TIMING)
    suffix = "" if args.dtype == "float32" else f"-{args.dtype}"
    out = args.out or RESULTS / f"speed-{device.type}{suffix}.md"

    results = {}
    with torch.inference_mode():
        for space in args.spaces:
            results[space] = benchmark_space(space, settings, device, dtype, timing, progress)
    command = "python -m benchmarks.speed " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(results, settings, device, dtype, command.strip(), args.quick)
    publish(text, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
