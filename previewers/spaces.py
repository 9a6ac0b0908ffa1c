"""The latent spaces previewers take (DESIGN.md): what the denoiser holds, in spatial layout.

`scaling_factor`/`shift_factor` document each space's convention (denoiser latent =
(z - shift) * scale of the raw VAE latent z) for tests and docs; run-time code reads them
from the pipeline's VAE config instead. FLUX.2 has neither: its latents are normalised by the
VAE's BatchNorm statistics.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class LatentSpace:
    name: str
    channels: int
    teacher: str  # TAESD-family teacher in ../shared/models/teachers
    kind: str  # "ddpm": noised as sqrt(ᾱ)z + sqrt(1-ᾱ)ε; "flow": (1-σ)z + σε
    pipelines: str
    scaling_factor: float | None = None
    shift_factor: float | None = None


SPACES = {
    s.name: s
    for s in (
        LatentSpace("sd1", 4, "taesd", "ddpm", "Stable Diffusion 1.x / 2.x", 0.18215, 0.0),
        LatentSpace("sdxl", 4, "taesdxl", "ddpm", "Stable Diffusion XL", 0.13025, 0.0),
        LatentSpace("sd3", 16, "taesd3", "flow", "Stable Diffusion 3 / 3.5", 1.5305, 0.0609),
        LatentSpace("flux1", 16, "taef1", "flow", "FLUX.1", 0.3611, 0.1159),
        LatentSpace("flux2", 32, "taef2", "flow", "FLUX.2 (BatchNorm-normalised, unpatchified)"),
    )
}


def get_space(name: str) -> LatentSpace:
    if name not in SPACES:
        raise ValueError(f"unknown latent space {name!r}; known: {', '.join(SPACES)}")
    return SPACES[name]
