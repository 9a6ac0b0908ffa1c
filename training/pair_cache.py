"""The on-disk cache of training pairs, so refits and interrupted runs do not run the teacher again.

Pairs are stored in shards of SHARD samples (safetensors files holding the Pairs tensors SHARD_KEYS), in a folder
named by a hash of everything that determines them (the cache key: teacher files, image and latent folders' contents,
crops, noise), so a changed input is a new folder, never a stale hit. Each shard is written whole as soon as it is
computed (previewers.files.atomic_write), so a killed run keeps what it finished; once every shard is there an
index.json marks the folder complete. A torn or foreign shard is recomputed, never trusted.
"""

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from previewers.files import atomic_write
from previewers.first_use.cache import cache_root, key_digest

SHARD = 64  # samples per cache file
CACHE_VERSION = 2  # bump when the way pairs are computed changes (2: augmentation, source image per sample)
SHARD_KEYS = ("latents", "small", "full", "noised", "image")  # the Pairs tensors, in field order
STREAMED = ("latents", "small", "full")  # the large tensors, read from the shard files as needed when streaming


def default_cache_dir() -> Path:
    return cache_root() / "pairs"


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


def cache_folder(cache_dir, key: dict) -> Path:
    """The folder under `cache_dir` of the pairs that `key` (JSON-serialisable: every input that determines them)
    names."""
    return Path(cache_dir) / key_digest({"version": CACHE_VERSION, **key})


def shard_count(total: int) -> int:
    return math.ceil(total / SHARD)


def shard_bounds(j: int, total: int) -> tuple[int, int]:
    """Shard j holds samples [lo, hi) of `total`."""
    return j * SHARD, min((j + 1) * SHARD, total)


def shard_path(folder: Path, j: int) -> Path:
    return folder / f"shard-{j:05d}.safetensors"


def missing_shards(folder: Path | None, total: int) -> list[int]:
    """Shards not yet on disk and sound, in order; all of them without a cache folder. The index of a complete
    folder vouches for its files; otherwise each shard's header is checked (a torn or foreign file is recomputed)."""
    shards = range(shard_count(total))
    if folder is None:
        return list(shards)
    try:
        complete = json.loads((folder / "index.json").read_text()) == _index(total)
    except (OSError, ValueError):
        complete = False
    return [j for j in shards if not (shard_path(folder, j).is_file() if complete else _sound(shard_path(folder, j)))]


def write_shard(folder: Path, j: int, tensors: dict) -> None:
    """Shard j's tensors (SHARD_KEYS; `noised` bool, stored as uint8), written whole."""
    stored = {k: v.contiguous() for k, v in {**tensors, "noised": tensors["noised"].to(torch.uint8)}.items()}
    with atomic_write(shard_path(folder, j)) as tmp:
        save_file(stored, tmp)


def write_index(folder: Path, total: int) -> None:
    """Written by rank 0 once every shard is on disk: the folder is complete."""
    with atomic_write(folder / "index.json") as tmp:
        tmp.write_text(json.dumps(_index(total)))


def read_all(folder: Path, total: int, computed: dict) -> dict[str, torch.Tensor]:
    """{key: tensor} of all `total` samples: the shards in `computed` ({j: tensors}, this process's) as they are,
    the others read from `folder`."""
    parts = [computed.get(j) or _read_shard(shard_path(folder, j)) for j in range(shard_count(total))]
    if any(part is None for part in parts):
        raise ValueError(f"{folder}: a shard written by another process cannot be read back; is the cache folder "
                         "on a file system all processes share?")
    return {k: torch.cat([p[k] for p in parts]) for k in SHARD_KEYS}


def streamed(folder: Path, total: int) -> dict:
    """{key: column} of all `total` samples: the STREAMED tensors as training/streamed.py ShardColumns read from the
    shard files as they are needed, the small per-sample ones (noised, image) read whole."""
    from training.streamed import ShardColumn

    files = [shard_path(folder, j) for j in range(shard_count(total))]
    columns = {k: ShardColumn(files, k) for k in STREAMED}
    return {**columns, "noised": ShardColumn(files, "noised")[:].bool(), "image": ShardColumn(files, "image")[:]}


def _index(total: int) -> dict:
    return {"version": CACHE_VERSION, "samples": total, "shard_size": SHARD,
            "shards": [shard_path(Path("."), j).name for j in range(shard_count(total))]}


def _sound(path: Path) -> bool:
    try:
        with safe_open(str(path), "pt") as f:
            return set(f.keys()) == set(SHARD_KEYS)
    except Exception:  # missing, torn or foreign
        return False


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
