"""FLUX token layouts → spatial latents (B, C, h, w), the layout previewers take.

FLUX.1 and FLUX.2 pipelines hold their latents as tokens (B, (h/2)·(w/2), 4·C): every 2x2 patch
of the spatial latent (C, h, w) becomes one token, channel index 4c + 2dy + dx, tokens in
row-major order. FLUX.1 calls the inverse "unpacking" (C = 16); FLUX.2 "unpacking" to
(B, 4·C, h/2, w/2) followed by "unpatchifying" to (B, C, h, w) (C = 32). Both are the same
permutation, so one function serves both. Nothing is rescaled: FLUX.2 tokens stay in the
BatchNorm-normalised space the previewers take.
"""

import math

import torch

MAX_ASPECT = 2.5  # the widest image a size is inferred for (21:9 ≈ 2.33 is the widest common preset)


def latent_size(height: int, width: int, vae_scale_factor: int) -> tuple[int, int]:
    """Spatial latent (h, w) for an image of height x width pixels, as the FLUX pipelines round it
    (to a multiple of 2 latent pixels, so that 2x2 patches tile it)."""
    return 2 * (int(height) // (vae_scale_factor * 2)), 2 * (int(width) // (vae_scale_factor * 2))


def unpack_tokens(tokens: torch.Tensor, height: int, width: int, vae_scale_factor: int) -> torch.Tensor:
    """(B, (h/2)·(w/2), 4·C) tokens of a height x width image → (B, C, h, w) spatial latents."""
    h, w = latent_size(height, width, vae_scale_factor)
    if tokens.ndim != 3 or tokens.shape[2] % 4:
        raise ValueError(f"expected packed tokens (B, N, 4·C), got shape {tuple(tokens.shape)}")
    b, n, d = tokens.shape
    if n != (h // 2) * (w // 2):
        raise ValueError(
            f"{n} tokens do not tile a {height}x{width} image ({h // 2}x{w // 2} = {(h // 2) * (w // 2)} tokens at "
            f"vae_scale_factor {vae_scale_factor}); pass the image size the pipeline ran at as height=/width= "
            "(--height/--width on the command line)"
        )
    x = tokens.reshape(b, h // 2, w // 2, d // 4, 2, 2)  # (B, h/2, w/2, C, dy, dx)
    return x.permute(0, 3, 1, 4, 2, 5).reshape(b, d // 4, h, w)


def infer_size(tokens: int, vae_scale_factor: int) -> tuple[int, int] | None:
    """(height, width) in pixels of the one image shape whose 2x2-patch grid has `tokens` tokens and an
    aspect ratio of at most MAX_ASPECT, or None when there are none or several (e.g. 1024x768 and
    768x1024 always both fit: only square sizes can be told from the count)."""
    shapes = [(rows, tokens // rows) for rows in range(1, math.isqrt(tokens) + 1) if tokens % rows == 0]
    shapes = [(r, c) for r, c in shapes if c / r <= MAX_ASPECT]
    shapes += [(c, r) for r, c in shapes if r != c]  # either orientation
    if len(shapes) != 1:
        return None
    rows, cols = shapes[0]
    patch = 2 * vae_scale_factor  # pixels per token side
    return rows * patch, cols * patch
