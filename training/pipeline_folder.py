"""`latent-preview fit --pipeline DIR`: the fit `previewer="auto"` does on first use, run offline for a
local diffusers pipeline folder, so that the first generation starts with the cache already filled."""

import json
from pathlib import Path

import diffusers

from previewers.conventions import bind
from previewers.first_use import cache_path, fitted_previewer
from previewers.pipeline_space import resolve_convention, vae_mismatch
from previewers.weightfile import save

from .gradient import resolve_device


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


def fit_pipeline_folder(folder, device: str = "auto", convention=None, out=None):
    """Fit (again) the first-use previewer for the pipeline in `folder`; returns (previewer, cache file).
    `out`: also save a copy there."""
    pipe = load_vae_only(folder)
    pipe.vae.to(resolve_device(device))
    conv = resolve_convention(pipe, convention=convention)
    if conv.shared_space is not None and vae_mismatch(pipe, conv.shared_space) is None:
        print(f"note: {type(pipe).__name__}'s VAE matches the shipped {conv.shared_space} previewers, which "
              f"previewer='auto' uses; fitting one against it anyway")
    latents = bind(pipe, conv)
    previewer = fitted_previewer(latents, refit=True)
    if out is not None:
        save(previewer, out)
    return previewer, cache_path(latents)
