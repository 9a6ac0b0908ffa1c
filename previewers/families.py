"""The six previewer families: small modules mapping denoiser latents to RGB in [0, 1].

Every family is a plain function returning a `Previewer`, which wraps a family-specific `body`
(normalised latents (B, C, h, w) → unclamped RGB (B, 3, h·s, w·s), roughly [0, 1]) with the parts
every family shares: an input shape check, a cast to the previewer's own dtype, a per-channel
input normalisation `x * in_scale + in_shift` (identity unless a fitter sets it) and the display
clamp to [0, 1].
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Previewer(nn.Module):
    def __init__(self, family: str, latent_channels: int, body: nn.Module, scale: int = 1, args: dict | None = None):
        super().__init__()
        self.family = family
        self.latent_channels = latent_channels
        self.scale = scale  # output pixels per latent pixel
        self.args = dict(args or {})  # constructor keyword arguments, stored in weight files
        self.meta: dict = {}
        self.body = body
        self.register_buffer("in_scale", torch.ones(latent_channels))
        self.register_buffer("in_shift", torch.zeros(latent_channels))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Shape check, dtype cast and input normalisation: what `body` sees."""
        if x.ndim != 4 or x.shape[1] != self.latent_channels:
            raise ValueError(
                f"{self.family} previewer expects latents of shape (B, {self.latent_channels}, h, w), "
                f"got {tuple(x.shape)}"
            )
        x = x.to(self.in_scale.dtype)
        return torch.addcmul(self.in_shift[:, None, None], x, self.in_scale[:, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.normalise(x)).clamp(0, 1)

    def extra_repr(self) -> str:
        return f"family={self.family}, latent_channels={self.latent_channels}, scale={self.scale}, args={self.args}"


class Quadratic(nn.Module):
    """RGB = b + W·x + xᵀ·Q·x per pixel, evaluated as one quadratic form in homogeneous coordinates.

    Parameters are the 3·(1 + C + C(C+1)/2) free values: `bias` (3,), `weight` (3, C) and
    `quad` (3, C(C+1)/2), the upper triangle of each symmetric Q (row-major, diagonal included).
    """

    def __init__(self, latent_channels: int):
        super().__init__()
        c = latent_channels
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight = nn.Parameter(torch.zeros(3, c))
        self.quad = nn.Parameter(torch.zeros(3, c * (c + 1) // 2))
        rows, cols = torch.triu_indices(c, c)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def form(self) -> torch.Tensor:
        """(3, C+1, C+1) symmetric matrices M with RGB = [1, x]ᵀ M [1, x]."""
        c = self.weight.shape[1]
        q = self.quad.new_zeros(3, c, c)
        q[:, self.rows, self.cols] = self.quad
        q = (q + q.transpose(1, 2)) / 2  # off-diagonal values are split between (i, j) and (j, i)
        m = self.quad.new_zeros(3, c + 1, c + 1)
        m[:, 0, 0] = self.bias
        m[:, 0, 1:] = self.weight / 2
        m[:, 1:, 0] = self.weight / 2
        m[:, 1:, 1:] = q
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = torch.cat([x.new_ones(x.shape[0], 1, *x.shape[2:]), x], dim=1)  # (B, C+1, h, w)
        return torch.einsum("bihw,oij,bjhw->bohw", x1, self.form(), x1)


def linear(latent_channels: int) -> Previewer:
    """C×3 matrix, no bias: the classic "latent RGB factors"."""
    body = nn.Conv2d(latent_channels, 3, 1, bias=False)
    return Previewer("linear", latent_channels, body)


def affine(latent_channels: int) -> Previewer:
    """C×3 matrix plus bias."""
    body = nn.Conv2d(latent_channels, 3, 1)
    return Previewer("affine", latent_channels, body)


def quadratic(latent_channels: int) -> Previewer:
    """Degree-2 polynomial of the C channels per pixel, 45 values for C = 4."""
    return Previewer("quadratic", latent_channels, Quadratic(latent_channels))


def mlp(latent_channels: int, hidden: tuple[int, ...] = (32, 32)) -> Previewer:
    """Per-pixel MLP as 1x1 convs with SiLU between layers."""
    widths = (latent_channels, *hidden)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [nn.Conv2d(n_in, n_out, 1), nn.SiLU()]
    body = nn.Sequential(*layers, nn.Conv2d(widths[-1], 3, 1))
    return Previewer("mlp", latent_channels, body, args={"hidden": list(hidden)})


def conv(latent_channels: int, channels: tuple[int, ...] = (64, 64), kernels: tuple[int, ...] = (3, 3, 1)) -> Previewer:
    """Convs at latent resolution (spatial context); ReLU between layers, `kernels` has one more entry
    than `channels`. channels=() with kernels=(k,) is one linear k×k conv (closed-form fittable)."""
    if len(kernels) != len(channels) + 1 or any(k % 2 == 0 for k in kernels):
        raise ValueError(f"conv needs len(kernels) == len(channels) + 1 and odd kernels, got {channels}, {kernels}")
    widths = (latent_channels, *channels, 3)
    layers: list[nn.Module] = []
    for i, k in enumerate(kernels):
        layers.append(nn.Conv2d(widths[i], widths[i + 1], k, padding=k // 2, padding_mode="replicate"))
        if i < len(channels):
            layers.append(nn.ReLU())
    return Previewer("conv", latent_channels, nn.Sequential(*layers), args={"channels": list(channels), "kernels": list(kernels)})


def upsampler(latent_channels: int, width: int = 64, depth: int = 2, stages: tuple[int, ...] = (48, 32, 16)) -> Previewer:
    """Tiny conv decoder to full resolution. A trunk at latent resolution, where convs are cheap
    (conv to `width`, then `depth` more 3x3 convs), then one stage per entry of `stages`: nearest 2x
    upsample and a 3x3 conv to that width; a final 3x3 conv to RGB. ReLU after every conv but the
    last. Output is 2**len(stages) times the latent size (8x for SD-style VAEs)."""
    layers: list[nn.Module] = [nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU()]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    n_in = width
    for n_out in stages:
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(n_in, n_out, 3, padding=1), nn.ReLU()]
        n_in = n_out
    layers.append(nn.Conv2d(n_in, 3, 3, padding=1))
    return Previewer("upsampler", latent_channels, nn.Sequential(*layers), scale=2 ** len(stages),
                     args={"width": width, "depth": depth, "stages": list(stages)})


BUILDERS = {"linear": linear, "affine": affine, "quadratic": quadratic, "mlp": mlp, "conv": conv, "upsampler": upsampler}
FAMILIES = tuple(BUILDERS)


def build(family: str, latent_channels: int, **args) -> Previewer:
    """Build a family by name with its constructor arguments (as stored in weight files)."""
    if family not in BUILDERS:
        raise ValueError(f"unknown previewer family {family!r}; known: {', '.join(FAMILIES)}")
    if not isinstance(latent_channels, int) or latent_channels < 1:
        raise ValueError(f"latent_channels must be a positive integer, got {latent_channels!r}")
    try:
        return BUILDERS[family](latent_channels, **{k: tuple(v) if isinstance(v, list) else v for k, v in args.items()})
    except TypeError as e:
        raise ValueError(f"bad arguments for family {family!r}: {args} ({e})") from None
