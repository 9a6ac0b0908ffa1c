"""`latent-preview fit --pipeline DIR`: the fit `previewer="auto"` does on first use, run offline for a
local diffusers pipeline folder, so that the first generation starts with the cache already filled; then the
day-one conv net against the same VAE (training/day_one.py), cached beside it, which `auto` takes from then on
when it scores higher on the held-out crops; with `upsampler`, the day-one upsampler too."""

import json
from pathlib import Path

import diffusers

from previewers.first_use.fit import cache_path, cached_entries, fitted_previewer, net_path, upsampler_path
from previewers.models.weightfile import save
from previewers.pipelines.latents import bind
from training.adam import resolve_device


def load_vae_only(folder) -> "diffusers.DiffusionPipeline":
    """The pipeline in `folder` with only its VAE and scheduler loaded (the rest left out: no text
    encoders or denoiser in memory), so that its class and VAE-derived attributes are the real ones."""
    folder = Path(folder)
    index = folder / "model_index.json"
    if not index.is_file():
        raise ValueError(f"{folder}: not a diffusers pipeline folder (no model_index.json)")
    try:
        components = json.loads(index.read_text())
    except ValueError as e:
        raise ValueError(f"{index}: not readable JSON ({e})") from None
    if "vae" not in components:
        raise ValueError(f"{folder}: the pipeline has no vae to fit against")
    skip = {name: None for name in components if not name.startswith("_") and name not in ("vae", "scheduler")}
    try:
        return diffusers.DiffusionPipeline.from_pretrained(folder, local_files_only=True, **skip)
    except (OSError, ValueError, TypeError) as e:
        raise ValueError(f"{folder}: could not load its VAE ({e})") from None


def fit_pipeline_folder(folder, device: str = "auto", space=None, out=None, net: bool = True,
                        net_steps: int | None = None, net_crops: int | None = None, budget_s: float | None = None,
                        resume: bool = False, upsampler: bool = False, progress: bool = True):
    """Fit (again) the first-use previewer for the pipeline in `folder`, then (with `net`) train the day-one net and
    (with `upsampler`) the day-one upsampler; returns (previewer, cache file): the last one trained and its entry
    (the upsampler, the net, else the closed form).
    `space`: the shipped space its latents are in, when its VAE's config does not say; `out`: also save the
    returned previewer there; net_steps/net_crops/budget_s: the net's Adam steps, crops and wall-clock budget
    (defaults: training.day_one.net_design's for the latent width); `resume`: continue a killed fit from its
    checkpoint, keeping the cached entries whose fits ended (the closed form, a net before its upsampler).
    net_steps, net_crops and budget_s apply to the upsampler too (its default steps: upsampler_design's; the same
    crops share the net's cached pairs)."""
    from training.day_one import train_day_one_net, train_day_one_upsampler

    if resume and not net:
        raise ValueError("--resume continues the net's fit; it cannot go with --no-net")
    if upsampler and not net:
        raise ValueError("--upsampler trains after the net; it cannot go with --no-net")
    for flag, value in (("--net-steps", net_steps), ("--net-crops", net_crops)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if budget_s is not None and budget_s <= 0:
        raise ValueError(f"--net-budget must be positive, got {budget_s}")
    if not net and any(v is not None for v in (net_steps, net_crops, budget_s)):
        raise ValueError("--net-steps, --net-crops and --net-budget set the net's fit; they cannot go with --no-net")
    pipe = load_vae_only(folder)
    pipe.vae.to(resolve_device(device))
    latents = bind(pipe, space=space)
    if latents.convention.space is not None:
        print(f"note: {type(pipe).__name__}'s VAE matches the shipped {latents.convention.space} previewers, which "
              f"previewer='auto' uses; fitting one against it anyway")
    entries = cached_entries(latents)
    refit = not (resume and "closed_form" in entries)
    previewer = fitted_previewer(latents, refit=True, progress=progress) if refit else entries["closed_form"]
    cached = cache_path(latents)
    scheduler = getattr(pipe, "scheduler", None)
    for role, wanted, train, entry in (("net", net, train_day_one_net, net_path(cached)),
                                       ("upsampler", upsampler, train_day_one_upsampler, upsampler_path(cached))):
        if not wanted:
            continue
        if resume and role in entries and not entry.with_name(entry.name + ".ckpt").exists():
            previewer = entries[role]  # its fit ended earlier (no checkpoint left): kept
            print(f"kept the cached day-one {role} {entry} (--resume; without it the {role} is trained again)")
        else:
            previewer = train(latents, steps=net_steps, crops=net_crops, budget_s=budget_s, device=device,
                              resume=resume, scheduler=scheduler, progress=progress)
        cached = entry
    if out is not None:
        save(previewer, out)
    return previewer, cached
