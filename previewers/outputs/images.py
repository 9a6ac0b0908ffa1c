"""RGB tensors to image files."""

from pathlib import Path

import torch
from PIL import Image

from previewers.files import atomic_write

# file extension → Pillow format name, for every image file the tools write
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".gif": "GIF",
                 ".tif": "TIFF", ".tiff": "TIFF"}


def image_format(path) -> str:
    """The Pillow format for `path`'s extension (any case); ValueError naming the supported ones."""
    suffix = Path(path).suffix.lower()
    if suffix not in IMAGE_FORMATS:
        raise ValueError(f"{path}: unsupported image file type {suffix or '(none)'!r} "
                         f"(use {', '.join(s[1:] for s in IMAGE_FORMATS)})")
    return IMAGE_FORMATS[suffix]


def to_uint8(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) float in [0, 1] → (B, H, W, 3) uint8 on the same device."""
    return (rgb.float().clamp(0, 1) * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous()


def resize(rgb: torch.Tensor, size: int, mode: str = "nearest") -> torch.Tensor:
    """Upscale (B, 3, H, W) so the longer side is `size` pixels, keeping the aspect ratio."""
    h, w = rgb.shape[-2:]
    factor = size / max(h, w)
    out = (max(1, round(h * factor)), max(1, round(w * factor)))
    return torch.nn.functional.interpolate(rgb.float(), size=out, mode=mode, **({} if mode == "nearest" else {"align_corners": False}))


def save_atomic(image: Image.Image, path, **params) -> Path:
    """Write `image` whole (previewers.files.atomic_write: a reader, or an interrupted run, never sees a
    half-written file), in the format `path`'s extension names unless `format` is given."""
    path = Path(path)
    with atomic_write(path) as tmp:
        image.save(tmp, format=params.pop("format", None) or image_format(path), **params)
    return path
