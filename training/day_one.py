"""Day-one nets: the conv net our frontier chose for a latent width, trained against a pipeline's own VAE.

`previewer="auto"` for a VAE without shipped previewers fits a closed-form map on first use
(previewers/first_use/fit.py). This module trains the net behind it, the design benchmarks/fit_weights.sh ships
for the same channel count, against the same VAE, and caches it beside the closed form (`-net`, same VAE
digest), so the next `auto` build takes whichever scores the higher PSNR on the same held-out crops.

Data: random crops of the photos in previewers/first_use/fit_images (the HELD_OUT ones left out), augmented as the
shipped conv nets' crops (flips/rotations, hue, contrast; half each), half of them noised along the space's
trajectory, encoded and decoded by the pipeline's VAE exactly as the pipeline decodes
(previewers.pipelines.latents.PipelineLatents); targets are the decodes area-pooled to latent resolution. The pairs
are cached (training/data.py, keyed by the VAE's digest), so a killed run and later fits reuse them; Adam
checkpoints beside the cache entry (`-net.safetensors.ckpt`) so `resume=True` continues a killed run.

The day-one upsampler (`train_day_one_upsampler`, cached as `-upsampler`) is the upsampler design
benchmarks/fit_upsampler.sh ships, trained the same way on the same cached pairs (their full-resolution decodes),
and scored on the held-out crops at full resolution beside the ceiling of any upscaled latent-resolution preview, so
`auto` can apply the rule it applies to shipped upsamplers. It is meant for a GPU: against a TAESD-sized VAE on a
2-core CPU it took 50 minutes (benchmarks/README.md, "First use and day-one nets").

Python: `train_day_one_net(bind(pipe))`, `train_day_one_upsampler(bind(pipe))`; command line: `latent-preview fit
--pipeline DIR [--upsampler] [--out FILE]` (training/pipeline_folder.py). Progress bars with a time-left estimate
come from tqdm.
"""

import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from previewers.first_use.cache import cache_root
from previewers.first_use.fit import (
    CROP_LATENTS,
    HELD_OUT,
    IMAGES,
    cache_path,
    first_use_metrics,
    first_use_pairs,
    mean_psnr,
    net_path,
    score,
    upsampler_path,
)
from previewers.models.card import Ceiling, FullRes, Scored, Scores
from previewers.models.spaces import get_space
from previewers.models.weightfile import save
from previewers.pipelines.latents import PipelineLatents
from training.adam import Training, resolve_device
from training.crops import Crops
from training.data import make_pairs
from training.evaluate import median_ms
from training.fit import fit
from training.teachers import Teacher

# The shipped conv designs per latent width (benchmarks/fit_weights.sh, chosen by benchmarks/results/frontier-cpu-*.md):
# a residual 32-32-32-32 net on a linear k×k conv; with 4 channels the last layer is 1x1, wider latents first mix
# to 32 channels with a 1x1 conv. flux1/flux2 trained at lr 5e-4 (at 2e-3 their deeper nets lost ReLU layers), so
# every latent wider than 16 channels that is not sd3 does too.
NARROW = {"channels": [32, 32, 32, 32], "kernels": [3, 3, 3, 3, 1], "base": 3}
WIDE = {"channels": [32, 32, 32, 32], "kernels": [1, 3, 3, 3, 3], "base": 3}
FLUX2 = {"channels": [32, 32, 32], "kernels": [1, 3, 3, 3], "base": 5}
WHY = "the conv design benchmarks/fit_weights.sh ships for this latent width (frontier-cpu-*.md)"
# The Adam schedule, per latent width: as much of the shipped nets' (2,048 crops, 15,000 steps of 64) as keeps the
# whole fit inside 30 minutes on a 2-core CPU for TAESD-sized decoders: 4-channel latents half the crops and a third
# of the steps; wider latents, whose nets were still improving there, all the crops and two thirds of the steps
# (benchmarks/results/day-one-cpu.md, benchmarks/README.md "First use and day-one nets").
NARROW_SCHEDULE = {"steps": 5000, "crops": 1024}  # crops of 128² pixels for an 8x VAE
WIDE_SCHEDULE = {"steps": 10000, "crops": 2048}
BATCH = 64
UPSAMPLER_STEPS = 10000  # fit_upsampler.sh's
UPSAMPLER_BATCH = 16  # latent crops of 16² per step (training.adam.Training.crop)
UPSAMPLER_LOSS = "l1-gradient"  # fit_upsampler.sh's (why: benchmarks/README.md, "Upsamplers")
UPSAMPLER_WHY = "the upsampler design benchmarks/fit_upsampler.sh ships for this latent width"
PATIENCE = 40
AUGMENT = 0.5
NOISE_MIX = 0.5


@dataclass(frozen=True)
class NetDesign:
    """The day-one conv net for a latent width and how it is trained."""
    args: dict  # constructor arguments of the conv family
    lr: float  # Adam's
    steps: int  # Adam steps of BATCH samples
    crops: int  # training crops the VAE encodes and decodes


def net_design(channels: int, space: str | None = None) -> NetDesign:
    """The conv net for `channels`-wide latents (`space`: the shipped space the VAE matches, if any)."""
    if space == "flux2":  # FLUX.2 latents: a 5x5 base, three layers for a speed margin (fit_weights.sh)
        return NetDesign(dict(FLUX2), 5e-4, **WIDE_SCHEDULE)
    if channels <= 4:
        return NetDesign(dict(NARROW), 2e-3, **NARROW_SCHEDULE)
    return NetDesign(dict(WIDE), 2e-3 if space == "sd3" else 5e-4, **WIDE_SCHEDULE)


def noise_of(latents: PipelineLatents, scheduler=None) -> str:
    """The noising trajectory of the training latents: the shipped space's, else the scheduler's (flow matching
    or DDPM-style), else flow (what recent pipelines use)."""
    if latents.convention.space is not None:
        return get_space(latents.convention.space).noise
    name = type(scheduler).__name__ if scheduler is not None else ""
    if name and "FlowMatch" not in name and "Flow" not in name:
        return "ddpm"
    return "flow"


def pipeline_teacher(latents: PipelineLatents) -> Teacher:
    """A training.teachers.Teacher that encodes and decodes through `latents` (the pipeline's own conversions):
    model-space (B, C, h, w) latents in, unclamped RGB about [0, 1] out; video VAEs' first frame."""
    vae = latents.vae
    if vae is None:
        raise ValueError("this pipeline has no VAE (pixel space): there is nothing to fit a previewer against")
    convention = latents.convention
    return Teacher(
        name=f"{type(vae).__name__} (the pipeline's own VAE)",
        latent_channels=latents.channels,
        scale_factor=latents.factor,
        space_info={"normalisation": convention.normalisation, "decoder": convention.decoder},
        decoder=lambda z: latents.decode_unclamped(z[:, None])[:, 0].float(),
        encoder=lambda images: latents.encode(images)[:, 0].float(),
        device=vae.device,
    )


def upsampler_design(channels: int, space: str | None, factor: int) -> NetDesign:
    """The upsampler to full resolution for `channels`-wide latents of a VAE with `factor` pixels per latent: the
    design benchmarks/fit_upsampler.sh ships (a 96-wide trunk of 3 residual blocks on the day-one net's linear base,
    pixel-shuffle stages with leaky ReLUs: 64-32-16 for 4-channel and FLUX.2 latents, 32-16-8 for sd3/flux1's 16),
    one stage per doubling, trained on the net's pairs (same crops, so its cache answers) at lr 5e-4."""
    doublings = factor.bit_length() - 1
    if factor < 2 or 1 << doublings != factor:
        raise ValueError(f"an upsampler doubles the resolution per stage; this VAE's {factor}x is not a power of two")
    net = net_design(channels, space)
    top = 64 if channels <= 4 or space == "flux2" else 32
    args = {"width": 96, "depth": 3, "stages": [max(8, top >> i) for i in range(doublings)], "upsample": "shuffle",
            "base": net.args["base"], "activation": "leaky"}
    return NetDesign(args, 5e-4, UPSAMPLER_STEPS, net.crops)


def train_day_one_net(latents: PipelineLatents, steps: int | None = None, crops: int | None = None, batch: int = BATCH,
                      lr: float | None = None, patience: int = PATIENCE, budget_s: float | None = None,
                      device: str | torch.device = "auto", resume: bool = False, scheduler=None, out=None,
                      folder: Path | None = None, images: Path = IMAGES, progress: bool = True, seed: int = 0):
    """Train the day-one conv net for the VAE behind `latents`, cache it as the closed form's `-net` sibling
    (previewers.first_use.fit.net_path) and return it.

    steps, crops, lr (defaults: net_design's for the latent width), batch, patience: the Adam schedule;
    budget_s: wall-clock seconds for the whole fit, pairs included (Adam stops at the deadline, keeping its best
    state); device: where Adam runs ("auto": CUDA when available); resume: continue a killed run from its
    checkpoint; scheduler: the pipeline's scheduler (picks the noise trajectory when the VAE matches no shipped
    space); out: also save the net there; folder: the cache folder (default cache_root()/"fitted"); images: the
    photos to train on (default: the package's; files named like the HELD_OUT photos are left out).
    meta["metrics"]["clean"]["psnr"] is measured on the same held-out crops as the closed form's.
    """
    design = net_design(latents.channels, latents.convention.space)
    return train_against_vae(latents, "conv", design, net_path, steps=steps, crops=crops, batch=batch, lr=lr,
                             patience=patience, budget_s=budget_s, device=device, resume=resume, scheduler=scheduler,
                             out=out, folder=folder, images=images, progress=progress, seed=seed)


def train_day_one_upsampler(latents: PipelineLatents, steps: int | None = None, crops: int | None = None,
                            batch: int = UPSAMPLER_BATCH, lr: float | None = None, patience: int = PATIENCE,
                            budget_s: float | None = None, device: str | torch.device = "auto", resume: bool = False,
                            scheduler=None, out=None, folder: Path | None = None, images: Path = IMAGES,
                            progress: bool = True, seed: int = 0):
    """Train the day-one upsampler to full resolution (upsampler_design) for the VAE behind `latents`, cache it as
    the closed form's `-upsampler` sibling (previewers.first_use.fit.upsampler_path) and return it. Options as
    train_day_one_net's (`batch`: latent crops of 16² per step). Its card holds what `auto` chooses by
    (previewers.pipelines.resolve.upsampler_is_better), measured on the same held-out crops as the other entries:
    full-resolution PSNR, PSNR pooled to latent resolution, the ceiling of any upscaled latent-resolution preview,
    and its cost beside the VAE's decode, both timed on the VAE's device."""
    design = upsampler_design(latents.channels, latents.convention.space, latents.factor)
    return train_against_vae(latents, "upsampler", design, upsampler_path, steps=steps, crops=crops, batch=batch,
                             lr=lr, patience=patience, budget_s=budget_s, device=device, resume=resume,
                             scheduler=scheduler, out=out, folder=folder, images=images, progress=progress, seed=seed)


def train_against_vae(latents: PipelineLatents, family: str, design: NetDesign, entry_of, steps, crops, batch, lr,
                      patience, budget_s, device, resume, scheduler, out, folder, images, progress, seed):
    """The fit behind train_day_one_net and train_day_one_upsampler: `design` trained on pairs of the photos in
    `images` made by the pipeline's VAE, scored on first_use_pairs' held-out crops, saved to
    entry_of(closed-form cache entry) (and `out`)."""
    steps = design.steps if steps is None else steps
    crops = design.crops if crops is None else crops
    lr = design.lr if lr is None else lr
    for name, value in (("steps", steps), ("crops", crops), ("batch", batch), ("patience", patience)):
        if int(value) < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"budget_s must be positive, got {budget_s}")
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    start = time.perf_counter()
    deadline = None if budget_s is None else start + budget_s
    teacher = pipeline_teacher(latents)
    entry = cache_path(latents, folder)
    target = entry_of(entry)
    held = first_use_pairs(latents, progress=progress, folder=folder)
    side = CROP_LATENTS * latents.factor
    pairs = make_pairs(teacher, noise_of(latents, scheduler), images=images,
                       exclude=tuple(f"{n}.jpg" for n in HELD_OUT),
                       crops=Crops(count=crops, size=side, seed=seed, dihedral=AUGMENT, hue=AUGMENT, contrast=AUGMENT),
                       noise_mix=NOISE_MIX, cache_dir=(folder or cache_root() / "fitted") / "pairs",
                       teacher_id=entry.stem, progress=progress)
    pairs_seconds = time.perf_counter() - start
    training = Training(steps=steps, batch=batch, lr=lr, patience=patience, seed=seed,
                        eval_every=max(1, min(100, steps // 4)),
                        loss=UPSAMPLER_LOSS if family == "upsampler" else "mse")
    device = resolve_device(device) if isinstance(device, str) else device
    previewer = fit(teacher, family, pairs, space=latents.convention.name, args=design.args, device=str(device),
                    training=training, progress=progress, checkpoint=target.with_name(target.name + ".ckpt"),
                    resume=resume, deadline=deadline)
    recipe = previewer.meta["recipe"]
    recipe.update({
        "method": f"Adam, day-one {family} against the pipeline's own VAE (training/day_one.py)",
        "why": WHY if family == "conv" else UPSAMPLER_WHY,
        "pairs_seconds": round(pairs_seconds, 2),
        "seconds": round(time.perf_counter() - start, 2),
        "budget_s": budget_s,
        "vae_device": str(latents.vae.device) if latents.vae.device.type != "cpu"
        else f"cpu ({platform.processor() or platform.machine()})",
    })
    previewer.meta.update({"teacher": teacher.name, "metrics": held_out_metrics(previewer, latents, held, side)})
    save(previewer, target)
    if out is not None:
        save(previewer, out)
    if progress:
        print(f"latent-preview: trained the day-one {family} for {type(latents.vae).__name__} in "
              f"{recipe['seconds']:.0f} s (pairs {pairs_seconds:.0f} s), held-out PSNR "
              f"{previewer.meta['metrics']['clean']['psnr']:.2f} dB; cached as {target}")
    return previewer


def held_out_metrics(previewer, latents: PipelineLatents, held: dict, side: int) -> dict:
    """The card's metrics of a day-one fit on first_use_pairs' held-out crops `held`: its PSNR at its output
    resolution beside the constant colour's; for an upsampler also its PSNR pooled to latent resolution, the
    ceiling's (the pooled decode upscaled back bicubically) and both costs (FullRes)."""
    baseline = mean_psnr(held["train_y"].mean(dim=(0, 2, 3)).view(1, 3, 1, 1).expand_as(held["held_y"]),
                         held["held_y"])
    if previewer.scale == 1:
        return first_use_metrics(score(previewer, held), baseline, len(held["held_x"]), side)
    with torch.no_grad():
        out = previewer(held["held_x"]).float().cpu()
    full = held["held_full"].float()
    ceiling = F.interpolate(held["held_y"], scale_factor=previewer.scale, mode="bicubic", align_corners=False)
    metrics = first_use_metrics(mean_psnr(out, full), baseline, len(held["held_x"]), side)
    up_ms, vae_ms = preview_and_decode_ms(previewer, latents)
    metrics["ms_per_64x64"] = up_ms
    metrics["full_res"] = FullRes(pooled=Scored(clean=Scores(psnr=round(score_pooled(out, held), 4))),
                                  ceiling=Ceiling(clean=Scores(psnr=round(mean_psnr(ceiling.clamp(0, 1), full), 4)),
                                                  teacher_ms=vae_ms)).to_dict()
    return metrics


def score_pooled(out: torch.Tensor, held: dict) -> float:
    """PSNR of full-resolution previews `out` area-pooled to latent resolution, against the pooled decodes."""
    return mean_psnr(F.adaptive_avg_pool2d(out, held["held_y"].shape[-2:]), held["held_y"])


@torch.inference_mode()
def preview_and_decode_ms(previewer, latents: PipelineLatents, repeats: int = 5,
                          budget_s: float = 2.0) -> tuple[float, float]:
    """Median milliseconds of `previewer` and of the pipeline's decode for one 1×C×64×64 latent, both on the VAE's
    device: what upsampler_is_better compares on the machine that will preview. `repeats` runs each, fewer (at least
    one) once they take `budget_s`; on CUDA after a warm-up run, synchronised (a CPU needs no warm-up, and a decode
    there can take a minute: a float16 VAE on a CPU)."""
    device = latents.vae.device
    x = torch.randn(1, latents.channels, 64, 64, device=device)
    module = previewer.to(device)
    warmups = 1 if device.type == "cuda" else 0
    try:
        return tuple(median_ms(run, repeats, budget_s, least=1, warmups=warmups, device=device)
                     for run in (lambda: module(x), lambda: latents.decode_unclamped(x[:, None])))
    finally:
        previewer.cpu()
