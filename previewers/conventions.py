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
The layout of each step's latents is read from their shape: (B, C, h, w); (B, C, T, h, w), (B, T, C, h, w) or
channels-last (B, T, h, w, C); (B, C·p², h/p, w/p) patchified; or packed tokens (B, T'·H'·W', C·pt·p·p), feature
order (C, pt, p, p) as every diffusers `_pack_latents` writes it, which need the image size in pixels.
EXCEPTIONS holds the few pipelines whose decode code departs from what their decoder's config implies.

Previewers see "model space": the denoiser's x, as spatial frames (B·T, C, h, w) (FLUX.2: unpatchified to 32
channels, still normalised). SPACES lists the spaces of the shipped previewers; a pipeline whose decoder has one
of their configs (whatever the pipeline class) is in that space.
"""

import inspect
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

DECODERS = ("vae", "movq", "vqgan", "vqvae")  # pipeline attributes that hold the latent decoder, in order
MAX_ASPECT = 2.5  # the widest image whose size is inferred from a token count (21:9 ≈ 2.33 is the widest preset)


@dataclass(frozen=True)
class LatentSpace:
    """A shipped previewers' space: the VAE config its denoiser latents come from (for tests, docs and matching)."""
    name: str
    channels: int
    teacher: str  # TAESD-family teacher in ../shared/models/teachers
    kind: str  # "ddpm": noised as sqrt(ᾱ)z + sqrt(1-ᾱ)ε; "flow": (1-σ)z + σε
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
    call = getattr(type(pipe), "__call__", None)
    params = inspect.signature(call).parameters if callable(call) and not isinstance(pipe, type) else {}
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


def infer_size(tokens: int, pixels_per_token: int) -> tuple[int, int] | None:
    """(height, width) of the one image shape with `tokens` tokens and an aspect ratio of at most MAX_ASPECT, or
    None when there are none or several (e.g. 1024x768 and 768x1024 always both fit: only squares can be told)."""
    shapes = [(rows, tokens // rows) for rows in range(1, math.isqrt(tokens) + 1) if tokens % rows == 0]
    shapes = [(r, c) for r, c in shapes if c / r <= MAX_ASPECT]
    shapes += [(c, r) for r, c in shapes if r != c]
    if len(shapes) != 1:
        return None
    return shapes[0][0] * pixels_per_token, shapes[0][1] * pixels_per_token


class PipelineLatents:
    """A convention bound to its decoder (and, for packed tokens, the image size in pixels): every conversion
    (step latents → frames → decoder input, and images → frames for fitting) in one place, shared by the callback,
    `previewer="vae"` and the fit on first use."""

    def __init__(self, convention: Convention, vae=None, height: int | None = None, width: int | None = None):
        self.convention = convention
        self.vae = vae
        self.size = (height, width) if height is not None and width is not None else convention.default_size
        self.size_given = height is not None and width is not None

    @property
    def channels(self) -> int:
        return self.convention.channels

    @property
    def factor(self) -> int:
        return self.convention.spatial

    def frames(self, latents: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Step latents in any layout of the module docstring → (B, T, C, h, w) model-space frames.
        `size`: the (height, width) in pixels of this run, when the caller knows it (packed tokens need it)."""
        c = self.channels
        shape = tuple(latents.shape)
        if latents.ndim == 3:
            return self.unpack(latents, size)
        if latents.ndim == 4 and shape[1] == c:
            return latents[:, None]
        if latents.ndim == 4 and shape[1] == c * 4:
            return F.pixel_shuffle(latents, 2)[:, None]  # patchified (B, 4C, h/2, w/2), channel 4c + 2dy + dx
        if latents.ndim == 5:
            if shape[1] == c:
                return latents.transpose(1, 2)
            if shape[2] == c:
                return latents
            # channels-last (B, T, h, w, C); Kandinsky 5 I2V appends its image condition (C) and mask (1)
            # channels: kandinsky5/pipeline_kandinsky_i2v.py, torch.cat([latents, visual_cond, visual_cond_mask], -1)
            if shape[4] in (c, 2 * c + 1):
                return latents[..., :c].permute(0, 1, 4, 2, 3)
        raise ValueError(f"latents of shape {shape} do not hold {c}-channel latents in any known layout ((B, C, h, w), "
                         "(B, C, T, h, w), (B, T, C, h, w), (B, T, h, w, C) or packed tokens (B, N, C·p²))")

    def unpack(self, tokens: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
        """(B, T'·H'·W', C·pt·p·p) tokens → (B, T'·pt, C, H'·p, W'·p) frames."""
        b, n, d = tokens.shape
        c = self.channels
        pt, p = self.convention.token_patch or (1, math.isqrt(d // c))
        if d != c * pt * p * p:
            raise ValueError(f"tokens of {d} features are not {c}-channel latents in {pt}x{p}x{p} patches")
        pixels = self.factor * p  # pixels per token along a side
        height, width = size or self.size or infer_size(n, pixels) or (None, None)
        if height is None:
            raise ValueError("these latents are packed tokens: pass the image size the pipeline runs at "
                             "(height= and width= in pixels)")
        rows, cols = int(height) // pixels, int(width) // pixels
        frames_fit = n == rows * cols or (self.convention.temporal > 1 and rows * cols and n % (rows * cols) == 0)
        if not frames_fit:
            inferred = None if size is not None or self.size_given else infer_size(n, pixels)
            if inferred is None:
                raise ValueError(f"{n} tokens do not tile a {height}x{width} image ({rows}x{cols} tokens per frame); "
                                 "pass the image size the pipeline runs at: height=/width= to PreviewCallback.for_pipeline "
                                 "(--height/--width on the command line)")
            self.size = inferred
            rows, cols = inferred[0] // pixels, inferred[1] // pixels
        x = tokens.reshape(b, n // (rows * cols), rows, cols, c, pt, p, p)
        return x.permute(0, 1, 5, 4, 2, 6, 3, 7).reshape(b, -1, c, rows * p, cols * p)

    def affine(self, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-channel (a, b) with z = x · a + b, shaped (1, C·p², 1, 1)."""
        conv, vae = self.convention, self.vae
        n = self.channels * conv.patch**2
        scale = float(config_get(vae.config, "scaling_factor") or 1.0) if vae is not None else 1.0
        kind = conv.normalisation
        if kind == "batchnorm":
            a = torch.sqrt(vae.bn.running_var + float(config_get(vae.config, "batch_norm_eps")))
            b = vae.bn.running_mean
        elif kind == "mean_std":
            b, std = mean_std(vae)
            a = std / scale
        elif kind == "multiply":
            a, b = torch.full((n,), float(config_get(vae.config, "scale_factor"))), torch.zeros(n)
        elif kind == "identity":
            a, b = torch.ones(n), torch.zeros(n)
        else:
            shift = float(config_get(vae.config, "shift_factor") or 0.0) if kind == "scale_shift" else 0.0
            a, b = torch.full((n,), 1 / scale), torch.full((n,), shift)
        return a.to(device, dtype).view(1, -1, 1, 1), b.to(device, dtype).view(1, -1, 1, 1)

    def normalise(self, x: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """(N, C, h, w) model space → raw decoder latents z (inverse: z → model space)."""
        p = self.convention.patch
        if x.shape[-2] % p or x.shape[-1] % p:
            raise ValueError(f"{self.convention.vae_class}: latent height and width must be multiples of the patch "
                             f"size {p}, got {tuple(x.shape[-2:])}")
        a, b = self.affine(x.device, x.dtype)
        x = F.pixel_unshuffle(x, p)
        return F.pixel_shuffle((x - b) / a if inverse else x * a + b, p)

    def to_decoder(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) model-space frames → the tensor the pipeline hands its decoder."""
        b, t = frames.shape[:2]
        z = self.normalise(frames.reshape(b * t, *frames.shape[2:]).to(self.vae.dtype))
        z = z.view(b, t, *z.shape[1:])
        if self.convention.frame_vae:
            return z.transpose(1, 2)  # (B, C, T, h, w)
        return z.flatten(0, 1)  # image decoders take frames as a batch (AnimateDiff, Latte; SVD with num_frames)

    def from_encoder(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's raw latent z ((B, C, h, w), or (B, C, T, h, w) for frame VAEs) → (B, T, C, h, w)."""
        z = z.transpose(1, 2) if self.convention.frame_vae else z[:, None]
        b, t = z.shape[:2]
        return self.normalise(z.reshape(b * t, *z.shape[2:]), inverse=True).view(b, t, *z.shape[2:])

    @torch.no_grad()
    def decode_unclamped(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, T, C, h, w) model-space frames → (B, T', 3, H, W) float RGB, about [0, 1] but unclamped, decoded as
        the pipeline decodes (T' = video frames for a video VAE)."""
        b, t = frames.shape[:2]
        if self.vae is None:  # pixel space: the latents are the image in [-1, 1]
            return (frames.float() + 1) / 2
        kwargs = dict(self.convention.decode_kwargs)
        if self.convention.frames_kwarg:
            kwargs["num_frames"] = t
        if config_get(self.vae.config, "timestep_conditioning"):  # LTX: the pipelines' default decode_timestep 0
            kwargs["temb"] = torch.zeros(b, device=frames.device, dtype=self.vae.dtype)
        out = self.vae.decode(self.to_decoder(frames), return_dict=False, **kwargs)[0]
        out = out.transpose(1, 2) if out.ndim == 5 else out.view(b, -1, *out.shape[1:])
        return out.float() if self.convention.unit_range else (out.float() + 1) / 2

    def decode(self, frames: torch.Tensor) -> torch.Tensor:
        """decode_unclamped() clamped to [0, 1], as the pipeline's image."""
        return self.decode_unclamped(frames).clamp(0, 1)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in [0, 1] → (B, 1, C, h, w) model-space frames (the latent distribution's mode)."""
        x = images.to(self.vae.device, self.vae.dtype)
        x = x if self.convention.unit_range else x * 2 - 1
        out = self.vae.encode(x[:, :, None] if self.convention.frame_vae else x)
        z = out.latent_dist.mode() if hasattr(out, "latent_dist") else out[0]  # Tiny/DC/VQ: no distribution
        return self.from_encoder(z)


def unpack_tokens(tokens: torch.Tensor, channels: int, height: int, width: int, factor: int) -> torch.Tensor:
    """(B, N, C·p²) packed tokens of one height x width image (`factor` pixels per latent) → (B, C, h, w)."""
    frames = PipelineLatents(Convention(None, "tokens", channels, factor), height=height, width=width).frames(tokens)
    if frames.shape[1] != 1:
        raise ValueError(f"{tokens.shape[1]} tokens hold {frames.shape[1]} frames of a {height}x{width} image, not one")
    return frames[:, 0]


def bind(pipe, height: int | None = None, width: int | None = None, space: str | None = None) -> PipelineLatents:
    """`pipe`'s convention bound to its decoder; packed tokens default to the pipeline's default image size."""
    convention = derive(pipe, space)
    return PipelineLatents(convention, find_decoder(pipe)[1], height, width)


def bind_vae(vae, space: str | None = None) -> PipelineLatents:
    """A bare VAE's convention, as a pipeline holding it as `vae` would use it (its config's compression)."""
    return bind(type("VaeOnly", (), {"vae": vae})(), space=space)
