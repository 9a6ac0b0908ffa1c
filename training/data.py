"""Training pairs: latents and what the teacher decoder shows for them.

Latents come from random crops of an image folder (planned and rendered by training/crops.py, encoded by the
teacher's encoder) and/or from a folder of latents saved from pipeline runs. A `noise_mix` fraction of them is moved
along the space's noising trajectory (training/noise.py). Targets are the teacher's decodes of exactly the latents
the previewer sees, unclamped: at full resolution, and area-pooled by the teacher's scale factor to latent
resolution. Pairs are computed in shards and cached on disk (training/pair_cache.py), keyed by a hash of everything
that determines them, so refits and interrupted runs are fast.
"""

import fnmatch
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from previewers.outputs.latents_file import SUFFIXES as LATENT_SUFFIXES
from previewers.outputs.latents_file import read_latents
from training import distributed, pair_cache
from training.crops import Crop, Crops, image_sizes, plan_crops, render_crops
from training.noise import trajectory_noise

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


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


@dataclass(frozen=True)
class Samples:
    """Where every sample comes from, in order: the planned image crops, then the crops of saved latents."""

    files: list[Path]  # the image folder's files, which the plan's Crop.image indexes
    plan: list[Crop]
    size: int  # image crop side in pixels
    saved: torch.Tensor | None  # (M, C, s, s) crops of saved latents, or None

    def __len__(self) -> int:
        return len(self.plan) + (0 if self.saved is None else len(self.saved))

    def crop_rows(self, lo: int, hi: int) -> range:
        """The image crops among samples lo..hi−1."""
        return range(lo, min(hi, len(self.plan)))

    def saved_rows(self, lo: int, hi: int) -> torch.Tensor | None:
        """The saved latents among samples lo..hi−1, or None."""
        n = len(self.plan)
        return self.saved[max(lo, n) - n:hi - n] if hi > n else None

    def image(self, lo: int, hi: int) -> torch.Tensor:
        """(hi − lo,) int64 source image of samples lo..hi−1, −1 for saved latents."""
        return torch.tensor([self.plan[n].image if n < len(self.plan) else -1 for n in range(lo, hi)])


def image_files(folder, exclude: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> list[Path]:
    """The images directly inside `folder`, sorted by name, less those whose name matches a glob in `exclude`;
    with `only`, just those whose name matches one of its globs."""
    files = listed(folder, IMAGE_SUFFIXES, "image", "images")

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
    """The latents files directly inside `folder`, sorted by name."""
    return listed(folder, LATENT_SUFFIXES, "latents", "latents files")


def listed(folder, suffixes: tuple[str, ...], what: str, plural: str) -> list[Path]:
    """The files directly inside `folder` whose extension (any case) is one of `suffixes`, sorted by name; a clear
    error when the folder is missing or holds none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
    if not files:
        raise ValueError(f"{folder}: no {plural} ({', '.join(suffixes)})")
    return files


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


def make_pairs(
    teacher,
    noise: str,
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

    noise: the space's noising trajectory, "ddpm" or "flow". noise_mix: fraction of samples noised.
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
    _check_options(teacher, images, latents, crops, noise_mix, cache_dir, teacher_id, stream)
    files = image_files(images, exclude) if images is not None else []
    saved = latent_files(latents) if latents is not None else []
    latent_size = crops.size // teacher.scale_factor
    samples = Samples(files, plan_crops(image_sizes(files), crops) if files else [], crops.size,
                      load_latent_crops(saved, latent_size, teacher.latent_channels, crops.seed) if saved else None)
    source = {
        "images": str(images) if images is not None else None,
        "image_count": len(files),
        **({"excluded": list(exclude)} if exclude else {}),
        "latents": str(latents) if latents is not None else None,
        "latent_files": len(saved),
        "crops": asdict(crops) if files else None,
        "latent_crop": latent_size,
        "noise": noise,
        "noise_mix": noise_mix,
        "teacher": teacher.name,
    }
    folder = None
    if cache_dir is not None:
        folder = pair_cache.cache_folder(cache_dir, {
            "teacher": teacher_id, "images": pair_cache.folder_listing(files),
            "latents": pair_cache.folder_listing(saved), "crops": asdict(crops), "noise": noise,
            "noise_mix": noise_mix, "latent_crop": latent_size})
        source["cache"] = str(folder)

    world = distributed.current()
    # rank 0 decides what is missing, so every process splits the same list the same way
    missing = world.from_main(lambda: pair_cache.missing_shards(folder, len(samples)))
    computed = {}
    # each process encodes and decodes its own share, writing each shard to the cache as soon as it is done
    for j, tensors in _computed_shards(teacher, noise, noise_mix, samples, missing[world.rank::world.size], crops.seed,
                                       batch_size, progress):
        computed[j] = tensors
        if folder is not None:
            pair_cache.write_shard(folder, j, tensors)

    return Pairs(**_all_samples(computed, folder, len(samples), stream, world), source=source)


def _check_options(teacher, images, latents, crops: Crops, noise_mix: float, cache_dir, teacher_id, stream) -> None:
    """make_pairs' options, checked before any data work."""
    if images is None and latents is None:
        raise ValueError("need an image folder, a latents folder, or both")
    if stream and cache_dir is None:
        raise ValueError("streamed pairs are read from the on-disk cache: streaming needs a cache folder")
    if cache_dir is not None and teacher_id is None:
        raise ValueError("caching pairs needs a teacher_id (a fingerprint of the teacher's files)")
    if not 0 <= noise_mix <= 1:
        raise ValueError(f"noise_mix must be in [0, 1], got {noise_mix}")
    if crops.size % teacher.scale_factor:
        raise ValueError(f"crop size {crops.size} is not a multiple of the teacher's scale factor {teacher.scale_factor}")
    if images is not None and not teacher.has_encoder:
        raise ValueError(f"teacher {teacher.name} has no encoder: pass one to fit on images, or fit on --latents only")


def _all_samples(computed: dict, folder: Path | None, total: int, stream: bool, world) -> dict:
    """{key: tensor or shard column} of all `total` samples in order, once every process has computed its shards
    (`computed`, {j: tensors}): read back from the cache `folder` (streamed: as they are needed), or, with no cache to
    meet in, handed over between the processes."""
    if folder is None:
        parts = {j: t for share in world.gather(computed) for j, t in share.items()}
        shards = range(pair_cache.shard_count(total))
        return {k: torch.cat([parts[j][k] for j in shards]) for k in pair_cache.SHARD_KEYS}
    world.barrier()  # every shard is on disk
    if world.main:
        pair_cache.write_index(folder, total)
    return pair_cache.streamed(folder, total) if stream else pair_cache.read_all(folder, total, computed)


def _computed_shards(teacher, noise: str, noise_mix: float, samples: Samples, shards: list[int], seed: int,
                     batch_size: int, progress: bool):
    """(j, tensors) for each of `shards` in turn: the image crops they hold are rendered first (each image read
    once), then each shard is encoded, noised (seeded by `seed` and j) and decoded (_compute_shard)."""
    from tqdm import tqdm

    bounds = {j: pair_cache.shard_bounds(j, len(samples)) for j in shards}
    rows = [n for lo, hi in bounds.values() for n in samples.crop_rows(lo, hi)]
    rendered = render_crops(samples.files, [samples.plan[n] for n in rows], samples.size, progress) if rows else None
    done = 0  # rows of `rendered` used so far
    # one tick per sample, when its decode is done
    with tqdm(total=sum(hi - lo for lo, hi in bounds.values()), desc=f"encode/decode with {teacher.name}",
              unit="crop", disable=not progress or not shards) as bar:
        for j, (lo, hi) in bounds.items():
            n_crops = len(samples.crop_rows(lo, hi))
            tensors = _compute_shard(teacher, noise, noise_mix, rendered[done:done + n_crops] if n_crops else None,
                                     samples.saved_rows(lo, hi), seed * 100_003 + j, batch_size, bar)
            done += n_crops
            tensors["image"] = samples.image(lo, hi)
            yield j, tensors


@torch.inference_mode()
def _compute_shard(teacher, noise, noise_mix, crops, saved, seed, batch_size, bar) -> dict:
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
    z = torch.where(noised[:, None, None, None], trajectory_noise(z, noise, generator), z)
    full = []
    for a in range(0, len(z), batch_size):
        # the raw decoder, not teacher.decode: targets stay unclamped, so least squares does not chase
        # pixels the display clamp flattened
        full.append(teacher.decoder(z[a:a + batch_size].to(teacher.device)).float().cpu())
        bar.update(len(full[-1]))
    full = torch.cat(full)
    f = teacher.scale_factor
    return {"latents": z, "small": F.avg_pool2d(full, f), "full": full.half(), "noised": noised}
