"""Latent conventions: how a pipeline's step latents become its decoder's input, derived from facts.

A convention is read off the pipeline object (diffusers is never imported here):
- the decoder: the component that decodes latents (`vae`; `movq` for Kandinsky; `vqgan` for Stable Cascade),
  or none for pixel-space pipelines (DeepFloyd IF, pixel DiTs), whose "latents" are RGB in [-1, 1];
- the decoder: its latent channels (config), its spatial compression (measured by one tiny decode, see
  spatial_factor), its temporal compression, and the normalisation the pipelines undo before decoding,
  z = x · a + b per channel, from the first that applies:
    "batchnorm"    BatchNorm statistics (`vae.bn`, FLUX.2's VAE): on 2x2-patchified latents, a = √(var + eps), b = mean;
    "mean_std"     `latents_mean`/`latents_std` (config or VAE buffers: Wan, Qwen-Image, LTX, Mochi, SDXL variants):
                   a = std / scaling_factor (1 when absent), b = mean;
    "scale_shift"  a = 1 / scaling_factor, b = shift_factor (0 when absent: SD, SD3, FLUX.1, CogVideoX, Sana, ...);
  and whether it decodes frames (B, C, T, h, w) (it holds 3-D convolutions) or takes `num_frames` (SVD);
- the pipeline's attributes: `vae_scale_factor_temporal`, `transformer_*_patch_size`, default image size.
EXCEPTIONS holds the few pipelines whose decode code departs from what their decoder's config implies.

Previewers see "model space": the denoiser's x, as spatial frames (B·T, C, h, w); previewers/pipelines/latents.py
converts. A pipeline whose decoder has the config of a shipped space (previewers/models/spaces.py), whatever the
pipeline class, is in that space.
"""

import inspect
from dataclasses import dataclass, field

import torch

from previewers.models.spaces import SPACES, get_space

DECODERS = ("vae", "movq", "vqgan", "vqvae")  # pipeline attributes that hold the latent decoder, in order


@dataclass(frozen=True)
class DecodeQuirk:
    """A pipeline whose decode departs from its decoder's config: matched by decoder attribute or class-name prefix."""
    decoder: str | None
    class_prefix: str | None
    normalisation: str
    mirrors: str  # the decode line it mirrors (diffusers 0.42)
    decode_kwargs: dict = field(default_factory=dict)
    unit_range: bool = False  # the decoder gives images in [0, 1], not [-1, 1]


EXCEPTIONS = (
    DecodeQuirk("movq", None, "identity", "kandinsky*/pipeline_*.py: self.movq.decode(latents, force_not_quantize=True)",
               {"force_not_quantize": True}),
    DecodeQuirk("vqgan", None, "multiply", "stable_cascade/pipeline_stable_cascade.py: "
                                          "self.vqgan.decode(latents * scale_factor).sample.clamp(0, 1)",
               unit_range=True),
    DecodeQuirk(None, "Kandinsky5", "scale", "kandinsky5/pipeline_kandinsky*.py: latents / self.vae.config.scaling_factor "
                                            "(no shift_factor, also for FLUX.1's VAE)"),
    DecodeQuirk(None, "StableDiffusion3Inpaint", "scale", "stable_diffusion_3/pipeline_stable_diffusion_3_inpaint.py: "
                                                         "self.vae.decode(latents / self.vae.config.scaling_factor) "
                                                         "(no shift_factor, unlike the other SD3 pipelines)"),
)


@dataclass(frozen=True)
class Convention:
    """What turns a pipeline's step latents into its decoder's input (see the module docstring)."""
    decoder: str | None  # pipeline attribute of the decoder; None: pixel space
    vae_class: str
    channels: int  # model-space channels per frame (FLUX.2: after unpatchifying)
    spatial: int  # pixels per latent along a side
    temporal: int = 1  # video frames per latent frame
    normalisation: str = "scale_shift"  # batchnorm, mean_std, scale_shift, scale, multiply, identity
    patch: int = 1  # the normalisation works on p x p patchified latents (FLUX.2: 2)
    frame_vae: bool = False  # decode takes (B, C, T, h, w)
    frames_kwarg: bool = False  # decode takes (B·T, C, h, w) and num_frames=T (SVD's temporal decoder)
    token_patch: tuple[int, int] | None = None  # (temporal, spatial) token patch sizes the pipeline states
    default_size: tuple[int, int] | None = None  # (height, width) in pixels the pipeline runs at by default
    space: str | None = None  # the shipped space whose previewers take these latents, if the decoder matches one
    mirrors: str = ""  # the exception's decode line, when one applies
    decode_kwargs: tuple = ()
    unit_range: bool = False  # the decoder gives [0, 1] (Stable Cascade's Paella VQ), not [-1, 1]

    @property
    def name(self) -> str:
        """The space's name, or one naming the decoder (fitted previewers are keyed by the decoder's weights)."""
        if self.space is not None:
            return self.space
        return "pixels" if self.decoder is None else f"{self.vae_class}-{self.channels}ch"


def find_decoder(pipe) -> tuple[str | None, object]:
    for name in DECODERS:
        module = getattr(pipe, name, None)
        if module is not None and hasattr(module, "decode"):
            return name, module
    return None, None


def config_get(config, *names):
    for name in names:
        value = config.get(name) if hasattr(config, "get") else getattr(config, name, None)
        if value is not None:
            return value
    return None


def normalisation_of(vae) -> str:
    if getattr(vae, "bn", None) is not None and config_get(vae.config, "batch_norm_eps") is not None:
        return "batchnorm"
    if mean_std(vae) is not None:
        return "mean_std"
    return "scale_shift"


def mean_std(vae):
    """(mean, std) per channel from the config or the VAE's buffers (LTX), or None."""
    mean, std = config_get(vae.config, "latents_mean"), config_get(vae.config, "latents_std")
    if mean is None or std is None:
        buffers = dict(vae.named_buffers(recurse=False))
        mean, std = buffers.get("latents_mean"), buffers.get("latents_std")
    if mean is None or std is None:
        return None
    return torch.as_tensor(mean).float().flatten(), torch.as_tensor(std).float().flatten()


def matching_space(vae, normalisation: str, channels: int) -> str | None:
    """The shipped space whose previewers take this VAE's denoiser latents, or None."""
    for space in SPACES.values():
        if type(vae).__name__ != space.vae_class or channels != space.channels:
            continue
        if space.scaling_factor is None:
            if normalisation == "batchnorm":
                return space.name
            continue
        scale = config_get(vae.config, "scaling_factor")
        shift = config_get(vae.config, "shift_factor") or 0.0
        if (normalisation == "scale_shift" and scale is not None and abs(scale - space.scaling_factor) <= 1e-4
                and abs(shift - space.shift_factor) <= 1e-4):
            return space.name
    return None


def spatial_factor(pipe, vae, decode_kwargs: dict) -> int:
    """Pixels per latent along a side, measured: one decode of an 8x8 latent (milliseconds on a GPU, well under a
    second on a CPU). Pipelines' own attributes disagree on what they count (Bria's `vae_scale_factor` is pixels per
    2x2 token, FLUX's per latent) and tiny test configs can contradict their decoders, so what the decoder does is
    the one fact all agree on. Where the decode fails, the config's or the pipeline's stated factor is taken."""
    channels = latent_channels(vae)
    shape = (1, channels, 1, 8, 8) if is_frame_vae(vae) else (1, channels, 8, 8)
    kwargs = dict(decode_kwargs)
    if "num_frames" in inspect.signature(vae.decode).parameters:
        kwargs["num_frames"] = 1
    if config_get(vae.config, "timestep_conditioning"):
        kwargs["temb"] = torch.zeros(1, device=vae.device, dtype=vae.dtype)
    try:
        with torch.no_grad():
            out = vae.decode(torch.zeros(shape, device=vae.device, dtype=vae.dtype), return_dict=False, **kwargs)[0]
        return max(1, out.shape[-1] // 8)
    except Exception:  # noqa: BLE001 - a decoder that cannot decode a zero latent: fall back on what is stated
        pass
    value = config_get(vae.config, "spatial_compression_ratio", "scale_factor_spatial")
    for name in ("vae_scale_factor_spatial", "vae_spatial_scale_factor", "vae_spatial_compression_ratio",
                 "vae_scale_factor", "movq_scale_factor"):
        if value is None and isinstance(getattr(pipe, name, None), int):
            value = getattr(pipe, name)
    if value is None:
        raise ValueError(f"cannot tell how many pixels {type(vae).__name__} decodes per latent: its config and "
                         f"{type(pipe).__name__} state none, and a test decode failed")
    return int(value)


def temporal_factor(pipe, vae) -> int:
    for name in ("vae_scale_factor_temporal", "vae_temporal_scale_factor", "vae_temporal_compression_ratio"):
        value = getattr(pipe, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return int(config_get(vae.config, "temporal_compression_ratio", "scale_factor_temporal") or 1)


def latent_channels(vae) -> int:
    value = config_get(vae.config, "latent_channels", "z_dim")
    if value is None:
        raise ValueError(f"{type(vae).__name__}'s config states no latent_channels or z_dim: not an image VAE we "
                         "can read")
    return int(value)


def is_frame_vae(vae) -> bool:
    """Decodes (B, C, T, h, w): it holds 3-D convolutions (and is not SVD's per-frame temporal decoder)."""
    return "num_frames" not in inspect.signature(vae.decode).parameters and any(
        isinstance(m, torch.nn.Conv3d) for m in vae.modules())


def default_size(pipe, factor: int) -> tuple[int, int] | None:
    """The image size the pipeline runs at when called without height/width: its signature's defaults, else
    `default_sample_size` latents."""
    params = inspect.signature(type(pipe).__call__).parameters if callable(pipe) and not isinstance(pipe, type) else {}
    size = [getattr(params.get(k), "default", None) for k in ("height", "width")]
    if all(isinstance(s, int) for s in size):
        return size[0], size[1]
    sample = getattr(pipe, "default_sample_size", None)
    return (sample * factor, sample * factor) if isinstance(sample, int) else None


def derive(pipe, space: str | None = None) -> Convention:
    """The convention `pipe` works in (see the module docstring). `space`: a shipped space the caller states the
    latents are in, for a decoder whose config does not say (e.g. an AutoencoderTiny in SD 1.x's space).
    ValueError naming what is missing when the pipeline has neither a decoder nor pixel latents."""
    cls = type(pipe).__name__
    name, vae = find_decoder(pipe)
    patch_sizes = tuple(getattr(pipe, f"transformer_{k}_patch_size", None) for k in ("temporal", "spatial"))
    token_patch = patch_sizes if all(isinstance(p, int) for p in patch_sizes) else None
    if vae is None:
        denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
        channels = config_get(denoiser.config, "in_channels") if denoiser is not None else None
        if channels not in (3, 6):  # IF's super-resolution UNets take the noisy image and the upscaled one
            raise ValueError(f"{cls} has no latent decoder ({', '.join(DECODERS)}) and its denoiser does not work "
                             "on RGB pixels: it does not make images, so there is nothing to preview")
        return Convention(None, "pixels", 3, 1, normalisation="identity", token_patch=token_patch,
                          default_size=default_size(pipe, 1))
    exception = next((e for e in EXCEPTIONS if e.decoder == name or (e.class_prefix and cls.startswith(e.class_prefix))),
                     None)
    normalisation = exception.normalisation if exception else normalisation_of(vae)
    patch = 2 if normalisation == "batchnorm" else 1
    channels = latent_channels(vae)
    if space is not None:
        get_space(space)
        if SPACES[space].channels != channels:
            raise ValueError(f"{cls}'s decoder makes {channels}-channel latents; space {space!r} has "
                             f"{SPACES[space].channels}")
    factor = spatial_factor(pipe, vae, exception.decode_kwargs if exception else {})
    return Convention(
        decoder=name, vae_class=type(vae).__name__, channels=channels, spatial=factor,
        temporal=temporal_factor(pipe, vae), normalisation=normalisation, patch=patch, frame_vae=is_frame_vae(vae),
        frames_kwarg="num_frames" in inspect.signature(vae.decode).parameters, token_patch=token_patch,
        default_size=default_size(pipe, factor),
        space=space or (None if exception else matching_space(vae, normalisation, channels)),
        mirrors=exception.mirrors if exception else "",
        decode_kwargs=tuple(exception.decode_kwargs.items()) if exception else (),
        unit_range=exception.unit_range if exception else False)
