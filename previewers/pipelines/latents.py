"""A pipeline's step latents bound to its decoder: every conversion between layouts, model space and decoder input.

The layout of each step's latents is read from their shape: (B, C, h, w); (B, C, T, h, w), (B, T, C, h, w) or
channels-last (B, T, h, w, C); (B, C·p², h/p, w/p) patchified; or packed tokens (B, T'·H'·W', C·pt·p·p), feature
order (C, pt, p, p) as every diffusers `_pack_latents` writes it, which need the image size in pixels.

Previewers see "model space": the denoiser's x, as spatial frames (B·T, C, h, w) (FLUX.2: unpatchified to 32
channels, still normalised).
"""

import math

import torch
import torch.nn.functional as F

from previewers.pipelines.conventions import Convention, config_get, derive, find_decoder, mean_std

MAX_ASPECT = 2.5  # the widest image whose size is inferred from a token count (21:9 ≈ 2.33 is the widest preset)


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
        convention, vae = self.convention, self.vae
        n = self.channels * convention.patch**2
        scale = float(config_get(vae.config, "scaling_factor") or 1.0) if vae is not None else 1.0
        normalisation = convention.normalisation
        if normalisation == "batchnorm":
            a = torch.sqrt(vae.bn.running_var + float(config_get(vae.config, "batch_norm_eps")))
            b = vae.bn.running_mean
        elif normalisation == "mean_std":
            b, std = mean_std(vae)
            a = std / scale
        elif normalisation == "multiply":
            a, b = torch.full((n,), float(config_get(vae.config, "scale_factor"))), torch.zeros(n)
        elif normalisation == "identity":
            a, b = torch.ones(n), torch.zeros(n)
        else:
            shift = float(config_get(vae.config, "shift_factor") or 0.0) if normalisation == "scale_shift" else 0.0
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
