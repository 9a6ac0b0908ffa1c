"""previewer="vae": the pipeline's own VAE, decoding step latents exactly as the pipeline decodes its result.

Exact pictures at full resolution, at the cost of a full decode per previewed step: suited to
`every=K` with a large K. The conversion (unpacking, de-normalisation, frames) is the convention's
(previewers/pipelines/conventions.py), the same code the fit-on-first-use uses; the VAE is used where the
pipeline placed it and is never moved or modified, so the pipeline's result does not change.
"""

import torch

from previewers.models.card import WeightCard
from previewers.pipelines.latents import PipelineLatents


class VaePreview(torch.nn.Module):
    """(B, T, C, h, w) model-space frames → (B, T', 3, H, W) RGB in [0, 1] (T' video frames for video VAEs)."""

    def __init__(self, latents: PipelineLatents):
        super().__init__()
        self.latents = latents  # a plain attribute: the VAE is the pipeline's, not a submodule of ours
        self.family = "vae"
        self.latent_channels = latents.channels
        self.scale = latents.factor
        self.meta = WeightCard(family="vae", latent_channels=latents.channels, args={}, scale=latents.factor,
                               space=latents.convention.name,
                               teacher=f"{type(latents.vae).__name__} (the pipeline's own VAE)").to_dict()

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.latents.decode(frames)
