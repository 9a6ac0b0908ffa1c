"""Day-one nets against a real trained decoder: how close the net `latent-preview fit --pipeline` trains against a
pipeline's own VAE comes to the shipped conv net, and how long the whole fit takes (issue 29's goal).

    nice -n 10 python -m benchmarks.day_one --teacher taesd [--steps 15000] [--crops 2048] [--out FILE.md]

The pipeline's VAE is diffusers' `AutoencoderTiny` holding a TAESD-family decoder's (and encoder's) real trained
weights from ../shared/models/teachers: a real decoder standing in for a new pipeline's VAE. The day-one fit runs
as `previewer="auto"` and `latent-preview fit --pipeline` run it (previewers/first_use/fit.py closed form, then
training/day_one.py), in a fresh cache folder, so pairs are encoded from scratch and timed. Then the closed form,
the day-one net and the space's shipped previewers are scored in one run on ../shared/data/kodak24 256² tiles
(never fitted on) against the same decoder loaded as a teacher (training/evaluate.py, as `benchmarks.quality`):
clean and noised, at latent resolution.
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import diffusers
import torch
from safetensors.torch import load_file

from training.shared_folder import SHARED

TEACHERS = {"taesd": ("sd1", 4, "ddpm"), "taesdxl": ("sdxl", 4, "ddpm"), "taesd3": ("sd3", 16, "flow"),
            "taef1": ("flux1", 16, "flow")}


def autoencoder_tiny(name: str) -> "diffusers.AutoencoderTiny":
    """diffusers' AutoencoderTiny holding the TAESD-family pair `name` (float32, eval)."""
    folder = SHARED / "models" / "teachers"
    channels = TEACHERS[name][1]
    vae = diffusers.AutoencoderTiny(latent_channels=channels)
    weights = {f"encoder.layers.{k}": v.float() for k, v in load_file(folder / f"{name}_encoder.safetensors").items()}
    for k, v in load_file(folder / f"{name}_decoder.safetensors").items():
        index, rest = k.split(".", 1)  # TAESD's decoder starts with its clamp layer, AutoencoderTiny's does not
        weights[f"decoder.layers.{int(index) - 1}.{rest}"] = v.float()
    vae.load_state_dict(weights)
    return vae.eval().requires_grad_(False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="taesd", choices=sorted(TEACHERS))
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default: training.day_one.net_design's)")
    parser.add_argument("--crops", type=int, default=None, help="training crops (default: training.day_one.net_design's)")
    parser.add_argument("--budget", type=float, help="wall-clock seconds for the net's fit (pairs included)")
    parser.add_argument("--count", type=int, help="kodak24 tiles to score on (default: all 144)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine two threads waiting on each other "
                             "ran 1.25 s per Adam step)")
    parser.add_argument("--out", help="also append the result to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    import previewers
    from benchmarks.timing import machine
    from previewers.first_use.fit import fitted_previewer
    from previewers.models.card import WeightCard
    from previewers.pipelines.latents import bind_vae
    from training.day_one import net_design, train_day_one_net
    from training.evaluate import evaluate, held_out, markdown
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    space, _, noise = TEACHERS[args.teacher]
    scheduler = diffusers.DDPMScheduler() if noise == "ddpm" else diffusers.FlowMatchEulerDiscreteScheduler()
    latents = bind_vae(autoencoder_tiny(args.teacher))
    design = net_design(latents.channels, latents.convention.space)
    steps = design.steps if args.steps is None else args.steps
    crops = design.crops if args.crops is None else args.crops
    cache = Path(tempfile.mkdtemp(prefix="day-one-"))
    try:
        start, cpu_start = time.perf_counter(), time.process_time()
        closed = fitted_previewer(latents, folder=cache)
        closed_s = time.perf_counter() - start
        net = train_day_one_net(latents, steps=steps, crops=crops, budget_s=args.budget, device="cpu",
                                scheduler=scheduler, folder=cache)
        total_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    decoder = SHARED / "models" / "teachers" / f"{args.teacher}_decoder.safetensors"
    teacher = load_teacher(decoder)
    held = held_out(teacher, SHARED / "data" / "kodak24", size=256, count=args.count, cache_dir=default_cache_dir(),
                    teacher_id=fingerprint(decoder))
    modules = {"day-one net": net, f"day-one closed form ({closed.family})": closed,
               **{f"shipped {name}": previewers.load(name) for name in (f"{space}-conv", f"{space}-conv-fast",
                                                                        f"{space}-affine")}}
    rows = evaluate(modules, held, progress=False)
    by_name = {r.name: r for r in rows}
    gap = by_name[f"shipped {space}-conv"].clean["psnr"] - by_name["day-one net"].clean["psnr"]
    result = net.meta["recipe"]["result"]
    command = (f"python -m benchmarks.day_one --teacher {args.teacher}"
               + (f" --steps {args.steps}" if args.steps else "") + (f" --crops {args.crops}" if args.crops else "")
               + (f" --budget {args.budget:g}" if args.budget else "") + (f" --count {args.count}" if args.count else "")
               + (f" --threads {args.threads}" if args.threads != 1 else ""))
    note = (f"`{command}` on {machine(torch.device('cpu'), torch.float32)} (niceness {os.nice(0)}, load "
            f"average {os.getloadavg()[0]:.1f} at the end).\n"
            f"Pipeline VAE: AutoencoderTiny holding {args.teacher}'s trained weights. Whole day-one fit "
            f"{total_s / 60:.1f} min wall clock, {cpu_s / 60:.1f} min of CPU time: closed form {closed_s:.0f} s (held-out crops PSNR "
            f"{WeightCard.of(closed).metrics.clean.psnr:.2f} dB), net {net.meta['recipe']['seconds']:.0f} s "
            f"({crops} crops: pairs {net.meta['recipe']['pairs_seconds']:.0f} s; {result['steps']} of {steps} Adam "
            f"steps, best at {result['best_step']}; held-out crops PSNR {WeightCard.of(net).metrics.clean.psnr:.2f} dB). "
            f"On kodak24 ({len(held.clean)} 256² tiles, latent resolution) the day-one net is {abs(gap):.2f} dB "
            f"{'below' if gap > 0 else 'above'} the shipped {space}-conv (goal: within 1 dB; whole fit under 30 min).")
    table = markdown(rows, title=f"{args.teacher}: day-one fit against AutoencoderTiny({args.teacher})", note=note)
    print(table)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
