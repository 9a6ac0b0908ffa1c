"""Training pairs: latents and what the teacher decoder shows for them.

Latents come from random crops of an image folder (encoded by the teacher's encoder) and/or from
a folder of latents saved from pipeline runs. A `noise_mix` fraction of them is moved along the
space's noising trajectory (training/noise.py). Targets are the teacher's decodes of exactly the
latents the previewer sees, unclamped: at full resolution, and area-pooled by the teacher's scale
factor to latent resolution. Pairs are computed in shards and cached on disk as safetensors, keyed
by a hash of everything that determines them, so refits and interrupted runs are fast.
"""

import fnmatch
import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageEnhance, ImageOps
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from previewers.first_use.cache import cache_root
from previewers.outputs.latents_file import SUFFIXES as LATENT_SUFFIXES
from previewers.outputs.latents_file import read_latents
from training import distributed
from training.noise import trajectory_noise

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SHARD = 64  # samples per cache file
CACHE_VERSION = 2  # bump when the way pairs are computed changes (2: augmentation, source image per sample)


SHARD_KEYS = ("latents", "small", "full", "noised", "image")  # the Pairs tensors, in field order


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
    image: int  # index into the folder's sorted image list
    box: tuple[int, int, int, int]  # (left, top, right, bottom) in the image's own pixels
    gray: bool
    saturation: float  # 1.0 = unchanged
    dihedral: int = 0  # 0 = unchanged; 1..7 = PIL's Transpose operations FLIP_LEFT_RIGHT..TRANSVERSE
    hue: float = 0.0  # hue rotation in turns, [0, 1)
    contrast: float = 1.0


@dataclass
class Pairs:
    """Latents and the teacher's decodes of them, sample by sample."""

    latents: torch.Tensor  # (N, C, h, w) float32, the denoiser convention of the space
    small: torch.Tensor  # (N, 3, h, w) float32, teacher decode area-pooled to latent resolution, unclamped ≈[0, 1]
    full: torch.Tensor  # (N, 3, h·f, w·f) float16, teacher decode at full resolution, unclamped ≈[0, 1]
    noised: torch.Tensor  # (N,) bool, whether the latent was noised
    image: torch.Tensor  # (N,) int64 index of the source image in the folder's sorted list, −1 for saved latents
    source: dict  # how the pairs were made (stored in fit recipes)

    def __len__(self) -> int:
        return self.latents.shape[0]


def image_files(folder, exclude: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> list[Path]:
    """The images directly inside `folder`, sorted by name, less those whose name matches a glob in `exclude`;
    with `only`, just those whose name matches one of its globs."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    def matches(path: Path, patterns: tuple[str, ...]) -> bool:
        return any(fnmatch.fnmatchcase(path.name, pattern) for pattern in patterns)

    kept = [p for p in files if not matches(p, exclude)]
    if not kept:
        raise ValueError(f"{folder}: excluding {', '.join(exclude)} leaves none of its {len(files)} images")
    if only:
        kept = [p for p in kept if matches(p, only)]
        if not kept:
            raise ValueError(f"{folder}: none of its images matches {', '.join(only)}")
    return kept


def latent_files(folder) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"latents folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in LATENT_SUFFIXES)
    if not files:
        raise ValueError(f"{folder}: no latents files ({', '.join(LATENT_SUFFIXES)})")
    return files


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


def image_sizes(files: list[Path]) -> list[tuple[int, int]]:
    sizes = []
    for f in files:
        try:
            with Image.open(f) as im:
                im = ImageOps.exif_transpose(im)  # rotated photos: plan in displayed orientation
                sizes.append(im.size)
        except OSError as e:
            raise ValueError(f"{f}: not a readable image ({e})") from None
    return sizes


def load_latent_crops(files: list[Path], size: int, channels: int, seed: int) -> torch.Tensor:
    """One random size×size crop of every latent in `files` (each (C, h, w) or (B, C, h, w)) → (M, C, size, size)."""
    rng = random.Random(seed)
    out = []
    for f in files:
        z = read_latents(f)
        shape = tuple(z.shape)
        if z.ndim == 3:
            z = z[None]
        if z.ndim != 4 or z.shape[1] != channels:
            raise ValueError(
                f"{f}: expected spatial latents (C, h, w) or (B, C, h, w) with C = {channels} (the teacher's "
                f"latent channels), got shape {shape}; packed FLUX tokens must be unpacked first"
            )
        h, w = z.shape[-2:]
        if h < size or w < size:
            raise ValueError(f"{f}: latents of {h}x{w} are smaller than the {size}x{size} latent crop; lower --crop-size")
        for item in z.float():
            top, left = rng.randint(0, h - size), rng.randint(0, w - size)
            out.append(item[:, top:top + size, left:left + size])
    return torch.stack(out)


def fingerprint(*paths) -> str:
    """A hash of files' contents (folders: every file inside, recursively), for cache keys."""
    digest = hashlib.sha256()
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            digest.update(f.name.encode())
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()


def folder_listing(files: list[Path]) -> list:
    """Names, sizes and content hashes, for cache keys: not modification times, which change whenever a data folder
    is copied anew (and with them every key), while reading tens of MB of images costs well under a second."""
    return [(f.name, f.stat().st_size, fingerprint(f)) for f in files]


def default_cache_dir() -> Path:
    return cache_root() / "pairs"


def digest(key: dict) -> str:
    """A short stable hash of a JSON-serialisable cache key."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def make_pairs(
    teacher,
    kind: str,
    images=None,
    latents=None,
    exclude: tuple[str, ...] = (),
    crops: Crops = Crops(),
    noise_mix: float = 0.5,
    cache_dir=None,
    teacher_id: str | None = None,
    batch_size: int = 8,
    progress: bool = True,
    stream: bool = False,
) -> Pairs:
    """Training pairs for `teacher` from an image folder and/or a folder of saved latents.

    kind: the space's noise kind, "ddpm" or "flow". noise_mix: fraction of samples noised.
    exclude: file-name globs of images in the folder not to use (e.g. the illustrations, for per-pixel fits).
    With `cache_dir` (and `teacher_id`, a fingerprint of the teacher's files) shards are read
    from / written to `cache_dir/<key>/`, and once all are there an `index.json` marks the folder complete.
    With `stream` (needs the cache) latents and targets are read from the shard files as they are
    needed (training/streamed.py) instead of being held in memory.

    Under torchrun (training/distributed.py) each process encodes and decodes its own share of the
    missing shards; rank 0 alone writes the index. With a cache every process then reads the others'
    shards from it (multi-node runs need the cache on a shared file system); without one they
    exchange them through the process group.
    """
    if images is None and latents is None:
        raise ValueError("need an image folder, a latents folder, or both")
    if stream and cache_dir is None:
        raise ValueError("streamed pairs are read from the on-disk cache: streaming needs a cache folder")
    if not 0 <= noise_mix <= 1:
        raise ValueError(f"noise_mix must be in [0, 1], got {noise_mix}")
    if crops.size % teacher.scale_factor:
        raise ValueError(f"crop size {crops.size} is not a multiple of the teacher's scale factor {teacher.scale_factor}")
    if images is not None and not teacher.has_encoder:
        raise ValueError(f"teacher {teacher.name} has no encoder: pass one to fit on images, or fit on --latents only")
    files = image_files(images, exclude) if images is not None else []
    saved = latent_files(latents) if latents is not None else []
    latent_size = crops.size // teacher.scale_factor
    source = {
        "images": str(images) if images is not None else None,
        "image_count": len(files),
        **({"excluded": list(exclude)} if exclude else {}),
        "latents": str(latents) if latents is not None else None,
        "latent_files": len(saved),
        "crops": asdict(crops) if files else None,
        "latent_crop": latent_size,
        "noise": kind,
        "noise_mix": noise_mix,
        "teacher": teacher.name,
    }

    plan = plan_crops(image_sizes(files), crops) if files else []
    saved_latents = load_latent_crops(saved, latent_size, teacher.latent_channels, crops.seed) if saved else None
    total = len(plan) + (0 if saved_latents is None else len(saved_latents))
    shards = range(math.ceil(total / SHARD))

    folder = None
    if cache_dir is not None:
        if teacher_id is None:
            raise ValueError("caching pairs needs a teacher_id (a fingerprint of the teacher's files)")
        key = {
            "version": CACHE_VERSION,
            "teacher": teacher_id,
            "images": folder_listing(files),
            "latents": folder_listing(saved),
            "crops": asdict(crops),
            "noise": kind,
            "noise_mix": noise_mix,
            "latent_crop": latent_size,
        }
        folder = Path(cache_dir) / digest(key)
        source["cache"] = str(folder)

    paths = {j: Path(folder or ".") / f"shard-{j:05d}.safetensors" for j in shards}
    world = distributed.current()
    # rank 0 decides what is missing, so every process splits the same list the same way
    missing = world.from_main(lambda: _missing(folder, paths, total))
    mine = missing[world.rank::world.size]  # each process encodes and decodes its own share
    bounds = {j: (j * SHARD, min((j + 1) * SHARD, total)) for j in mine}
    image_rows = [n for lo, hi in bounds.values() for n in range(lo, min(hi, len(plan)))]
    rendered = render_crops(files, [plan[n] for n in image_rows], crops.size, progress) if image_rows else None

    from tqdm import tqdm

    # one tick per sample, when its decode is done
    bar = tqdm(total=sum(hi - lo for lo, hi in bounds.values()), desc=f"encode/decode with {teacher.name}",
               unit="crop", disable=not progress or not mine)
    computed, done = {}, 0
    for j, (lo, hi) in bounds.items():
        n_crops = max(0, min(hi, len(plan)) - lo)
        saved_part = saved_latents[max(lo, len(plan)) - len(plan):hi - len(plan)] if hi > len(plan) else None
        computed[j] = _compute_shard(teacher, kind, noise_mix, rendered[done:done + n_crops] if n_crops else None,
                                     saved_part, crops.seed * 100_003 + j, batch_size, bar)
        done += n_crops
        computed[j]["image"] = torch.tensor([plan[n].image if n < len(plan) else -1 for n in range(lo, hi)])
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
            _write_shard(computed[j], paths[j])
    bar.close()

    if folder is None:  # no cache to meet in: the processes hand each other their shards
        parts = {j: t for share in world.gather(computed) for j, t in share.items()}
        return Pairs(*(torch.cat([parts[j][k] for j in shards]) for k in SHARD_KEYS), source)
    world.barrier()  # every shard is on disk
    if world.main:
        _write_index(folder, paths, total)
    if stream:
        from training.streamed import ShardColumn

        files_in_order = [paths[j] for j in shards]
        columns = {k: ShardColumn(files_in_order, k) for k in ("latents", "small", "full")}
        return Pairs(columns["latents"], columns["small"], columns["full"],
                     ShardColumn(files_in_order, "noised")[:].bool(), ShardColumn(files_in_order, "image")[:], source)
    parts = [computed.get(j) or _read_shard(paths[j]) for j in shards]
    if any(part is None for part in parts):
        raise ValueError(f"{folder}: a shard written by another process cannot be read back; is the cache folder "
                         "on a file system all processes share?")
    return Pairs(*(torch.cat([p[k] for p in parts]) for k in SHARD_KEYS), source)


def _missing(folder: Path | None, paths: dict, total: int) -> list[int]:
    """Shards not yet on disk and sound, in order. The index of a complete folder vouches for its
    files; otherwise each shard's header is checked (a torn or foreign file is recomputed, not trusted)."""
    if folder is None:
        return sorted(paths)
    try:
        complete = json.loads((folder / "index.json").read_text()) == _index(paths, total)
    except (OSError, ValueError):
        complete = False
    return [j for j in sorted(paths) if not (paths[j].is_file() if complete else _sound(paths[j]))]


def _sound(path: Path) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            return set(f.keys()) == set(SHARD_KEYS)
    except Exception:  # missing, torn or foreign
        return False


def _index(paths: dict, total: int) -> dict:
    return {"version": CACHE_VERSION, "samples": total, "shard_size": SHARD,
            "shards": [paths[j].name for j in sorted(paths)]}


def _write_index(folder: Path, paths: dict, total: int) -> None:
    """Written by rank 0 once every shard is on disk: the folder is complete."""
    tmp = folder / f"index.json.{os.getpid()}.tmp"
    try:
        tmp.write_text(json.dumps(_index(paths, total)))
        tmp.replace(folder / "index.json")
    finally:
        tmp.unlink(missing_ok=True)


@torch.inference_mode()
def _compute_shard(teacher, kind, noise_mix, crops, saved, seed, batch_size, bar) -> dict:
    """One shard's samples: `crops` (k, 3, S, S) uint8 image crops encoded first, then `saved` latents
    (m, C, h, w); either may be None."""
    z = []
    for a in range(0, 0 if crops is None else len(crops), batch_size):
        z.append(teacher.encode(crops[a:a + batch_size].float() / 255).float().cpu())
    if saved is not None:
        z.append(saved)
    z = torch.cat(z)
    generator = torch.Generator().manual_seed(seed)
    noised = torch.rand(len(z), generator=generator) < noise_mix
    z = torch.where(noised[:, None, None, None], trajectory_noise(z, kind, generator), z)
    full = []
    for a in range(0, len(z), batch_size):
        # the raw decoder, not teacher.decode: targets stay unclamped, so least squares does not chase
        # pixels the display clamp flattened
        full.append(teacher.decoder(z[a:a + batch_size].to(teacher.device)).float().cpu())
        bar.update(len(full[-1]))
    full = torch.cat(full)
    f = teacher.scale_factor
    return {"latents": z, "small": F.avg_pool2d(full, f), "full": full.half(), "noised": noised}


def _read_shard(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        tensors = load_file(path)
    except Exception:  # a torn or foreign file is recomputed, not trusted
        return None
    if set(tensors) != set(SHARD_KEYS):
        return None
    tensors["noised"] = tensors["noised"].bool()
    return tensors


def _write_shard(tensors: dict, path: Path) -> None:
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
    try:
        save_file({k: v.contiguous() for k, v in {**tensors, "noised": tensors["noised"].to(torch.uint8)}.items()}, tmp)
        tmp.replace(path)
    finally:  # a run stopped mid-write leaves no torn file behind
        tmp.unlink(missing_ok=True)
