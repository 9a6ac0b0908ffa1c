"""How each diffusers pipeline family's step latents map to its VAE's decoder input.

Read from each pipeline's own decode step (diffusers 0.42, `output_type != "latent"` branch), with
the numbers taken from the pipeline's `vae` at run time:

- layout of the latents the callback receives:
  "spatial" (B, C, h, w); "tokens", FLUX-style 2x2 packing (B, (h/2)·(w/2), 4·C), which needs the
  image size to unpack; "video" (B, C, T, h, w);
- normalisation, the raw VAE latent z from the denoiser's x, per channel z = x · a + b:
  "scale"            z = x / scaling_factor (SD 1.x/2.x, CogView4, Sana, HunyuanImage, HunyuanVideo);
  "scale_shift"      z = x / scaling_factor + shift_factor (SD3, FLUX.1 and the families on its VAE);
  "mean_std"         z = x · latents_std + latents_mean (Wan, Qwen-Image; the pipelines divide by 1/std);
  "scaled_mean_std"  z = x · latents_std / scaling_factor + latents_mean when the VAE config has both,
                     else x / scaling_factor (SDXL, Mochi);
  "batchnorm"        FLUX.2: patchify 2x2, then x · sqrt(bn.running_var + eps) + bn.running_mean;
- whether the VAE works on frames (B, C, T, h, w) (`vae_frames`): Qwen-Image's VAE takes one frame.

Previewers see "model space": the denoiser's x, unpacked to spatial frames (for FLUX.2 also
unpatchified to 32 channels). `PipelineLatents` binds a convention to a pipeline's VAE and does
every conversion (callback latents → frames → decoder input, and images → frames for fitting),
so the callback, `previewer="vae"` and the fit-on-first-use share one piece of code.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .packing import infer_size, latent_size, unpack_tokens

LAYOUTS = ("spatial", "tokens", "video")
NORMALISATIONS = ("scale", "scale_shift", "mean_std", "scaled_mean_std", "batchnorm")


@dataclass(frozen=True)
class Convention:
    family: str  # pipeline family name (also the latent-space name of previewers fitted for it)
    pipelines: str  # for docs and messages
    layout: str
    normalisation: str
    vae_frames: bool = False
    shared_space: str | None = None  # the shipped space whose previewers fit when the VAE config matches

    def __post_init__(self):
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.normalisation not in NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {self.normalisation!r}")


CONVENTIONS = {
    c.family: c
    for c in (
        Convention("sd1", "StableDiffusion* (1.x / 2.x)", "spatial", "scale", shared_space="sd1"),
        Convention("sdxl", "StableDiffusionXL*", "spatial", "scaled_mean_std", shared_space="sdxl"),
        Convention("sd3", "StableDiffusion3*", "spatial", "scale_shift", shared_space="sd3"),
        Convention("flux1", "Flux*", "tokens", "scale_shift", shared_space="flux1"),
        Convention("flux2", "Flux2*, Flux2Klein*", "tokens", "batchnorm", shared_space="flux2"),
        Convention("chroma", "Chroma*", "tokens", "scale_shift", shared_space="flux1"),
        Convention("zimage", "ZImage*", "spatial", "scale_shift", shared_space="flux1"),
        Convention("hidream", "HiDreamImage*", "spatial", "scale_shift", shared_space="flux1"),
        Convention("lumina2", "Lumina2*", "spatial", "scale_shift", shared_space="flux1"),
        Convention("qwenimage", "QwenImage*, QwenImageEdit*", "tokens", "mean_std", vae_frames=True),
        Convention("cogview4", "CogView4*", "spatial", "scale"),
        Convention("sana", "Sana* (DC-AE, 32x)", "spatial", "scale"),
        Convention("hunyuanimage", "HunyuanImage*", "spatial", "scale"),
        Convention("wan", "Wan* (2.1 / 2.2)", "video", "mean_std", vae_frames=True),
        Convention("hunyuanvideo", "HunyuanVideo*, HunyuanVideo15*", "video", "scale", vae_frames=True),
        Convention("mochi", "Mochi*", "video", "scaled_mean_std", vae_frames=True),
    )
}

# Pipeline class-name prefixes → family, most specific first ("Flux2KleinPipeline" is flux2,
# "StableDiffusionXLControlNetPipeline" sdxl, "QwenImageEditPipeline" qwenimage).
CLASS_PREFIXES = (
    ("Flux2", "flux2"), ("Flux", "flux1"), ("StableDiffusion3", "sd3"), ("StableDiffusionXL", "sdxl"),
    ("StableDiffusion", "sd1"), ("Chroma", "chroma"), ("ZImage", "zimage"), ("HiDreamImage", "hidream"),
    ("Lumina2", "lumina2"), ("QwenImageLayered", None), ("QwenImage", "qwenimage"), ("CogView4", "cogview4"),
    ("Sana", "sana"), ("HunyuanImage", "hunyuanimage"), ("HunyuanVideoFramepack", None), ("HunyuanVideo", "hunyuanvideo"),
    ("Wan", "wan"), ("Mochi", "mochi"),
)


def detect_family(pipe) -> str | None:
    """The convention family of `pipe` from its class name, or None when it is not one we know."""
    name = type(pipe).__name__
    for prefix, family in CLASS_PREFIXES:
        if name.startswith(prefix):
            return family
    return None


def get_convention(convention) -> Convention:
    """A Convention, or the name of a known family's convention."""
    if isinstance(convention, Convention):
        return convention
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown latent convention {convention!r}; known: {', '.join(CONVENTIONS)} "
                         "(or a previewers.conventions.Convention)")
    return CONVENTIONS[convention]


def spatial_factor(pipe) -> int:
    """Pixels per latent along a side, as the pipeline itself computes it (else from its VAE's config)."""
    factor = getattr(pipe, "vae_scale_factor_spatial", None) or getattr(pipe, "vae_scale_factor", None)
    if factor is None:
        config = pipe.vae.config
        factor = getattr(config, "scale_factor_spatial", None) or getattr(config, "spatial_compression_ratio", None)
        blocks = getattr(config, "block_out_channels", None)
        if factor is None and blocks:
            factor = 2 ** (len(blocks) - 1)  # AutoencoderKL: one 2x downsampling between blocks
    if factor is None:
        raise ValueError(f"{type(pipe).__name__} has no vae_scale_factor; cannot tell its spatial compression")
    return int(factor)


def temporal_factor(pipe) -> int:
    """Video frames per latent frame (1 for image pipelines)."""
    return int(getattr(pipe, "vae_scale_factor_temporal", None) or 1)


class PipelineLatents:
    """A convention bound to a pipeline's VAE (and, for tokens, the image size in pixels)."""

    def __init__(self, convention: Convention, vae, factor: int, height: int | None = None, width: int | None = None,
                 size_given: bool = True):
        self.convention = convention
        self.vae = vae
        self.factor = factor
        self.height, self.width = height, width
        self.size_given = size_given  # False: the pipeline's default size, replaced when the tokens say otherwise
        config = vae.config
        self.channels = int(getattr(config, "latent_channels", None) or getattr(config, "z_dim"))
        self.patch = 2 if convention.normalisation == "batchnorm" else 1  # FLUX.2 normalises patchified latents

    def frames(self, latents: torch.Tensor) -> torch.Tensor:
        """Callback latents → (B, T, C, h, w) model-space frames (T = 1 for images)."""
        layout = self.convention.layout
        if layout == "tokens":
            if self.height is None or self.width is None:
                raise ValueError(f"{self.convention.family} latents are packed tokens: pass height= and width= (pixels)")
            if not self.size_given:
                self.infer_size(latents.shape[1])
            return unpack_tokens(latents, self.height, self.width, self.factor)[:, None]
        if layout == "video":
            if latents.ndim != 5:
                raise ValueError(f"expected video latents (B, C, T, h, w), got shape {tuple(latents.shape)}")
            return latents.transpose(1, 2)
        if latents.ndim != 4:
            raise ValueError(f"expected spatial latents (B, C, h, w), got shape {tuple(latents.shape)}")
        return latents[:, None]

    def infer_size(self, tokens: int) -> None:
        """Replace the default image size when `tokens` do not tile it, by the one size they tile
        (previewers/packing.py); ValueError saying what to pass when they tile several."""
        h, w = latent_size(self.height, self.width, self.factor)
        if tokens == (h // 2) * (w // 2):
            return
        size = infer_size(tokens, self.factor)
        if size is None:
            raise ValueError(f"{tokens} tokens do not tile the default {self.height}x{self.width} image, and several "
                             "image sizes give that many; pass the size the pipeline runs at: height=/width= to "
                             "PreviewCallback.for_pipeline (--height/--width on the command line)")
        self.height, self.width = size

    def affine(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (a, b) with z = x · a + b, shaped (1, C', 1, 1) (C' = C·4 for FLUX.2's patches)."""
        config, kind = self.vae.config, self.convention.normalisation
        scale = float(getattr(config, "scaling_factor", None) or 1.0)
        mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
        if kind == "batchnorm":
            b = self.vae.bn.running_mean
            a = torch.sqrt(self.vae.bn.running_var + float(config.batch_norm_eps))
        elif kind == "mean_std" or (kind == "scaled_mean_std" and mean is not None and std is not None):
            b = torch.tensor(mean)
            a = torch.tensor(std) / (scale if kind == "scaled_mean_std" else 1.0)
        else:
            shift = float(getattr(config, "shift_factor", None) or 0.0) if kind == "scale_shift" else 0.0
            a, b = torch.full((self.channels * self.patch**2,), 1 / scale), torch.full((self.channels * self.patch**2,), shift)
        return a.to(device, dtype).view(1, -1, 1, 1), b.to(device, dtype).view(1, -1, 1, 1)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) → (N, C·p², h/p, w/p), channel index c·p² + dy·p + dx (FLUX.2's 2x2 patches)."""
        if x.shape[-2] % self.patch or x.shape[-1] % self.patch:
            raise ValueError(f"{type(self.vae).__name__}: latent height and width must be multiples of the patch size "
                             f"{self.patch}, got {tuple(x.shape[-2:])}")
        return F.pixel_unshuffle(x, self.patch)

    def to_decoder(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) model-space frames → the tensor the pipeline hands `vae.decode`."""
        b, t = frames.shape[:2]
        x = frames.reshape(b * t, *frames.shape[2:]).to(self.vae.dtype)
        a, shift = self.affine(x.device, x.dtype)
        if self.patch > 1:
            z = F.pixel_shuffle(self.patchify(x) * a + shift, self.patch)
        else:
            z = x * a + shift
        z = z.view(b, t, *z.shape[1:])
        if self.convention.vae_frames:
            return z.transpose(1, 2)  # (B, C, T, h, w)
        if t != 1:
            raise ValueError(f"{type(self.vae).__name__} decodes single images, got {t} frames")
        return z[:, 0]

    def from_encoder(self, z: torch.Tensor) -> torch.Tensor:
        """The VAE's raw latent z ((B, C, h, w), or (B, C, T, h, w) for frame VAEs) → (B, T, C, h, w) model space."""
        z = z.transpose(1, 2) if self.convention.vae_frames else z[:, None]
        b, t = z.shape[:2]
        z = z.reshape(b * t, *z.shape[2:])
        a, shift = self.affine(z.device, z.dtype)
        if self.patch > 1:
            x = F.pixel_shuffle((self.patchify(z) - shift) / a, self.patch)
        else:
            x = (z - shift) / a
        return x.view(b, t, *x.shape[1:])

    @torch.no_grad()
    def decode_unclamped(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) model-space frames → (B, T', 3, H, W) float RGB, about [0, 1] but unclamped,
        decoded as the pipeline decodes (T' = video frames for a video VAE)."""
        out = self.vae.decode(self.to_decoder(frames), return_dict=False)[0]
        out = out.transpose(1, 2) if out.ndim == 5 else out[:, None]
        return (out.float() + 1) / 2

    def decode(self, frames: torch.Tensor) -> torch.Tensor:
        """decode_unclamped() clamped to [0, 1], as the pipeline's image."""
        return self.decode_unclamped(frames).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] → (B, 1, C, h, w) model-space frames (the latent distribution's mode)."""
        x = images.to(self.vae.device, self.vae.dtype) * 2 - 1
        if self.convention.vae_frames:
            x = x[:, :, None]
        out = self.vae.encode(x)
        z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out[0]  # AutoencoderTiny/DC: no distribution
        return self.from_encoder(z)


def bind(pipe, convention: Convention, height: int | None = None, width: int | None = None) -> PipelineLatents:
    """`convention` bound to `pipe.vae`; packed-token layouts default to the pipeline's default image size."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        raise ValueError(f"{type(pipe).__name__} has no vae")
    factor = spatial_factor(pipe)
    given = height is not None and width is not None
    if convention.layout == "tokens" and not given:
        default = getattr(pipe, "default_sample_size", None)
        if default is None:
            raise ValueError(f"{type(pipe).__name__} has no default image size; pass height= and width= (pixels)")
        height, width = height or default * factor, width or default * factor
    return PipelineLatents(convention, vae, factor, height, width, size_given=given)
