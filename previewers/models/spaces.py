"""The latent spaces of the shipped previewers: the VAE configs their denoiser latents come from.

A pipeline whose decoder has one of these configs (whatever the pipeline class) is in that space
(previewers/pipelines/conventions.py matches them).
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LatentSpace:
    """A shipped previewers' space: the VAE config its denoiser latents come from (for tests, docs and matching)."""
    name: str
    channels: int
    teacher: str  # TAESD-family teacher in ../shared/models/teachers
    noise: str  # how the sampler noises latents: "ddpm": noised as sqrt(ᾱ)z + sqrt(1-ᾱ)ε; "flow": (1-σ)z + σε
    pipelines: str
    scaling_factor: float | None = None  # None: FLUX.2's BatchNorm statistics
    shift_factor: float | None = None
    vae_class: str = "AutoencoderKL"


SPACES = {s.name: s for s in (
    LatentSpace("sd1", 4, "taesd", "ddpm", "Stable Diffusion 1.x / 2.x", 0.18215, 0.0),
    LatentSpace("sdxl", 4, "taesdxl", "ddpm", "Stable Diffusion XL", 0.13025, 0.0),
    LatentSpace("sd3", 16, "taesd3", "flow", "Stable Diffusion 3 / 3.5", 1.5305, 0.0609),
    LatentSpace("flux1", 16, "taef1", "flow", "FLUX.1", 0.3611, 0.1159),
    LatentSpace("flux2", 32, "taef2", "flow", "FLUX.2 (BatchNorm-normalised, unpatchified)", vae_class="AutoencoderKLFlux2"),
)}


def get_space(name: str) -> LatentSpace:
    if name not in SPACES:
        raise ValueError(f"unknown latent space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name]
