"""The TAESD family of tiny autoencoders (taesd, taesdxl, taesd3, taef1, taef2), their state dicts,
and their decoders as previewers.

Layer order follows the shipped files, whose keys are `nn.Sequential` indices. Images are
(B, 3, H, W) in [0, 1]; latents are (B, C, H/8, W/8) in the denoiser's convention.
`pooled` is the taef2 variant: its three lowest-resolution blocks add a GroupNorm branch.
The fitting side (training/teachers.py) uses these networks as teachers; `previewer` and
`from_autoencoder_tiny` wrap a decoder as a `Previewer` (family "taesd").
"""

from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

from previewers.models.card import WeightCard
from previewers.models.families import Previewer
from previewers.models.spaces import SPACES

WIDTH = 64  # channels of every hidden layer
POOL_WIDTH = 256  # hidden channels of the pooled blocks' GroupNorm branch


def conv3x3(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)


class Clamp(nn.Module):
    """Soft clamp of decoder input latents to (-3, 3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


def pool(channels: int) -> nn.Sequential:
    # GroupNorm over the whole feature map is the only place image-wide statistics enter
    return nn.Sequential(
        nn.Conv2d(channels, POOL_WIDTH, 1, bias=False),
        nn.GroupNorm(4, POOL_WIDTH),
        nn.ReLU(),
        nn.Conv2d(POOL_WIDTH, channels, 1, bias=False),
    )


class Block(nn.Module):
    """Three 3x3 convs plus a skip (1x1 conv when the channel count changes), ReLU of the sum."""

    def __init__(self, n_in: int, n_out: int, pooled: bool = False):
        super().__init__()
        if pooled:
            self.pool = pool(n_in)
        self.conv = nn.Sequential(conv3x3(n_in, n_out), nn.ReLU(), conv3x3(n_out, n_out), nn.ReLU(), conv3x3(n_out, n_out))
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "pool"):
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def blocks(n: int, pooled: bool = False) -> list[nn.Module]:
    return [Block(WIDTH, WIDTH, pooled) for _ in range(n)]


def decoder(latent_channels: int, pooled: bool = False) -> nn.Sequential:
    """(B, C, h, w) latents → (B, 3, 8h, 8w) RGB, approximately in [0, 1]."""
    def up() -> list[nn.Module]:
        return [nn.Upsample(scale_factor=2), conv3x3(WIDTH, WIDTH, bias=False)]

    return nn.Sequential(
        Clamp(), conv3x3(latent_channels, WIDTH), nn.ReLU(),
        *blocks(3, pooled), *up(),
        *blocks(3), *up(),
        *blocks(3), *up(),
        *blocks(1), conv3x3(WIDTH, 3),
    )


def encoder(latent_channels: int, pooled: bool = False) -> nn.Sequential:
    """(B, 3, H, W) RGB in [0, 1] → (B, C, H/8, W/8) latents."""
    def down(pooled_blocks: bool = False) -> list[nn.Module]:
        return [conv3x3(WIDTH, WIDTH, stride=2, bias=False), *blocks(3, pooled_blocks)]

    return nn.Sequential(
        conv3x3(3, WIDTH), *blocks(1),
        *down(), *down(), *down(pooled),
        conv3x3(WIDTH, latent_channels),
    )


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """A .safetensors file, or a torch state dict (.pth/.pt, loaded with weights_only) on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # every reader failure here means "not a readable state dict"
        why = (str(e).splitlines()[0][:120] if path.suffix == ".safetensors"
               else "torch.load(weights_only=True) failed: a corrupt file, or a pickled object rather than a state dict")
        raise ValueError(f"{path}: not a readable state dict ({type(e).__name__}: {why})") from e
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: not a state dict of tensors (found {type(state).__name__})")
    return state


def sequential_keys(keys) -> bool:
    """Whether tensor names are nn.Sequential indices ("3.conv.0.weight"), as in TAESD's files."""
    keys = list(keys)
    return bool(keys) and all(k.split(".")[0].isdigit() for k in keys)


def detect(state: dict[str, torch.Tensor]) -> tuple[str, int, bool]:
    """(role, latent_channels, pooled) of a TAESD state dict, from its keys and shapes.

    The encoder starts with a 3→64 conv at index 0; the decoder starts with the parameter-free
    Clamp, so its first weight is the C→64 conv at index 1. Raises ValueError otherwise.
    """
    if not sequential_keys(state):
        raise ValueError("keys are not nn.Sequential indices")
    first = state.get("0.weight")
    if first is not None and tuple(first.shape) == (WIDTH, 3, 3, 3):
        last = max(int(k.split(".")[0]) for k in state)
        out = state.get(f"{last}.weight")
        if out is None or out.ndim != 4:
            raise ValueError("encoder without a final conv")
        role, channels = "encoder", out.shape[0]
    elif "0.weight" not in state and "1.weight" in state and state["1.weight"].ndim == 4 and state["1.weight"].shape[0] == WIDTH:
        role, channels = "decoder", state["1.weight"].shape[1]
    else:
        raise ValueError("neither a TAESD encoder (3→64 conv at index 0) nor decoder (C→64 conv at index 1)")
    pooled = any(".pool." in k for k in state)
    return role, int(channels), pooled


def load_model_and_role(path) -> tuple[nn.Sequential, str]:
    """Load a TAESD encoder or decoder file → (float32 model in eval mode, "encoder" | "decoder").

    The role, channel count and pooled variant come from the state dict, never the file name.
    """
    return model_and_role(read_state_dict(path), path)


def model_and_role(state: dict[str, torch.Tensor], where) -> tuple[nn.Sequential, str]:
    """(float32 model in eval mode, role) rebuilt from a TAESD state dict; errors name `where`."""
    try:
        role, channels, pooled = detect(state)
    except ValueError as e:
        raise ValueError(f"{where}: not a TAESD encoder or decoder state dict ({e})") from None
    model = (encoder if role == "encoder" else decoder)(channels, pooled)
    problem = mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{where}: looks like a {channels}-channel TAESD {role} but does not match it ({problem})")
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return model.eval(), role


def mismatch(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """A short description of how `state` differs from `expected` in keys or shapes; "" when it fits."""
    missing = sorted(expected.keys() - state.keys())
    unexpected = sorted(state.keys() - expected.keys())
    wrong = sorted(k for k in expected.keys() & state.keys() if expected[k].shape != state[k].shape)
    parts = [f"{what} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)) if keys]
    return "; ".join(parts)


def variant_spaces(channels: int, pooled: bool) -> list[str]:
    """Latent spaces whose teacher has this decoder's shape: taef2 alone is pooled; 4 channels
    fit sd1 and sdxl, 16 fit sd3 and flux1 (the weights do not say which)."""
    return [s.name for s in SPACES.values() if s.channels == channels and (s.teacher == "taef2") == pooled]


def previewer(model: nn.Sequential, source: str, in_scale: float = 1.0, in_shift: float = 0.0) -> Previewer:
    """A TAESD-family decoder as a Previewer: denoiser latents (B, C, h, w) → RGB (B, 3, 8h, 8w) in [0, 1].

    The decoder sees `latents * in_scale + in_shift` (identity for TAESD's own files, which take
    denoiser latents). Its card's `space` is set only where the channel count and variant name one space.
    """
    channels = model[1].in_channels
    pooled = any(hasattr(m, "pool") for m in model)
    spaces = variant_spaces(channels, pooled)
    # channels-last: 1.4x faster on the CPU (1 thread, 1×4×64², measured), as for the upsampler family
    p = Previewer("taesd", channels, model, scale=2 ** sum(isinstance(m, nn.Upsample) for m in model),
                  args={"pooled": pooled}, memory_format=torch.channels_last)
    p.in_scale.fill_(in_scale)
    p.in_shift.fill_(in_shift)
    p.meta = WeightCard.of(p, spaces=spaces, space=spaces[0] if len(spaces) == 1 else None,
                           teacher="/".join(SPACES[s].teacher for s in spaces) or "unknown",
                           variant="taef2 (pooled)" if pooled else "taesd", source=source).to_dict()
    return p.eval().requires_grad_(False)


def load_previewer(path) -> Previewer:
    """A TAESD-family decoder file (.safetensors, or .pth/.pt loaded with weights_only) as a Previewer."""
    model, role = load_model_and_role(path)
    if role != "decoder":
        raise ValueError(f"{path}: is a TAESD encoder (images to latents); a previewer needs the decoder file "
                         f"(e.g. {Path(path).name.replace('encoder', 'decoder')})")
    return previewer(model, source=str(path))


def from_autoencoder_tiny(vae: nn.Module) -> Previewer:
    """The decoder of a diffusers `AutoencoderTiny` as a Previewer, decoding exactly as a pipeline
    does: `vae.decode(latents / scaling_factor + shift_factor)`, minus diffusers' final map to [-1, 1]."""
    # DecoderTiny applies the clamp in forward and keeps the rest in `layers`: our index i + 1
    state = {}
    for key, value in vae.decoder.layers.state_dict().items():
        index, rest = key.split(".", 1)
        state[f"{int(index) + 1}.{rest}"] = value
    model, _ = model_and_role(state, f"{type(vae).__name__}'s decoder")
    config = vae.config
    return previewer(model, source=f"diffusers {type(vae).__name__}", in_scale=1 / float(config.scaling_factor),
                     in_shift=float(config.get("shift_factor") or 0.0))
