"""Day-one nets against a real trained decoder: how close the net `latent-preview fit --pipeline` trains against a
pipeline's own VAE comes to the shipped conv net, and how long the whole fit takes (issue 29's goal).

    nice -n 10 python -m benchmarks.day_one --teacher taesd [--steps 15000] [--crops 2048] [--device cuda]
        [--fit-images N] [--validate 'mate_*'] [--upsampler] [--out FILE.md]

The pipeline's VAE is diffusers' `AutoencoderTiny` holding a TAESD-family decoder's (and encoder's) real trained
weights from ../shared/models/teachers: a real decoder standing in for a new pipeline's VAE. The day-one fit runs
as `previewer="auto"` and `latent-preview fit --pipeline` run it (previewers/first_use/fit.py closed form, then
training/day_one.py), on `--device`, in a fresh cache folder, so pairs are encoded from scratch and timed. Then the
closed form, the day-one net and the space's shipped previewers are scored in one run against the same decoder
loaded as a teacher (training/evaluate.py, as `benchmarks.quality`), clean and noised, at latent resolution: on
../shared/data/kodak24 256² tiles (the reported held-out set, never fitted on) and on the `--validate` photos of
../shared/data/train (default the 12 mate_* photos: in neither the package's fit photos nor kodak24), the set
choices are made by.

`--upsampler` also trains the day-one upsampler (`latent-preview fit --pipeline DIR --upsampler`: the design
benchmarks/fit_upsampler.sh ships, on the net's pairs, with the same --steps, --crops and --budget) and scores it
at full resolution beside the shipped upsampler, both pooled and upscaled latent-resolution previews, and the
ceiling (training/full_res.py); meant for a GPU (50 minutes on the 2-core CPU).

`--fit-images N` trains the net on N of the package's 16 training photos (a seeded draw; the smaller sets are
subsets of the larger), to size the photo set a day-one fit needs; the closed form and the held-out crops stay
those of the package.
"""

import argparse
import os
import shlex
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


def fit_photos(count: int, folder: Path) -> Path:
    """`folder` filled with links to `count` of the package's training photos (a seeded draw: smaller sets are
    subsets of larger ones)."""
    from previewers.first_use.fit import HELD_OUT, IMAGES, image_names

    names = [n for n in image_names() if n not in HELD_OUT]
    if not 1 <= count <= len(names):
        raise SystemExit(f"--fit-images: between 1 and {len(names)} (the package's training photos), got {count}")
    order = torch.randperm(len(names), generator=torch.Generator().manual_seed(0)).tolist()
    folder.mkdir()
    for i in order[:count]:
        (folder / f"{names[i]}.jpg").symlink_to(IMAGES / f"{names[i]}.jpg")
    return folder


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", default="taesd", choices=sorted(TEACHERS))
    parser.add_argument("--steps", type=int, default=None, help="Adam steps (default: training.day_one.net_design's)")
    parser.add_argument("--crops", type=int, default=None, help="training crops (default: training.day_one.net_design's)")
    parser.add_argument("--budget", type=float, help="wall-clock seconds for the net's fit (pairs included)")
    parser.add_argument("--device", default="cpu", help="where the VAE encodes and decodes and Adam runs (default cpu)")
    parser.add_argument("--fit-images", type=int, metavar="N",
                        help="train the net on N of the package's 16 training photos (default: all)")
    parser.add_argument("--validate", default="mate_*",
                        help="comma-separated globs of ../shared/data/train photos to score on besides kodak24 "
                             "(default mate_*; '' for none)")
    parser.add_argument("--upsampler", action="store_true",
                        help="also train the day-one upsampler (about 50 min on a 2-core CPU) and score it "
                             "at full resolution")
    parser.add_argument("--upsampler-steps", type=int,
                        help="the upsampler's Adam steps (default: --steps, else training.day_one.upsampler_design's)")
    parser.add_argument("--count", type=int, help="tiles per scoring set (default: all; kodak24 has 144)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on a shared machine two threads waiting on each other "
                             "ran 1.25 s per Adam step)")
    parser.add_argument("--out", help="also append the result to this markdown file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["LATENT_PREVIEW_FIRST_USE_NET"] = "0"  # the net is trained below, with this run's schedule

    import previewers
    from benchmarks.timing import machine
    from previewers.first_use.fit import HELD_OUT, IMAGES, best_entry, cached_entries, fitted_previewer
    from previewers.models.card import WeightCard
    from previewers.pipelines.latents import bind_vae
    from training.day_one import net_design, train_day_one_net, train_day_one_upsampler
    from training.evaluate import evaluate, held_out, markdown
    from training.full_res import comparison
    from training.pair_cache import default_cache_dir, fingerprint
    from training.teachers import load_teacher

    device = torch.device(args.device)
    space, _, noise = TEACHERS[args.teacher]
    scheduler = diffusers.DDPMScheduler() if noise == "ddpm" else diffusers.FlowMatchEulerDiscreteScheduler()
    latents = bind_vae(autoencoder_tiny(args.teacher).to(device))
    design = net_design(latents.channels, latents.convention.space)
    steps = design.steps if args.steps is None else args.steps
    crops = design.crops if args.crops is None else args.crops
    cache = Path(tempfile.mkdtemp(prefix="day-one-"))
    try:
        photos = IMAGES if args.fit_images is None else fit_photos(args.fit_images, cache / "photos")
        start, cpu_start = time.perf_counter(), time.process_time()
        closed = fitted_previewer(latents, folder=cache)
        closed_s = time.perf_counter() - start
        net = train_day_one_net(latents, steps=steps, crops=crops, budget_s=args.budget, device=device,
                                scheduler=scheduler, folder=cache, images=photos)
        up = None if not args.upsampler else train_day_one_upsampler(
            latents, steps=args.upsampler_steps or args.steps, crops=crops, budget_s=args.budget, device=device,
            scheduler=scheduler, folder=cache, images=photos)
        chosen = best_entry(cached_entries(latents, cache))
        total_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu_start
        trained_on = sorted(p.stem for p in photos.glob("*.jpg") if p.stem not in HELD_OUT)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    decoder = SHARED / "models" / "teachers" / f"{args.teacher}_decoder.safetensors"
    teacher = load_teacher(decoder, device=str(device))
    sets = {"kodak24": held_out(teacher, SHARED / "data" / "kodak24", size=256, count=args.count,
                                cache_dir=default_cache_dir(), teacher_id=fingerprint(decoder))}
    if args.validate:
        only = tuple(args.validate.split(","))
        sets[f"validation ({args.validate})"] = held_out(teacher, SHARED / "data" / "train", size=256,
                                                         count=args.count, cache_dir=default_cache_dir(),
                                                         teacher_id=fingerprint(decoder), only=only)
    modules = {"day-one net": net.cpu(), f"day-one closed form ({closed.family})": closed.cpu(),
               **{f"shipped {name}": previewers.load(name) for name in (f"{space}-conv", f"{space}-conv-fast",
                                                                        f"{space}-affine")}}
    if up is not None:
        modules |= {"day-one upsampler": up.cpu(), f"shipped {space}-upsampler": previewers.load(f"{space}-upsampler")}
    result = net.meta["recipe"]["result"]
    command = "python -m benchmarks.day_one " + shlex.join(argv if argv is not None else sys.argv[1:])
    fit_note = (f"`{command}` on {machine(device, torch.float32)} (niceness {os.nice(0)}, load "
                f"average {os.getloadavg()[0]:.1f} at the end).\n"
                f"Pipeline VAE: AutoencoderTiny holding {args.teacher}'s trained weights, on {device.type}. Whole "
                f"day-one fit {total_s / 60:.1f} min wall clock, {cpu_s / 60:.1f} min of CPU time: closed form "
                f"{closed_s:.0f} s (held-out crops PSNR {WeightCard.of(closed).metrics.clean.psnr:.2f} dB), net "
                f"{net.meta['recipe']['seconds']:.0f} s ({crops} crops of {len(trained_on)} photos: "
                f"{', '.join(trained_on)}; pairs {net.meta['recipe']['pairs_seconds']:.0f} s; {result['steps']} of "
                f"{steps} Adam steps, best at {result['best_step']}; held-out crops PSNR "
                f"{WeightCard.of(net).metrics.clean.psnr:.2f} dB)."
                + ("" if up is None else
                   f" Upsampler {up.meta['recipe']['seconds']:.0f} s ({up.meta['recipe']['result']['steps']} Adam "
                   f"steps, best at {up.meta['recipe']['result']['best_step']}; held-out crops PSNR "
                   f"{WeightCard.of(up).metrics.clean.psnr:.2f} dB at full resolution, pooled "
                   f"{WeightCard.of(up).metrics.full_res.pooled.clean.psnr:.2f}, ceiling "
                   f"{WeightCard.of(up).metrics.full_res.ceiling.clean.psnr:.2f}; "
                   f"{WeightCard.of(up).metrics.ms_per_64x64:.1f} ms per 64² latent against the VAE's "
                   f"{WeightCard.of(up).metrics.full_res.ceiling.teacher_ms:.1f}).")
                + f" `auto` takes the {chosen.family} (previewers/first_use/fit.py best_entry).")
    tables = []
    for label, held in sets.items():
        rows = evaluate(modules, held, progress=False)
        rows += comparison(rows, modules, teacher, held, progress=False)
        by_name = {r.name: r for r in rows}
        note = f"{fit_note}\nOn {label} ({len(held.clean)} 256² tiles)"
        for ours, shipped, what in (("day-one net", f"{space}-conv", "latent resolution; goal: within 1 dB, whole fit "
                                                                     "under 30 min on a 2-core CPU"),
                                    ("day-one upsampler", f"{space}-upsampler", "full resolution")):
            if ours in by_name:
                gap = by_name[f"shipped {shipped}"].clean["psnr"] - by_name[ours].clean["psnr"]
                note += (f" the {ours} is {abs(gap):.2f} dB {'below' if gap > 0 else 'above'} the shipped {shipped} "
                         f"({what});")
        note = note.rstrip(";") + "."
        tables.append(markdown(rows, title=f"{args.teacher}: day-one fit against AutoencoderTiny({args.teacher}), "
                                           f"scored on {label}", note=note))
        fit_note = "The same fit."
    text = "\n".join(tables)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
