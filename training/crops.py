"""Crops of an image folder: where each comes from (the plan, deterministic in a seed) and its pixels.

The plan is made from the images' sizes alone, so it is cheap and every process of a torchrun fit makes the same
one; the pixels are rendered only for the samples a process computes (training/data.py).
"""

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageOps


@dataclass(frozen=True)
class Crops:
    """How crops are drawn from an image folder.

    Each image is first downscaled so its short side is log-uniform between `size` (the crop shows
    the whole scene) and 4·`size` (detail), never upscaled beyond its own pixels; then a random
    `size`² square is cut. Crops are spread evenly over the images. Augmentation widens what a few
    dozen images show: generated images come in every orientation, palette and contrast.
    """

    count: int = 256
    size: int = 256
    seed: int = 0
    gray: float = 0.1  # fraction of crops turned to grayscale
    saturated: float = 0.1  # fraction with colour saturation boosted 1.5–2.5x
    dihedral: float = 0.0  # fraction flipped and/or rotated by a multiple of 90° (one of the 7 non-identity ways)
    hue: float = 0.0  # fraction with the hue rotated by a uniform angle
    contrast: float = 0.0  # fraction with contrast scaled by a log-uniform factor in [0.6, 1.6]


@dataclass(frozen=True)
class Crop:
    """One planned crop: its source image, the box cut from it and its augmentation."""

    image: int  # index into the folder's sorted image list
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the image's own pixels
    gray: bool
    saturation: float  # 1.0 = unchanged
    dihedral: int = 0  # 0 = unchanged; 1..7 = PIL's Transpose operations FLIP_LEFT_RIGHT..TRANSVERSE
    hue: float = 0.0  # hue rotation in turns, [0, 1)
    contrast: float = 1.0


def image_sizes(files: list[Path]) -> list[tuple[int, int]]:
    """(width, height) of each image as displayed (EXIF rotation applied), read from the headers."""
    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = ImageOps.exif_transpose(im)  # rotated photos: plan in displayed orientation
                sizes.append(im.size)
        except OSError as e:
            raise ValueError(f"{f}: not a readable image ({e})") from None
    return sizes


def plan_crops(sizes: list[tuple[int, int]], crops: Crops) -> list[Crop]:
    """Where each crop comes from, given the (width, height) of every image; deterministic in crops.seed."""
    rng = random.Random(crops.seed)
    order = list(range(len(sizes)))
    plan = []
    for i in range(crops.count):
        if i % len(sizes) == 0:
            rng.shuffle(order)  # every image once per round, so each gets the same share
        image = order[i % len(sizes)]
        w, h = sizes[image]
        short = min(w, h)
        # short side after downscaling, log-uniform in [size, 4·size], at most the original
        lo, hi = crops.size, max(crops.size, min(short, 4 * crops.size))
        scaled_short = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        side = min(short, round(crops.size * short / scaled_short))  # crop side in original pixels
        left, top = rng.randint(0, w - side), rng.randint(0, h - side)
        colour = rng.random()
        gray = colour < crops.gray
        saturation = rng.uniform(1.5, 2.5) if crops.gray <= colour < crops.gray + crops.saturated else 1.0
        # each augmentation draws its numbers whether or not it applies, so enabling one leaves the others' plan as is
        dihedral, hue, contrast = rng.randint(1, 7), rng.random(), math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
        draws = rng.random(), rng.random(), rng.random()
        plan.append(Crop(image, (left, top, left + side, top + side), gray, saturation,
                         dihedral=dihedral if draws[0] < crops.dihedral else 0,
                         hue=hue if draws[1] < crops.hue and not gray else 0.0,
                         contrast=contrast if draws[2] < crops.contrast else 1.0))
    return plan


def augment(piece: Image.Image, crop: Crop) -> Image.Image:
    """One crop's colour and geometry changes, in a fixed order (RGB in, RGB out)."""
    if crop.gray:
        piece = ImageOps.grayscale(piece).convert("RGB")
    elif crop.saturation != 1.0:
        piece = ImageEnhance.Color(piece).enhance(crop.saturation)
    if crop.hue:
        h, s, v = piece.convert("HSV").split()
        h = h.point(lambda value: (value + round(crop.hue * 256)) % 256)
        piece = Image.merge("HSV", (h, s, v)).convert("RGB")
    if crop.contrast != 1.0:
        piece = ImageEnhance.Contrast(piece).enhance(crop.contrast)
    if crop.dihedral:
        piece = piece.transpose(Image.Transpose(crop.dihedral - 1))
    return piece


def render_crops(files: list[Path], plan: list[Crop], size: int, progress: bool = True) -> torch.Tensor:
    """(N, 3, size, size) uint8 crops, in plan order; each image is read once."""
    from tqdm import tqdm

    out = torch.empty(len(plan), 3, size, size, dtype=torch.uint8)
    by_image: dict[int, list[int]] = {}
    for n, crop in enumerate(plan):
        by_image.setdefault(crop.image, []).append(n)
    for image, indices in tqdm(sorted(by_image.items()), desc="crop images", unit="image", disable=not progress):
        with Image.open(files[image]) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            for n in indices:
                crop = plan[n]
                piece = augment(im.resize((size, size), Image.Resampling.LANCZOS, box=crop.box, reducing_gap=3.0), crop)
                out[n] = torch.from_numpy(np.array(piece)).permute(2, 0, 1)
    return out
