"""The TAESD family of tiny autoencoders (taesd, taesdxl, taesd3, taef1, taef2) and their state dicts.

Layer order follows the shipped files, whose keys are `nn.Sequential` indices. Images are
(B, 3, H, W) in [0, 1]; latents are (B, C, H/8, W/8) in the denoiser's convention.
`pooled` is the taef2 variant: its three lowest-resolution blocks add a GroupNorm branch.
"""

from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file

WIDTH = 64  # channels of every hidden layer
POOL_WIDTH = 256  # hidden channels of the pooled blocks' GroupNorm branch


def conv(n_in: int, n_out: int, **kwargs) -> nn.Conv2d:
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
        self.conv = nn.Sequential(conv(n_in, n_out), nn.ReLU(), conv(n_out, n_out), nn.ReLU(), conv(n_out, n_out))
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
        return [nn.Upsample(scale_factor=2), conv(WIDTH, WIDTH, bias=False)]

    return nn.Sequential(
        Clamp(), conv(latent_channels, WIDTH), nn.ReLU(),
        *blocks(3, pooled), *up(),
        *blocks(3), *up(),
        *blocks(3), *up(),
        *blocks(1), conv(WIDTH, 3),
    )


def encoder(latent_channels: int, pooled: bool = False) -> nn.Sequential:
    """(B, 3, H, W) RGB in [0, 1] → (B, C, H/8, W/8) latents."""
    def down(pooled_blocks: bool = False) -> list[nn.Module]:
        return [conv(WIDTH, WIDTH, stride=2, bias=False), *blocks(3, pooled_blocks)]

    return nn.Sequential(
        conv(3, WIDTH), *blocks(1),
        *down(), *down(), *down(pooled),
        conv(WIDTH, latent_channels),
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


def detect(state: dict[str, torch.Tensor]) -> tuple[str, int, bool]:
    """(role, latent_channels, pooled) of a TAESD state dict, from its keys and shapes.

    The encoder starts with a 3→64 conv at index 0; the decoder starts with the parameter-free
    Clamp, so its first weight is the C→64 conv at index 1. Raises ValueError otherwise.
    """
    if not state or not all(k.split(".")[0].isdigit() for k in state):
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


def load(path) -> tuple[nn.Sequential, str]:
    """Load a TAESD encoder or decoder file → (float32 model in eval mode, "encoder" | "decoder").

    The role, channel count and pooled variant come from the state dict, never the file name.
    """
    state = read_state_dict(path)
    try:
        role, channels, pooled = detect(state)
    except ValueError as e:
        raise ValueError(f"{path}: not a TAESD encoder or decoder state dict ({e})") from None
    model = (encoder if role == "encoder" else decoder)(channels, pooled)
    problem = mismatch(model.state_dict(), state)
    if problem:
        raise ValueError(f"{path}: looks like a {channels}-channel TAESD {role} but does not match it ({problem})")
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
