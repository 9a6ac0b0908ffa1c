"""The six previewer families: small modules mapping denoiser latents to RGB in [0, 1].

Every family is a plain function returning a `Previewer`, which wraps a family-specific `body`
(normalised latents (B, C, h, w) → unclamped RGB (B, 3, h·s, w·s), roughly [0, 1]) with the parts
every family shares: an input shape check, a cast to the previewer's own dtype, a per-channel
input normalisation `x * in_scale + in_shift` (identity unless a fitter sets it) and the display
clamp to [0, 1].

Speed (benchmarks/speed.py): where the maths allows, the body absorbs the normalisation into its
first layer's weights on every call (a few operations on weights of at most a few thousand values)
instead of a pass over the latents; activations work in place; the spatial families run
channels-last, which oneDNN's 3x3 convolutions prefer on the CPU.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Previewer(nn.Module):
    def __init__(self, family: str, latent_channels: int, body: nn.Module, scale: int = 1, args: dict | None = None,
                 memory_format: torch.memory_format = torch.preserve_format):
        super().__init__()
        self.family = family
        self.latent_channels = latent_channels
        self.scale = scale  # output pixels per latent pixel
        self.args = dict(args or {})  # constructor keyword arguments, stored in weight files
        self.meta: dict = {}
        self.body = body
        # bodies that can take the normalisation into their first layer say so (InputConv, Layers, Quadratic)
        self.folds_input = getattr(body, "folds_input", False)
        self.memory_format = memory_format  # layout the body runs in
        self.register_buffer("in_scale", torch.ones(latent_channels))
        self.register_buffer("in_shift", torch.zeros(latent_channels))

    def check(self, x: torch.Tensor) -> torch.Tensor:
        """Shape check and cast to the previewer's dtype and memory format."""
        if x.ndim != 4 or x.shape[1] != self.latent_channels:
            raise ValueError(
                f"{self.family} previewer expects latents of shape (B, {self.latent_channels}, h, w), "
                f"got {tuple(x.shape)}"
            )
        return x.to(self.in_scale.dtype, memory_format=self.memory_format)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Shape check, dtype cast and input normalisation: what `body` sees."""
        return torch.addcmul(self.in_shift.view(-1, 1, 1), self.check(x), self.in_scale.view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.folds_input:
            y = self.body(self.check(x), self.in_scale, self.in_shift)
        else:
            y = self.body(self.normalise(x))
        return y.clamp_(0, 1)  # the body's output is a fresh tensor that nothing else holds

    def extra_repr(self) -> str:
        return f"family={self.family}, latent_channels={self.latent_channels}, scale={self.scale}, args={self.args}"


class InputConv(nn.Conv2d):
    """A first-layer conv that can absorb the input normalisation x·scale + shift (per channel).

    conv(x·s + t) = conv_{W·s}(x) + W·t summed over taps, exactly, when every padded pixel is
    normalised like the rest: so only without padding or with replicate padding. Costs a few
    operations on the (out, C, k, k) weight per call instead of one over the latents, a 1.5-3x
    speed-up of `affine` on the CPU (measured, 1 to 4x16x128² latents).
    """

    folds_input = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if any(self.padding) and self.padding_mode != "replicate":
            raise ValueError("InputConv folds the normalisation exactly only without padding or with replicate padding")

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        if scale is None:
            return super().forward(x)
        taps = self.weight.sum((2, 3))  # (out, C): a constant input channel meets every tap
        bias = torch.mv(taps, shift) if self.bias is None else torch.addmv(self.bias, taps, shift)
        return self._conv_forward(x, self.weight * scale.view(1, -1, 1, 1), bias)


class Layers(nn.Sequential):
    """nn.Sequential starting with an InputConv, passing the input normalisation on to it."""

    folds_input = True

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        first, *rest = self
        x = first(x, scale, shift)
        for layer in rest:
            x = layer(x)
        return x


class Quadratic(nn.Module):
    """RGB = b + W·x + xᵀ·Q·x per pixel, evaluated as one quadratic form in homogeneous coordinates.

    Parameters are the 3·(1 + C + C(C+1)/2) free values: `bias` (3,), `weight` (3, C) and
    `quad` (3, C(C+1)/2), the upper triangle of each symmetric Q (row-major, diagonal included).
    """

    folds_input = True

    def __init__(self, latent_channels: int):
        super().__init__()
        c = latent_channels
        self.bias = nn.Parameter(torch.zeros(3))
        self.weight = nn.Parameter(torch.zeros(3, c))
        self.quad = nn.Parameter(torch.zeros(3, c * (c + 1) // 2))
        # Each entry (i, j) of the (C+1)² matrix M is one free value (index into [bias, weight, quad])
        # times a factor: 1 on the diagonal, 1/2 off it (a value is split between (i, j) and (j, i)).
        upper = torch.zeros(c, c, dtype=torch.long)
        rows, cols = torch.triu_indices(c, c)
        upper[rows, cols] = torch.arange(len(rows))
        pair = torch.maximum(upper, upper.T)  # quad index of x_i·x_j, either order
        index = torch.zeros(c + 1, c + 1, dtype=torch.long)
        index[0, 1:] = index[1:, 0] = 1 + torch.arange(c)
        index[1:, 1:] = 1 + c + pair
        self.register_buffer("index", index.flatten(), persistent=False)
        self.register_buffer("factor", torch.where(torch.eye(c + 1, dtype=torch.bool), 1.0, 0.5).flatten(), persistent=False)

    def form(self, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        """(3, C+1, C+1) symmetric matrices M with RGB = [1, x]ᵀ M [1, x]; with scale/shift, of the
        input x·scale + shift: [1, x·s + t] = A [1, x], so M becomes Aᵀ M A."""
        c = self.weight.shape[1]
        values = torch.cat([self.bias[:, None], self.weight, self.quad], 1)  # (3, 1 + C + C(C+1)/2)
        m = (values[:, self.index] * self.factor).view(3, c + 1, c + 1)
        if scale is None:
            return m
        a = torch.diag(F.pad(scale, (1, 0), value=1.0))
        a[1:, 0] = shift
        return a.T @ m @ a

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        # One matmul and a multiply-sum rather than one einsum: 2-4x faster on the CPU (measured).
        b, c, h, w = x.shape
        m = self.form(scale, shift)
        x1 = torch.cat([x.new_ones(b, 1, h, w), x], dim=1).view(b, 1, c + 1, h * w)  # [1, x] per pixel
        mx = torch.matmul(m.view(3 * (c + 1), c + 1), x1.view(b, c + 1, h * w)).view(b, 3, c + 1, h * w)  # M_o [1, x]
        return mx.mul_(x1).sum(2).view(b, 3, h, w)


# Arguments added after weight files shipped, at the value that builds what a file without them holds. A file
# stores them only where they differ from it, so every earlier file's args read back as they were written.
NEUTRAL = {"base": 0, "dilations": (), "upsample": "nearest", "activation": "relu", "refine": ()}


def stored_args(**args) -> dict:
    """A builder's constructor arguments as its weight file stores them (JSON lists for tuples; NEUTRAL ones only
    where set)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in args.items() if k not in NEUTRAL or v != NEUTRAL[k]}


def linear(latent_channels: int) -> Previewer:
    """C×3 matrix, no bias: the classic "latent RGB factors"."""
    body = InputConv(latent_channels, 3, 1, bias=False)
    return Previewer("linear", latent_channels, body)


def affine(latent_channels: int) -> Previewer:
    """C×3 matrix plus bias."""
    body = InputConv(latent_channels, 3, 1)
    return Previewer("affine", latent_channels, body)


def quadratic(latent_channels: int) -> Previewer:
    """Degree-2 polynomial of the C channels per pixel, 45 values for C = 4."""
    return Previewer("quadratic", latent_channels, Quadratic(latent_channels))


class Residual(nn.Module):
    """base(x) + net(x): a map that least squares fits exactly (an affine 1x1, a linear k×k conv or a quadratic form)
    plus a net that learns what it misses. Fitters solve `base` in closed form and start `net` with a
    zero last layer, so training begins at the closed-form solution and can only improve on it.
    With scale > 1 (the upsampler) the base works at latent resolution and its RGB is upscaled bilinearly
    to the net's full-resolution output, so the net starts at the upscaled linear preview."""

    folds_input = True

    def __init__(self, base: nn.Module, net: Layers, scale: int = 1):
        super().__init__()
        self.base = base
        self.net = net
        self.scale = scale

    def forward(self, x: torch.Tensor, scale: torch.Tensor | None = None, shift: torch.Tensor | None = None) -> torch.Tensor:
        base = self.base(x, scale, shift)
        if self.scale > 1:
            base = F.interpolate(base, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.net(x, scale, shift).add_(base)


def linear_base(latent_channels: int, kernel: int) -> InputConv:
    """The closed-form part of a residual body: a linear kernel×kernel conv with bias (1: affine)."""
    return InputConv(latent_channels, 3, kernel, padding=kernel // 2, padding_mode="replicate")


def mlp(latent_channels: int, hidden: tuple[int, ...] = (32, 32), base: int = 0) -> Previewer:
    """Per-pixel MLP as 1x1 convs with SiLU between layers; base=1 adds it to an affine map, base=2 to a
    quadratic form (Residual: the degree of the least-squares polynomial it starts from)."""
    if base not in (0, 1, 2):
        raise ValueError(f"mlp is per-pixel: base must be 0 (none), 1 (an affine map) or 2 (a quadratic form), got {base}")
    widths = (latent_channels, *hidden)
    layers: list[nn.Module] = []
    for n_in, n_out in zip(widths, widths[1:]):
        layers += [(nn.Conv2d if layers else InputConv)(n_in, n_out, 1), nn.SiLU(inplace=True)]
    body = Layers(*layers, (nn.Conv2d if layers else InputConv)(widths[-1], 3, 1))
    if base:
        body = Residual(linear_base(latent_channels, 1) if base == 1 else Quadratic(latent_channels), body)
    return Previewer("mlp", latent_channels, body, args=stored_args(hidden=hidden, base=base))


def conv(latent_channels: int, channels: tuple[int, ...] = (64, 64), kernels: tuple[int, ...] = (3, 3, 1),
         base: int = 0, dilations: tuple[int, ...] = ()) -> Previewer:
    """Convs at latent resolution (spatial context); ReLU between layers, `kernels` has one more entry
    than `channels`. channels=() with kernels=(k,) is one linear k×k conv (closed-form fittable).
    base=k > 0 adds the net to a linear k×k conv (Residual). `dilations` (one per kernel, default all 1)
    spreads a layer's taps d latent pixels apart: more context at the same cost."""
    if len(kernels) != len(channels) + 1 or any(k % 2 == 0 for k in kernels + ((base,) if base else ())):
        raise ValueError(f"conv needs len(kernels) == len(channels) + 1 and odd kernels, got {channels}, {kernels}"
                         + (f", base {base}" if base else ""))
    if base and not channels:
        raise ValueError("conv with base needs a net (channels) to add to it; a lone linear conv is channels=()")
    if dilations and (len(dilations) != len(kernels) or any(not isinstance(d, int) or d < 1 for d in dilations)
                      or not channels):
        raise ValueError(f"conv dilations need a net (channels; a lone linear conv is fitted in closed form, undilated)"
                         f" and one positive integer per kernel, got {dilations} for kernels {kernels}")
    dilations = dilations if any(d != 1 for d in dilations) else ()  # all 1: the undilated net
    widths = (latent_channels, *channels, 3)
    layers: list[nn.Module] = []
    for i, (k, d) in enumerate(zip(kernels, dilations or (1,) * len(kernels))):
        layers.append((InputConv if i == 0 else nn.Conv2d)(widths[i], widths[i + 1], k, padding=d * (k // 2),
                                                            dilation=d, padding_mode="replicate"))
        if i < len(channels):
            layers.append(nn.ReLU(inplace=True))
    body = Layers(*layers)
    if base:
        body = Residual(linear_base(latent_channels, base), body)
    return Previewer("conv", latent_channels, body, memory_format=torch.channels_last,
                     args=stored_args(channels=channels, kernels=kernels, dilations=dilations, base=base))


# "leaky" (slope 0.2) cannot output zero everywhere: flux1's first shuffle upsampler, trained with ReLU at lr 2e-3, lost
# its whole last stage that way (training.fit.dead_relus) and ended as its linear base upscaled; leaky at that lr
# diverged instead, leaky at 5e-4 trained (benchmarks/fit_upsampler.sh)
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "leaky": lambda: nn.LeakyReLU(0.2, inplace=True)}


class ResidualBlock(nn.Module):
    """x + conv(act(conv(x))): two 3x3 convs at constant width, the trunk's unit of depth."""

    def __init__(self, width: int, activation: str = "relu"):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"),
                                   ACTIVATIONS[activation](),
                                   nn.Conv2d(width, width, 3, padding=1, padding_mode="replicate"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).add_(x)


def upsampler(latent_channels: int, width: int = 64, depth: int = 2, stages: tuple[int, ...] = (48, 32, 16),
              upsample: str = "nearest", base: int = 0, activation: str = "relu",
              refine: tuple[int, ...] = ()) -> Previewer:
    """Tiny conv decoder to full resolution: a trunk at latent resolution, where convs are cheap, then one 2x
    stage per entry of `stages` (its output width) and a final 3x3 conv to RGB. Output is 2**len(stages) times
    the latent size (8x for SD-style VAEs, 4x: a half-resolution preview). Two designs, by `upsample`:
    "shuffle" (the shipped one, shuffle_body) and "nearest" (the first one, nearest_body, kept so its files load
    unchanged); base, activation and refine are the shuffle design's.
    base=k > 0 adds the net to a least-squares linear k×k conv upscaled bilinearly (Residual)."""
    check_upsampler(stages, upsample, base, activation, refine)
    refine = refine if any(refine) else ()  # all 0: no refinement convs
    scale = 2 ** len(stages)
    args = stored_args(width=width, depth=depth, stages=stages, upsample=upsample, activation=activation,
                       refine=refine, base=base)
    if upsample == "nearest":
        return Previewer("upsampler", latent_channels, nearest_body(latent_channels, width, depth, stages),
                         scale=scale, args=args, memory_format=torch.channels_last)
    body = shuffle_body(latent_channels, width, depth, stages, activation, refine)
    if base:
        body = Residual(linear_base(latent_channels, base), body, scale=scale)
    return Previewer("upsampler", latent_channels, body, scale=scale, args=args, memory_format=torch.channels_last)


UPSAMPLES = ("nearest", "shuffle")


def check_upsampler(stages: tuple[int, ...], upsample: str, base: int, activation: str,
                    refine: tuple[int, ...]) -> None:
    """ValueError for an upsampler design that does not exist: the shuffle design's options with "nearest"."""
    if upsample not in UPSAMPLES:
        raise ValueError(f"upsample must be one of {', '.join(UPSAMPLES)}, got {upsample!r}")
    if base and (upsample != "shuffle" or base % 2 == 0):
        raise ValueError(f"upsampler base must be an odd kernel and needs upsample='shuffle', got base {base}")
    if activation not in ACTIVATIONS or (activation != "relu" and upsample != "shuffle"):
        raise ValueError(f"upsampler activation must be one of {', '.join(ACTIVATIONS)} (other than relu only with "
                         f"upsample='shuffle'), got {activation!r}")
    if refine and (upsample != "shuffle" or len(refine) != len(stages)
                   or any(not isinstance(n, int) or n < 0 for n in refine)):
        raise ValueError(f"upsampler refine needs upsample='shuffle' and one count (an integer >= 0) per stage, got "
                         f"{list(refine)} for stages {list(stages)}")


def shuffle_body(latent_channels: int, width: int, depth: int, stages: tuple[int, ...], activation: str,
                 refine: tuple[int, ...]) -> Layers:
    """The shipped design: conv to `width`, `depth` ResidualBlocks, and per stage a 3x3 conv to 4·width at the
    current resolution followed by a pixel shuffle (learned sub-pixel upsampling: the conv runs at the lower
    resolution). Replicate padding throughout, so the input normalisation folds into the first conv. The activation
    follows every conv but the last; refine (one count per stage) adds that many 3x3 convs, each followed by the
    activation, at the stage's width and output resolution: capacity where the detail of the image forms."""
    act = ACTIVATIONS[activation]
    layers = [InputConv(latent_channels, width, 3, padding=1, padding_mode="replicate"), act()]
    layers += [ResidualBlock(width, activation) for _ in range(depth)]
    n_in = width
    for n_out, extra in zip(stages, refine or (0,) * len(stages)):
        layers += [nn.Conv2d(n_in, 4 * n_out, 3, padding=1, padding_mode="replicate"), nn.PixelShuffle(2), act()]
        for _ in range(extra):
            layers += [nn.Conv2d(n_out, n_out, 3, padding=1, padding_mode="replicate"), act()]
        n_in = n_out
    layers.append(nn.Conv2d(n_in, 3, 3, padding=1, padding_mode="replicate"))
    return Layers(*layers)


def nearest_body(latent_channels: int, width: int, depth: int, stages: tuple[int, ...]) -> nn.Sequential:
    """The first design: conv to `width`, `depth` more 3x3 convs, per stage a nearest 2x upsample and a 3x3 conv;
    ReLU after every conv but the last. Zero padding, so the normalisation stays a separate step (it would not
    fold exactly)."""
    layers: list[nn.Module] = [nn.Conv2d(latent_channels, width, 3, padding=1), nn.ReLU(inplace=True)]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(inplace=True)]
    n_in = width
    for n_out in stages:
        layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(n_in, n_out, 3, padding=1),
                   nn.ReLU(inplace=True)]
        n_in = n_out
    layers.append(nn.Conv2d(n_in, 3, 3, padding=1))
    return nn.Sequential(*layers)


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
