"""Fit a previewer against a pipeline's own VAE on first use, and cache it keyed by the VAE's weights.

For pipelines whose space has no shipped previewer (or whose VAE does not match it): crops of the
example photos in previewers/fit_images/ (redistributable, see LICENSES.md there) are encoded by
`pipe.vae`, converted to the denoiser's convention and decoded back exactly as the pipeline decodes
(previewers/conventions.py). The decodes, area-pooled to latent resolution, are the targets of the
closed-form families (affine, and a linear 3x3 conv) solved by least squares (previewers/closed_form.py);
whichever is better on the held-out photos' crops is kept. Video VAEs are fitted on single-frame
encodes (their first latent frame), the colour map every later frame shares up to small drift.

The result is a normal Previewer, its `meta` recording how it was fitted and its held-out PSNR
(meta["metrics"]["clean"]["psnr"], beside a constant-colour baseline), saved under
cache_root()/fitted/ named by a hash of the VAE's weights and the fit recipe: the next build, in
any process, loads it instantly.
"""

import hashlib
import json
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .cache import cache_root
from .closed_form import fit_closed_form, set_normalisation
from .conventions import PipelineLatents
from .families import Previewer, build
from .weightfile import load_file, save

IMAGES = Path(__file__).resolve().parent / "fit_images"
HELD_OUT = ("coffee", "rocket")  # photos whose crops only score the fit
CANDIDATES = (("affine", {}), ("conv", {"channels": [], "kernels": [3]}))
CROP_LATENTS = 16  # crop side in latents: 128 px for an 8x VAE
CROPS_PER_IMAGE = 4  # 28 crops: ~2 min on one CPU core for an SD-class VAE, seconds on a GPU
BATCH = 4  # crops per VAE call
FIT_VERSION = 2  # bump when the recipe changes: older cache entries are then ignored


def vae_digest(vae) -> str:
    """sha256 of the VAE's parameters and buffers (names, shapes, dtypes, bytes), read on the CPU."""
    digest = hashlib.sha256(type(vae).__name__.encode())
    for name, tensor in sorted(vae.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cache_path(latents: PipelineLatents, folder: Path | None = None) -> Path:
    convention = latents.convention
    key = {"vae": vae_digest(latents.vae), "space": convention.name, "normalisation": convention.normalisation,
           "frame_vae": convention.frame_vae, "decode": [list(kv) for kv in convention.decode_kwargs],
           "version": FIT_VERSION,
           "images": sorted(p.name for p in IMAGES.glob("*.jpg"))}
    name = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return (folder or cache_root() / "fitted") / f"{convention.name}-{name}.safetensors"


def crops(side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Photo name → (CROPS_PER_IMAGE, 3, side, side) float crops in [0, 1]; each photo is first
    downscaled to a short side of 2·side, so crops show whole objects as well as detail."""
    generator = torch.Generator().manual_seed(seed)
    out = {}
    for path in sorted(IMAGES.glob("*.jpg")):
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = 2 * side / min(im.size)
            im = im.resize((max(side, round(im.width * scale)), max(side, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
            pixels = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
        h, w = pixels.shape[1:]
        tops = torch.randint(0, h - side + 1, (CROPS_PER_IMAGE,), generator=generator)
        lefts = torch.randint(0, w - side + 1, (CROPS_PER_IMAGE,), generator=generator)
        out[path.stem] = torch.stack([pixels[:, t:t + side, s:s + side] for t, s in zip(tops.tolist(), lefts.tolist())])
    return out


def pairs(latents: PipelineLatents, images: torch.Tensor, bar) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) → model-space latents (N, C, h, w) float32 and the pipeline's decode of
    them area-pooled to (N, 3, h, w) (unclamped targets are what the least squares wants; decodes
    of a diffusers VAE are clamped to [0, 1] like the pipeline's image)."""
    xs, ys = [], []
    for a in range(0, len(images), BATCH):
        frames = latents.encode(images[a:a + BATCH])  # (b, 1, C, h, w)
        decoded = latents.decode(frames)[:, 0]  # (b, 3, H, W)
        x = frames[:, 0].float().cpu()
        xs.append(x)
        ys.append(F.adaptive_avg_pool2d(decoded.float().cpu(), x.shape[-2:]))
        bar.update(len(x))
    return torch.cat(xs), torch.cat(ys)


def mean_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    mse = (pred.clamp(0, 1) - target.clamp(0, 1)).square().mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return float((10 * torch.log10(1 / mse)).mean())


def fit_for_vae(latents: PipelineLatents, progress: bool = True) -> Previewer:
    """A closed-form previewer fitted against `latents.vae` as the pipeline decodes (see the module docstring)."""
    from tqdm import tqdm

    start = time.perf_counter()
    vae_name = type(latents.vae).__name__
    side = CROP_LATENTS * latents.factor
    photos = crops(side)
    train_names = [n for n in photos if n not in HELD_OUT]
    total = sum(len(c) for c in photos.values())
    with tqdm(total=total, unit="crop", disable=not progress,
              desc=f"latent-preview: fitting a previewer to {vae_name} (first use, cached afterwards); encode+decode") as bar:
        train_x, train_y = pairs(latents, torch.cat([photos[n] for n in train_names]), bar)
        held_x, held_y = pairs(latents, torch.cat([photos[n] for n in HELD_OUT]), bar)
    results = []
    for family, args in CANDIDATES:
        previewer = build(family, latents.channels, **args)
        set_normalisation(previewer, train_x)
        fit_closed_form(previewer, train_x, train_y, progress=progress)
        with torch.no_grad():
            results.append((mean_psnr(previewer(held_x), held_y), family, previewer))
    psnr, family, previewer = max(results, key=lambda r: r[0])
    baseline = mean_psnr(train_y.mean(dim=(0, 2, 3)).view(1, 3, 1, 1).expand_as(held_y), held_y)
    previewer = previewer.eval().requires_grad_(False)
    convention = latents.convention
    previewer.meta = {
        "space": convention.name,
        "teacher": f"{vae_name} (the pipeline's own VAE)",
        "teacher_space": {"normalisation": convention.normalisation, "decoder": convention.decoder},
        "recipe": {
            "method": "least squares, fitted on first use",
            "family": family,
            "args": previewer.args,
            "data": f"{len(train_names) * CROPS_PER_IMAGE} crops of {side} px from previewers/fit_images "
                    f"({', '.join(train_names)})",
            "candidates": {f: round(p, 3) for p, f, _ in results},
            "device": str(latents.vae.device) if latents.vae.device.type != "cpu"
            else f"cpu ({platform.processor() or platform.machine()})",
            "seconds": round(time.perf_counter() - start, 2),
            "torch": torch.__version__,
            "version": FIT_VERSION,
            "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        },
        "metrics": {
            "clean": {"psnr": round(psnr, 4)},
            "constant_colour": {"psnr": round(baseline, 4)},
            "held_out": {"images": list(HELD_OUT), "crops": len(held_x), "tile": side},
        },
    }
    return previewer


def fitted_previewer(latents: PipelineLatents, refit: bool = False, progress: bool = True,
                     folder: Path | None = None) -> Previewer:
    """The cached fit for this VAE and convention, fitting (and caching) it when absent or when `refit`."""
    path = cache_path(latents, folder)
    if path.is_file() and not refit:
        try:
            return load_file(path)
        except ValueError:  # a damaged cache entry is refitted, not fatal
            pass
    previewer = fit_for_vae(latents, progress=progress)
    try:
        save(previewer, path)
    except OSError as e:
        warnings.warn(f"latent-preview: cannot cache the fitted previewer in {path.parent} ({e}); "
                      "it will be fitted again next time (set LATENT_PREVIEW_CACHE to a writable folder)", stacklevel=2)
    if progress:
        metrics = previewer.meta["metrics"]
        print(f"latent-preview: fitted {previewer.family} for {type(latents.vae).__name__} in "
              f"{previewer.meta['recipe']['seconds']} s, held-out PSNR {metrics['clean']['psnr']:.1f} dB "
              f"(constant colour {metrics['constant_colour']['psnr']:.1f} dB); cached as {path}", file=sys.stderr)
    return previewer
