"""RGB tensors to image files."""

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] → (B, H, W, 3) uint8 on the CPU."""
    return (rgb.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def resize(rgb: torch.Tensor, size: int, mode: str = "nearest") -> torch.Tensor:
    """Upscale (B, 3, H, W) so the longer side is `size` pixels, keeping the aspect ratio."""
    h, w = rgb.shape[-2:]
    factor = size / max(h, w)
    out = (max(1, round(h * factor)), max(1, round(w * factor)))
    return torch.nn.functional.interpolate(rgb.float(), size=out, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def save_png(array: np.ndarray, path) -> Path:
    """Write one (H, W, 3) uint8 image atomically: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(array).save(tmp, format="PNG")
    os.replace(tmp, path)
    return path
