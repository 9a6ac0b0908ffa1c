"""What `previewer=` names, for one pipeline: the one place that turns it into a previewer.

    resolve_previewer(previewer, latents, pipeline="StableDiffusionPipeline")

`previewer` is one of:
  "auto"     the preferred shipped previewer when the pipeline's decoder has a shipped space's config (auto_previewer),
             else one fitted against the decoder on first use and cached on disk (previewers/first_use/fit.py);
  "fit"      refit that one;
  "vae"      the pipeline's own decoder, decoding exactly as the pipeline does (previewers/pipelines/vae_decode.py);
  a family   ("conv", "upsampler", ...): the one shipped for the pipeline's space;
  a registry name, a weight file, a TAESD-family decoder file, a diffusers AutoencoderTiny (previewers.load);
  a Previewer (or VaePreview), used as it is.
Pixel-space pipelines (no decoder) get pixel_previewer for "auto", "fit" and "vae". The result is checked against
the pipeline's latents: a wrong channel count is an error, a previewer fitted for another space a warning.
"""

import os
import warnings

import torch

from previewers.models.card import Metrics, WeightCard
from previewers.models.families import FAMILIES, Previewer, affine
from previewers.models.registry import available, load, weights_dir
from previewers.models.spaces import SPACES
from previewers.models.weightfile import read_card
from previewers.pipelines.latents import PipelineLatents
from previewers.pipelines.vae_decode import VaePreview

# previewer="auto" takes the first family shipped for the space: latent-resolution families
# first (cheap at every step; `size=` upscales for display), then the 8x upsampler.
AUTO_FAMILIES = ("conv", "affine", "mlp", "quadratic", "linear", "upsampler")
# auto's bar for the upsampler, from its file's held-out metrics (DESIGN.md, "First use"):
UPSAMPLER_MARGIN = 1.0  # dB above the ceiling: visibly more detail than any upscaled latent-resolution preview
POOLED_TOLERANCE = 0.5  # dB its colours (pooled to latent resolution) may lose to the latent-resolution pick's
MIN_SPEEDUP = 10  # times cheaper than the teacher's decode, the floor benchmarks/speed.py holds previewers to


def resolve_previewer(previewer, latents: PipelineLatents, pipeline: str, progress: bool = True):
    """The Previewer (or VaePreview) `previewer` names for the pipeline behind `latents` (see the module docstring);
    `pipeline` names it in messages; `progress`: show the progress of a fit on first use."""
    convention = latents.convention
    label = None
    if isinstance(previewer, (Previewer, VaePreview)):
        module = previewer
    elif previewer in ("auto", "fit", "vae") and convention.decoder is None:
        module = pixel_previewer()
    elif previewer == "fit" or (previewer == "auto" and convention.space is None):
        module = fitted(latents, pipeline, refit=previewer == "fit", progress=progress)
    elif previewer == "vae":
        module = VaePreview(latents)
    else:
        name = shipped_name(previewer, latents, pipeline)
        module = load(name)  # also TAESD-family decoder files and a diffusers AutoencoderTiny
        label = f"previewer {str(name)!r}" if isinstance(name, (str, os.PathLike)) else None
    check(module, label or f"{module.family} previewer", latents, pipeline)
    return module


def shipped_name(previewer, latents: PipelineLatents, pipeline: str):
    """"auto" and family names as the registry name of the previewer shipped for the pipeline's space; anything
    else as it is."""
    space = latents.convention.space
    if previewer == "auto":  # resolve_previewer fits one instead where no space matches
        return auto_previewer(space, factor=latents.convention.spatial)
    if previewer in FAMILIES:
        if space is None:
            raise ValueError(f"previewer {previewer!r}: no previewers are shipped for {pipeline}'s latents "
                             f"({latents.convention.name}); use previewer='auto' (fits one against its VAE) or 'vae'")
        return auto_previewer(space, families=(previewer,))
    return previewer


def fitted(latents: PipelineLatents, pipeline: str, refit: bool, progress: bool) -> Previewer:
    """A previewer fitted against the pipeline's decoder on first use, cached (previewers/first_use/fit.py)."""
    from previewers.first_use.fit import fitted_previewer

    try:
        return fitted_previewer(latents, refit=refit, progress=progress)
    except Exception as e:
        raise ValueError(f"{pipeline}: no shipped previewer takes its {latents.convention.vae_class} latents, and "
                         f"fitting one against the VAE failed ({type(e).__name__}: {e}); pass previewer='vae' (exact, "
                         "a full decode per preview) or a previewer fitted for it") from e


def check(previewer, label: str, latents: PipelineLatents, pipeline: str) -> None:
    """ValueError when `previewer` cannot take the pipeline's latents; a warning when its card says it was fitted
    for another space (its colours will be off)."""
    convention = latents.convention
    if previewer.latent_channels != convention.channels:
        raise ValueError(f"{label} takes {previewer.latent_channels}-channel latents, but {pipeline}'s latents have "
                         f"{convention.channels} channels ({convention.name}); pass a previewer for them, or "
                         "previewer='auto' to fit one")
    fitted_for = WeightCard.of(previewer).space
    if fitted_for is not None and fitted_for != convention.name:
        warnings.warn(f"latent-preview: {label} was fitted for latent space {fitted_for!r}, but {pipeline}'s latents "
                      f"are in {convention.name!r}"
                      + ("" if fitted_for not in SPACES or convention.space is not None else
                         f" (its {convention.vae_class} config differs from {fitted_for}'s)")
                      + ": its colours will be off; pass previewer='auto' to fit one for this decoder", stacklevel=4)


def auto_previewer(space: str, names: list[str] | None = None, families: tuple[str, ...] = AUTO_FAMILIES,
                   metrics: dict | None = None, factor: int = 8) -> str:
    """Registry name of the preferred shipped previewer for `space` among `families`, in their order
    (plain names before variants). `factor`: the pipeline's pixels per latent; the 8x upsampler is left out for
    decoders of another compression (a tiny test VAE's latents are the space's, but its images are not 8x).

    The space's upsampler replaces the latent-resolution pick where its held-out metrics (`metrics`: name → the
    card's metrics as a dict; read from the shipped files when None) say it is the better preview at its cost
    (upsampler_is_better)."""
    names = available() if names is None else names
    picks = []
    for family in families:
        if family == "upsampler" and factor != 8:
            continue
        base = f"{space}-{family}"
        matches = [n for n in names if n == base] or sorted(n for n in names if n.startswith(base + "-"))
        picks += matches[:1]
    if not picks:
        which = "" if families == AUTO_FAMILIES else "/".join(families) + " "
        raise ValueError(
            f"no shipped {which}previewer for latent space {space!r} (shipped: {', '.join(names) or 'none'}); "
            "fit one with `latent-preview fit` and pass previewer=PATH"
        )
    upsampler, first = next((n for n in picks if n.split("-")[1] == "upsampler"), None), picks[0]
    if upsampler is None or upsampler == first:
        return first
    if metrics is None:
        scored = {n: read_card(weights_dir() / f"{n}.safetensors").metrics for n in (first, upsampler)}
    else:
        scored = {n: Metrics.from_dict(metrics[n], f"{n} metrics") for n in (first, upsampler) if metrics.get(n)}
    return upsampler if upsampler_is_better(scored.get(upsampler), scored.get(first)) else first


def upsampler_is_better(up: Metrics | None, latent: Metrics | None) -> bool:
    """Whether the upsampler (metrics `up`) is the better preview at its cost than the latent-resolution pick
    (`latent`): full-resolution PSNR at least UPSAMPLER_MARGIN dB above the ceiling of any upscaled
    latent-resolution preview, pooled PSNR at most POOLED_TOLERANCE dB below the pick's, and at least MIN_SPEEDUP
    times cheaper than the teacher. False without that evidence (files from before the full-resolution comparison)."""
    if up is None or up.full_res is None or up.ms_per_64x64 is None or latent is None:
        return False
    full = up.full_res
    return (up.clean.psnr >= full.ceiling.clean.psnr + UPSAMPLER_MARGIN
            and full.pooled.clean.psnr >= latent.clean.psnr - POOLED_TOLERANCE
            and up.ms_per_64x64 * MIN_SPEEDUP <= full.ceiling.teacher_ms)


def pixel_previewer() -> Previewer:
    """Pixel-space pipelines (DeepFloyd IF, pixel DiTs): their latents are the RGB image in [-1, 1], so the
    preview is (x + 1) / 2, an affine map."""
    previewer = affine(3)
    with torch.no_grad():
        previewer.body.weight.copy_(torch.eye(3).view(3, 3, 1, 1) / 2)
        previewer.body.bias.fill_(0.5)
    previewer.meta = WeightCard.of(previewer, space="pixels",
                                   teacher="none: the latents are pixels in [-1, 1]").to_dict()
    return previewer
