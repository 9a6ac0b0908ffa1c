"""Which latent space a diffusers pipeline works in, and how its latents reach a previewer.

Works on the pipeline object only (class name, `vae.config`, `vae_scale_factor`), so it needs
no diffusers import of its own.
"""

import warnings
from dataclasses import dataclass

import torch

from .packing import unpack_tokens
from .spaces import SPACES

# Pipeline class-name prefixes, most specific first: "Flux2KleinPipeline" is flux2,
# "StableDiffusionXLControlNetPipeline" sdxl, "StableDiffusionImg2ImgPipeline" sd1.
CLASS_PREFIXES = (
    ("Flux2", "flux2"),
    ("Flux", "flux1"),
    ("StableDiffusion3", "sd3"),
    ("StableDiffusionXL", "sdxl"),
    ("StableDiffusion", "sd1"),
)
PACKED_SPACES = ("flux1", "flux2")


def detect_space(pipe) -> str:
    """The latent space name of `pipe`, from its class; ValueError naming the class when unknown."""
    name = type(pipe).__name__
    for prefix, space in CLASS_PREFIXES:
        if name.startswith(prefix):
            return space
    raise ValueError(
        f"cannot tell which latent space {name} works in (known: StableDiffusion*, StableDiffusionXL*, "
        f"StableDiffusion3*, Flux*, Flux2* pipelines). If its latents are in one of the spaces "
        f"{', '.join(SPACES)}, say which and give a previewer for it, e.g. "
        f"PreviewCallback.for_pipeline(pipe, space='sd1', previewer='sd1-affine') "
        f"(previewer: a registry name, a .safetensors path or a loaded Previewer)"
    )


def latent_channels(pipe) -> int:
    """Channels of the spatial latent the previewer sees: the VAE's latent channels."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        raise ValueError(f"{type(pipe).__name__} has no vae; cannot tell its latent channels")
    return int(vae.config.latent_channels)


def check_vae_convention(pipe, space: str) -> None:
    """Warn when the pipeline's VAE scales its latents unlike the space's shipped previewers assume."""
    expected = SPACES[space]
    config = pipe.vae.config
    if expected.scaling_factor is None:  # FLUX.2: BatchNorm statistics, nothing in the config to compare
        return
    scale = config.get("scaling_factor")
    shift = config.get("shift_factor") or 0.0
    if scale is None or abs(scale - expected.scaling_factor) > 1e-4 or abs(shift - expected.shift_factor) > 1e-4:
        warnings.warn(
            f"{type(pipe).__name__}'s VAE has scaling_factor={scale}, shift_factor={shift}, but {space} previewers "
            f"expect {expected.scaling_factor}, {expected.shift_factor}: previews may be off; pass a previewer "
            "fitted for this VAE (latent-preview fit)",
            stacklevel=3,
        )


@dataclass
class Layout:
    """Unpacks the FLUX token latents a pipeline hands the callback to (B, C, h, w)."""

    height: int  # image size in pixels
    width: int
    vae_scale_factor: int

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        try:
            return unpack_tokens(tokens, self.height, self.width, self.vae_scale_factor)
        except ValueError as e:
            raise ValueError(f"{e}; pass the image size the pipeline ran at as height=/width=") from None


def layout_for(pipe, space: str, height: int | None = None, width: int | None = None) -> Layout | None:
    """How `pipe`'s callback latents become spatial: None when they already are; for packed
    spaces the image size, defaulting to the pipeline's (`default_sample_size · vae_scale_factor`)."""
    if space not in PACKED_SPACES:
        return None
    factor = int(pipe.vae_scale_factor)
    default = getattr(pipe, "default_sample_size", None)
    if (height is None or width is None) and default is None:
        raise ValueError(f"{type(pipe).__name__} has no default image size; pass height= and width= (pixels)")
    return Layout(height or default * factor, width or default * factor, factor)
