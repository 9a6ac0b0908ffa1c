"""Score previewer-like modules against a teacher on held-out images: quality and speed.

Held-out latents are non-overlapping `size`² tiles of every image (no resizing, no augmentation),
encoded by the teacher. Each tile is scored clean and noised, z_s = (1 − s)·z + s·ε with s = 0.5
(training/noise.py), against the teacher's decode of the same latent, clamped to [0, 1] as a
display would show it and area-pooled to the module's output resolution. Any module works that
maps (B, C, h, w) denoiser latents to RGB (B, 3, h·scale, w·scale) in [0, 1] and has `.scale` and
`.meta`: our previewers, published tables (training/factor_tables.py), peers (training/peers.py).
"""

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from previewers.files import atomic_write
from previewers.first_use.cache import key_digest
from previewers.metrics import ciede2000, psnr, ssim
from training.data import Pairs, image_files
from training.noise import EVAL_NOISE, eval_noise
from training.pair_cache import CACHE_VERSION, folder_listing

METRICS = {"psnr": psnr, "ssim": ssim, "ciede2000": ciede2000}
TIMING_SHAPE = (1, None, 64, 64)  # one 512x512 image's latent; None = the module's channels


@dataclass
class HeldOut:
    """Held-out latents and what the teacher shows for them."""

    clean: torch.Tensor  # (N, C, h, w) float32 denoiser latents of the tiles
    noised: torch.Tensor  # (N, C, h, w) z_s = (1 − s)·z + s·ε
    clean_rgb: torch.Tensor  # (N, 3, h·f, w·f) float32 (float16 precision) teacher decode of `clean`, clamped to [0, 1]
    noised_rgb: torch.Tensor  # (N, 3, h·f, w·f) the same for `noised`
    source: dict


@dataclass
class Row:
    """One module's quality on held-out tiles and its time per preview: a line of markdown()."""

    name: str
    kind: str  # our family, "table" or "peer"
    scale: int  # output pixels per latent pixel
    params: int
    clean: dict  # {"psnr": dB, "ssim": ..., "ciede2000": mean ΔE00}, means over tiles
    noised: dict
    ms: float  # median milliseconds per preview of a 1×C×64×64 latent, one CPU thread
    shows: str | None = None  # a derived row (pooled, upscaled: training.full_res): the row whose previewer it shows


def tiles(files: list[Path], size: int, count: int | None) -> torch.Tensor:
    """(N, 3, size, size) uint8 non-overlapping tiles of every image in reading order, centred;
    with `count`, that many spread evenly over the whole list."""
    out = []
    for f in files:
        with Image.open(f) as im:
            im = ImageOps.exif_transpose(im).convert("RGB")
            w, h = im.size
            nx, ny = w // size, h // size
            if not nx or not ny:
                raise ValueError(f"{f}: {w}x{h} is smaller than the {size}x{size} evaluation tile")
            x0, y0 = (w - nx * size) // 2, (h - ny * size) // 2
            array = torch.from_numpy(np.array(im)).permute(2, 0, 1)
            for j in range(ny):
                for i in range(nx):
                    out.append(array[:, y0 + j * size:y0 + (j + 1) * size, x0 + i * size:x0 + (i + 1) * size])
    if count is not None and count < len(out):
        out = [out[round(k * (len(out) - 1) / max(1, count - 1))] for k in range(count)]
    return torch.stack(out)


@torch.inference_mode()
def held_out(teacher, images, size: int = 256, count: int | None = None, seed: int = 0, cache_dir=None,
             teacher_id: str | None = None, batch_size: int = 8, progress: bool = True,
             only: tuple[str, ...] = ()) -> HeldOut:
    """Held-out tiles of `images` (with `only`, of the files matching one of its globs), encoded and decoded by
    `teacher` (cached like training pairs)."""
    from safetensors.torch import load_file, save_file
    from tqdm import tqdm

    files = image_files(images, only=only)
    if size % teacher.scale_factor:
        raise ValueError(f"tile size {size} is not a multiple of the teacher's scale factor {teacher.scale_factor}")
    source = {"images": str(images), "image_count": len(files), "tile": size, "count": count, "seed": seed,
              "noise": EVAL_NOISE, "teacher": teacher.name, **({"only": list(only)} if only else {})}
    path = None
    if cache_dir is not None:
        if teacher_id is None:
            raise ValueError("caching held-out data needs a teacher_id (a fingerprint of the teacher's files)")
        key = {"version": CACHE_VERSION, "held_out": True, "teacher": teacher_id, "images": folder_listing(files),
               "tile": size, "count": count, "seed": seed, "noise": EVAL_NOISE}
        path = Path(cache_dir) / f"heldout-{key_digest(key)}.safetensors"
        if path.is_file():
            try:
                return HeldOut(**{k: v.float() for k, v in load_file(path).items()}, source=source)
            except Exception:  # a torn cache file is recomputed
                pass
    pixels = tiles(files, size, count)
    clean, noised, clean_rgb, noised_rgb = [], [], [], []
    generator = torch.Generator().manual_seed(seed)
    for a in tqdm(range(0, len(pixels), batch_size), desc=f"held-out tiles with {teacher.name}", unit="batch",
                  disable=not progress):
        z = teacher.encode(pixels[a:a + batch_size].float() / 255).float().cpu()
        zs = eval_noise(z, generator)
        clean.append(z)
        noised.append(zs)
        clean_rgb.append(teacher.decode(z).cpu())
        noised_rgb.append(teacher.decode(zs).cpu())
    # RGB is kept at float16 precision (errors ~1e-4, far below any metric's resolution): it halves
    # the cache file, and fresh and cached data score identically
    tensors = {"clean": torch.cat(clean), "noised": torch.cat(noised), "clean_rgb": torch.cat(clean_rgb).half(),
               "noised_rgb": torch.cat(noised_rgb).half()}
    if path is not None:
        with atomic_write(path) as tmp:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    return HeldOut(**{k: v.float() for k, v in tensors.items()}, source=source)


def validation_pairs(data: HeldOut) -> Pairs:
    """`data`'s clean and noised tiles as Pairs, for training.adam.train to validate on: unaugmented tiles at
    the images' own scale, unlike the training crops."""
    rgb = torch.cat([data.clean_rgb, data.noised_rgb])
    n = len(data.clean)
    return Pairs(torch.cat([data.clean, data.noised]), target_at(rgb, data.clean.shape[-1], 1),
                 rgb.half(), torch.arange(2 * n) >= n, torch.full((2 * n,), -1), data.source)


def target_at(rgb: torch.Tensor, latent_side: int, scale: int) -> torch.Tensor:
    """The teacher's decode (N, 3, H, W) area-pooled to a module's output size latent_side·scale."""
    factor = rgb.shape[-1] // (latent_side * scale)
    if factor < 1 or rgb.shape[-1] != factor * latent_side * scale:
        raise ValueError(f"output scale {scale} does not divide the teacher's {rgb.shape[-1] // latent_side}x decode")
    return F.avg_pool2d(rgb, factor) if factor > 1 else rgb


@torch.inference_mode()
def score(module, latents: torch.Tensor, rgb: torch.Tensor, batch_size: int = 16) -> dict:
    """Mean PSNR, SSIM and CIEDE2000 of module(latents) against the pooled teacher decode."""
    target = target_at(rgb.float(), latents.shape[-1], module.scale)
    values = {k: [] for k in METRICS}
    for a in range(0, len(latents), batch_size):
        out = module(latents[a:a + batch_size]).float()
        if out.shape != target[a:a + batch_size].shape:
            raise ValueError(f"module returned {tuple(out.shape)}, expected {tuple(target[a:a + batch_size].shape)} "
                             f"for scale {module.scale}")
        for k, metric in METRICS.items():
            values[k].append(metric(out, target[a:a + batch_size]))
    return {k: round(float(torch.cat(v).mean()), 4) for k, v in values.items()}


@torch.inference_mode()
def time_per_preview(module, channels: int, repeats: int = 30, budget_s: float = 2.0) -> float:
    """Median milliseconds for one 1×C×64×64 preview on one CPU thread, after warm-up: `repeats` runs,
    fewer (at least 5) when they would take longer than `budget_s`.

    One thread because a preview this small gains little from more, and a second thread turns
    any other load on the machine into 10-100x slower, meaningless timings (threads wait on each other).
    """
    x = torch.randn(1, channels, 64, 64)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return median_ms(lambda: module(x), repeats, budget_s, least=5, warmups=2)
    finally:
        torch.set_num_threads(threads)


def median_ms(run, repeats: int, budget_s: float, least: int, warmups: int, device=None) -> float:
    """Median milliseconds of `run()` after `warmups` untimed calls: `repeats` timed calls, fewer (at least `least`)
    once they take `budget_s`; each synchronised when `device` is a CUDA device."""
    cuda = device is not None and torch.device(device).type == "cuda"
    for _ in range(warmups):
        run()
    times: list[float] = []
    while len(times) < repeats and (len(times) < least or sum(times) < budget_s):
        start = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1000, 4)


def kind_of(module) -> str:
    meta = getattr(module, "meta", {}) or {}
    if "peer" in meta:
        return "peer"
    if "table" in meta:
        return "table"
    return getattr(module, "family", "?")


def evaluate(modules: dict, data: HeldOut, progress: bool = True) -> list[Row]:
    """One Row per module of {name: module}, scored on `data`."""
    from tqdm import tqdm

    rows = []
    channels = data.clean.shape[1]
    for name, module in tqdm(modules.items(), desc="evaluate", unit="previewer", disable=not progress):
        if getattr(module, "latent_channels", channels) != channels:
            raise ValueError(f"{name} takes {module.latent_channels}-channel latents, the teacher makes {channels}")
        module.eval()
        rows.append(Row(
            name=name,
            kind=kind_of(module),
            scale=module.scale,
            params=sum(p.numel() for p in module.parameters()),
            clean=score(module, data.clean, data.clean_rgb),
            noised=score(module, data.noised, data.noised_rgb),
            ms=time_per_preview(module, channels),
        ))
    return rows


def markdown(rows: list[Row], title: str | None = None, note: str | None = None) -> str:
    """A markdown table of rows, best clean PSNR first."""
    lines = [f"## {title}", ""] if title else []
    if note:
        lines += [note, ""]
    lines += [
        "| previewer | kind | output | params | PSNR clean | SSIM clean | ΔE00 clean "
        "| PSNR noised | SSIM noised | ΔE00 noised | ms / 64² latent |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: -r.clean["psnr"]):
        lines.append(
            f"| {r.name} | {r.kind} | {r.scale}x | {r.params} | {r.clean['psnr']:.2f} | {r.clean['ssim']:.3f} | "
            f"{r.clean['ciede2000']:.2f} | {r.noised['psnr']:.2f} | {r.noised['ssim']:.3f} | "
            f"{r.noised['ciede2000']:.2f} | {r.ms:.2f} |"
        )
    return "\n".join(lines) + "\n"


def as_metrics(row: Row, data: HeldOut) -> dict:
    """A Row as the `metrics` entry of a weight file's meta (what `latent-preview list` shows)."""
    return {"clean": row.clean, "noised": {**row.noised, "s": EVAL_NOISE}, "ms_per_64x64": row.ms,
            "held_out": {k: data.source[k] for k in ("images", "image_count", "tile", "count", "seed")},
            "tiles": len(data.clean)}


def baselines(space: str) -> dict:
    """{name: module} of the published tables and loadable peer models of `space`."""
    import sys

    from training.factor_tables import TABLES, as_previewer
    from training.peers import PEERS

    modules = {f"{key.split('/')[1]} table": as_previewer(t) for key, t in TABLES.items() if t.space == space}
    for key, load in PEERS.items():
        if key.split("/")[0] != space:
            continue
        try:
            modules[f"{key.split('/')[1]} (peer)"] = load()
        except (ModuleNotFoundError, FileNotFoundError) as e:  # optional runtime (onnxruntime) or ../shared missing
            print(f"skipping peer {key}: {e}", file=sys.stderr)
    return modules
