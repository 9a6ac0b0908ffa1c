"""Fit a previewer against a pipeline's own VAE on first use, and cache it keyed by the VAE's weights.

For pipelines whose space has no shipped previewer (or whose VAE does not match it): crops of the
example photos in previewers/first_use/fit_images/ (redistributable, see LICENSES.md there) are encoded by
`pipe.vae`, converted to the denoiser's convention and decoded back exactly as the pipeline decodes
(previewers/pipelines/conventions.py). The decodes, area-pooled to latent resolution, are the targets of the
closed-form families (affine, and a linear 3x3 conv) solved by least squares (previewers/first_use/closed_form.py);
whichever is better on the held-out photos' crops is kept. Video VAEs are fitted on single-frame
encodes (their first latent frame), the colour map every later frame shares up to small drift.

The result is a normal Previewer, its card (`meta`) recording how it was fitted and its held-out PSNR
(first_use_metrics: beside a constant-colour baseline), saved under
cache_root()/fitted/ named by a hash of the VAE's weights and the fit recipe: the next build, in
any process, loads it instantly. The encoded and decoded crops are cached beside it (in pairs/), so a refit
(`previewer="fit"`) and the net fit score on the same held-out crops without running the VAE again.

Day-one nets: `latent-preview fit --pipeline DIR` (training/day_one.py) also trains the space's conv net
against the same VAE and caches it as a second entry for the same digest (`-net`), and with `--upsampler` the
upsampler to full resolution (`-upsampler`); `fitted_previewer` returns whichever latent-resolution entry scores
the higher held-out PSNR (all are scored on the same held-out crops), or the upsampler where its full-resolution
scores say it is the better preview at its cost (previewers.pipelines.resolve.upsampler_is_better). On a CPU the
first use fits only the closed form (seconds to a few minutes, never a net). On a GPU (`torch.cuda.is_available()`
and the VAE on CUDA) with the `training` package importable, the first use also trains the net within
GPU_NET_BUDGET_S seconds and, for image VAEs, the upsampler within GPU_UPSAMPLER_BUDGET_S (set
LATENT_PREVIEW_FIRST_USE_NET=0 to turn both off): that path was written without a GPU to measure it on, and its
times are untested budgets, not measurements.
"""

import importlib.util
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file as load_tensors
from safetensors.torch import save_file as save_tensors

from previewers.files import atomic_write
from previewers.first_use.cache import cache_root, key_digest, weights_digest
from previewers.first_use.closed_form import fit_closed_form, set_normalisation
from previewers.metrics import psnr
from previewers.models.card import FIRST_USE_IMAGES, HeldOutSet, Metrics, Scores, WeightCard
from previewers.models.families import Previewer, build
from previewers.models.weightfile import load_file, save
from previewers.pipelines.latents import PipelineLatents
from previewers.pipelines.resolve import upsampler_is_better

IMAGES = Path(__file__).resolve().parent / "fit_images"
HELD_OUT = ("coffee", "rocket")  # photos whose crops only score the fits (closed form and net alike)
CANDIDATES = (("affine", {}), ("conv", {"channels": [], "kernels": [3]}))
CROP_LATENTS = 16  # crop side in latents: 128 px for an 8x VAE
CROPS_PER_IMAGE = 4  # held-out crops per HELD_OUT photo
TRAIN_CROPS = 24  # closed-form training crops, spread over the other photos: with the held-out ones 32 crops,
#                   ~2 min on one CPU core for an SD-class VAE, seconds on a GPU
BATCH = 4  # crops per VAE call
FIT_VERSION = 3  # bump when the recipe changes: older cache entries are then ignored (3: 18 photos, cached pairs)
NET_SUFFIX = "-net"  # the day-one net's cache entry: <closed-form entry's stem>-net.safetensors
UPSAMPLER_SUFFIX = "-upsampler"  # the day-one upsampler's: <closed-form entry's stem>-upsampler.safetensors
PAIRS_SUFFIX = "-first-use"  # pairs/<stem>-first-use: the closed form's encoded/decoded crops, train and held out
GPU_NET_BUDGET_S = 120.0  # first use on a GPU: the net's whole fit (pairs and training); NOT measured (no GPU yet)
GPU_UPSAMPLER_BUDGET_S = 120.0  # then the upsampler's (its pairs are the net's, cached); NOT measured either
PAIR_KEYS = {"train_x", "train_y", "held_x", "held_y", "held_full"}


def cache_path(latents: PipelineLatents, folder: Path | None = None) -> Path:
    convention = latents.convention
    key = {"vae": weights_digest(latents.vae), "space": convention.name, "normalisation": convention.normalisation,
           "frame_vae": convention.frame_vae, "decode": [list(kv) for kv in convention.decode_kwargs],
           "version": FIT_VERSION,
           "images": sorted(p.name for p in IMAGES.glob("*.jpg"))}
    return (folder or cache_root() / "fitted") / f"{convention.name}-{key_digest(key)}.safetensors"


def net_path(path: Path) -> Path:
    """The day-one net's cache entry beside the closed form's entry `path` (same VAE digest and recipe)."""
    return path.with_name(path.stem + NET_SUFFIX + path.suffix)


def upsampler_path(path: Path) -> Path:
    """The day-one upsampler's cache entry beside the closed form's entry `path`."""
    return path.with_name(path.stem + UPSAMPLER_SUFFIX + path.suffix)


def pairs_path(path: Path) -> Path:
    """Where first_use_pairs caches the crops for the entry `path`: in pairs/ beside it, with the net's pairs."""
    return path.parent / "pairs" / (path.stem + PAIRS_SUFFIX + path.suffix)


def image_names() -> list[str]:
    return sorted(p.stem for p in IMAGES.glob("*.jpg"))


def crops(side: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Photo name → (k, 3, side, side) float crops in [0, 1]: CROPS_PER_IMAGE for each HELD_OUT photo, and
    TRAIN_CROPS spread round-robin over the others. Each photo is first downscaled to a short side of 2·side, so
    crops show whole objects as well as detail."""
    generator = torch.Generator().manual_seed(seed)
    names = image_names()
    training = [n for n in names if n not in HELD_OUT]
    counts = {n: CROPS_PER_IMAGE if n in HELD_OUT else
              TRAIN_CROPS // len(training) + (training.index(n) < TRAIN_CROPS % len(training)) for n in names}
    out = {}
    for name in names:
        with Image.open(IMAGES / f"{name}.jpg") as im:
            im = im.convert("RGB")
            scale = 2 * side / min(im.size)
            im = im.resize((max(side, round(im.width * scale)), max(side, round(im.height * scale))),
                           Image.Resampling.LANCZOS)
            pixels = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
        h, w = pixels.shape[1:]
        tops = torch.randint(0, h - side + 1, (counts[name],), generator=generator)
        lefts = torch.randint(0, w - side + 1, (counts[name],), generator=generator)
        if counts[name]:
            out[name] = torch.stack([pixels[:, t:t + side, s:s + side] for t, s in zip(tops.tolist(), lefts.tolist())])
    return out


def pairs(latents: PipelineLatents, images: torch.Tensor, bar) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images (N, 3, H, W) → model-space latents (N, C, h, w) float32, the pipeline's decode of them
    area-pooled to (N, 3, h, w) (unclamped targets are what the least squares wants; decodes of a diffusers VAE
    are clamped to [0, 1] like the pipeline's image), and that decode at full resolution, (N, 3, H, W) float16."""
    xs, ys, full = [], [], []
    for a in range(0, len(images), BATCH):
        frames = latents.encode(images[a:a + BATCH])  # (b, 1, C, h, w)
        decoded = latents.decode(frames)[:, 0].float().cpu()  # (b, 3, H, W)
        x = frames[:, 0].float().cpu()
        xs.append(x)
        ys.append(F.adaptive_avg_pool2d(decoded, x.shape[-2:]))
        full.append(decoded.half())
        bar.update(len(x))
    return torch.cat(xs), torch.cat(ys), torch.cat(full)


def mean_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean PSNR of the crops (previewers.metrics.psnr), each capped at 100 dB (MSE 1e-10) so an exact crop keeps the
    mean finite."""
    return float(psnr(pred, target).clamp(max=100).mean())


def first_use_pairs(latents: PipelineLatents, progress: bool = True, folder: Path | None = None,
                    refresh: bool = False) -> dict[str, torch.Tensor]:
    """{"train_x", "train_y", "held_x", "held_y", "held_full"}: the closed form's training crops and the held-out
    crops every fit for this VAE is scored on (latents, pooled decodes and, for upsamplers, full-resolution ones),
    encoded and decoded by `latents` (pairs()); made once per VAE and convention and cached (pairs_path), unless
    `refresh`."""
    from tqdm import tqdm

    path = pairs_path(cache_path(latents, folder))
    if path.is_file() and not refresh:
        try:
            cached = load_tensors(path)
            if set(cached) == PAIR_KEYS:
                return cached
        except Exception:  # a torn or foreign file is recomputed, not trusted
            pass
    side = CROP_LATENTS * latents.factor
    photos = crops(side)
    train_names = [n for n in photos if n not in HELD_OUT]
    total = sum(len(c) for c in photos.values())
    vae_name = type(latents.vae).__name__
    with tqdm(total=total, unit="crop", disable=not progress,
              desc=f"latent-preview: fitting a previewer to {vae_name} (first use, cached afterwards); encode+decode") as bar:
        train_x, train_y, _ = pairs(latents, torch.cat([photos[n] for n in train_names]), bar)
        held_x, held_y, held_full = pairs(latents, torch.cat([photos[n] for n in HELD_OUT]), bar)
    out = {"train_x": train_x.contiguous(), "train_y": train_y.contiguous(), "held_x": held_x.contiguous(),
           "held_y": held_y.contiguous(), "held_full": held_full.contiguous()}
    try:
        with atomic_write(path) as tmp:
            save_tensors(out, str(tmp))
    except OSError:
        pass  # the fit still works; the next one encodes again
    return out


def fit_for_vae(latents: PipelineLatents, progress: bool = True, folder: Path | None = None) -> Previewer:
    """A closed-form previewer fitted against `latents.vae` as the pipeline decodes (see the module docstring)."""
    start = time.perf_counter()
    vae_name = type(latents.vae).__name__
    side = CROP_LATENTS * latents.factor
    made = first_use_pairs(latents, progress=progress, folder=folder)
    train_x, train_y, held_x, held_y = made["train_x"], made["train_y"], made["held_x"], made["held_y"]
    train_names = [n for n in image_names() if n not in HELD_OUT]
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
            "data": f"{len(train_x)} crops of {side} px from previewers/first_use/fit_images "
                    f"({', '.join(train_names)})",
            "candidates": {f: round(p, 3) for p, f, _ in results},
            "device": str(latents.vae.device) if latents.vae.device.type != "cpu"
            else f"cpu ({platform.processor() or platform.machine()})",
            "seconds": round(time.perf_counter() - start, 2),
            "torch": torch.__version__,
            "version": FIT_VERSION,
            "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        },
        "metrics": first_use_metrics(psnr, baseline, len(held_x), side),
    }
    return previewer


def first_use_metrics(psnr: float, baseline: float, crops: int, side: int) -> dict:
    """The card's metrics of a fit scored on the held-out crops (first_use_pairs), beside the constant colour's
    `baseline` PSNR: `crops` squares of `side` pixels from the HELD_OUT photos."""
    held_out = HeldOutSet(images=FIRST_USE_IMAGES, image_count=len(HELD_OUT), tile=side, count=crops, seed=0,
                          only=[f"{n}.jpg" for n in HELD_OUT])
    return Metrics(clean=Scores(psnr=round(psnr, 4)), constant_colour=Scores(psnr=round(baseline, 4)), tiles=crops,
                   held_out=held_out).to_dict()


def score(previewer, held: dict[str, torch.Tensor]) -> float:
    """Held-out PSNR of `previewer` on first_use_pairs' held-out crops (the number fitted entries are chosen by)."""
    with torch.no_grad():
        return mean_psnr(previewer(held["held_x"]).float().cpu(), held["held_y"])


def held_out_psnr(previewer) -> float:
    metrics = WeightCard.of(previewer).metrics
    return float("-inf") if metrics is None else metrics.clean.psnr


def cached_entries(latents: PipelineLatents, folder: Path | None = None) -> dict[str, Previewer]:
    """{"closed_form": ..., "net": ..., "upsampler": ...}: the cache entries for this VAE that load (damaged ones
    are left out)."""
    path = cache_path(latents, folder)
    out = {}
    for role, entry in (("closed_form", path), ("net", net_path(path)), ("upsampler", upsampler_path(path))):
        if entry.is_file():
            try:
                out[role] = load_file(entry)
            except ValueError:  # a damaged cache entry is refitted (closed form) or ignored (net), never fatal
                pass
    return out


def best_entry(entries: dict[str, Previewer]) -> Previewer:
    """The latent-resolution entry with the higher held-out PSNR (its card's metrics; the closed form on a tie), or
    the upsampler where its card says it is the better preview at its cost beside that one (upsampler_is_better)."""
    latent = max((entries[k] for k in ("closed_form", "net") if k in entries), key=held_out_psnr)
    upsampler = entries.get("upsampler")
    if upsampler is not None and upsampler_is_better(WeightCard.of(upsampler).metrics, WeightCard.of(latent).metrics):
        return upsampler
    return latent


def net_on_first_use(latents: PipelineLatents) -> bool:
    """Whether the first use also trains the day-one nets: only with a CUDA GPU holding the VAE, the `training`
    package importable and LATENT_PREVIEW_FIRST_USE_NET not "0". Never on a CPU, where it would block for minutes
    (the upsampler for most of an hour)."""
    if os.environ.get("LATENT_PREVIEW_FIRST_USE_NET", "1") == "0" or not torch.cuda.is_available():
        return False
    device = getattr(latents.vae, "device", None)
    if getattr(device, "type", None) != "cuda":
        return False
    try:
        return importlib.util.find_spec("training.day_one") is not None
    except (ImportError, ValueError):
        return False


def upsampler_on_first_use(latents: PipelineLatents) -> bool:
    """Whether the first use also trains the day-one upsampler: as net_on_first_use, for image pipelines (each
    frame of a video would cost a full-resolution preview) whose VAE's spatial factor is a power of two."""
    convention, factor = latents.convention, latents.factor
    return (net_on_first_use(latents) and convention.temporal == 1 and not convention.frames_kwarg
            and factor >= 2 and factor & (factor - 1) == 0)


def fitted_previewer(latents: PipelineLatents, refit: bool = False, progress: bool = True,
                     folder: Path | None = None) -> Previewer:
    """The best cached fit for this VAE and convention (best_entry: the closed form, or the day-one net and
    upsampler once `latent-preview fit --pipeline` trained them), fitting (and caching) the closed form when no
    latent-resolution entry is cached or when `refit`. On a GPU (net_on_first_use) a missing net is trained too,
    within GPU_NET_BUDGET_S seconds, then a missing upsampler (upsampler_on_first_use) within
    GPU_UPSAMPLER_BUDGET_S: that path imports `training` lazily and was not measured here (no GPU was available
    when it was written)."""
    path = cache_path(latents, folder)
    entries = cached_entries(latents, folder)
    if refit or not entries.keys() & {"closed_form", "net"}:
        entries["closed_form"] = fit_for_vae(latents, progress=progress, folder=folder)
        previewer = entries["closed_form"]
        try:
            save(previewer, path)
        except OSError as e:
            warnings.warn(f"latent-preview: cannot cache the fitted previewer in {path.parent} ({e}); "
                          "it will be fitted again next time (set LATENT_PREVIEW_CACHE to a writable folder)", stacklevel=2)
        if progress:
            card = WeightCard.of(previewer)
            print(f"latent-preview: fitted {previewer.family} for {type(latents.vae).__name__} in "
                  f"{card.recipe['seconds']} s, held-out PSNR {card.metrics.clean.psnr:.1f} dB "
                  f"(constant colour {card.metrics.constant_colour.psnr:.1f} dB); cached as {path}", file=sys.stderr)
    if net_on_first_use(latents):
        from training.day_one import train_day_one_net, train_day_one_upsampler  # lazily: only here, only on a GPU

        wanted = [("net", train_day_one_net, GPU_NET_BUDGET_S)]
        if upsampler_on_first_use(latents):
            wanted.append(("upsampler", train_day_one_upsampler, GPU_UPSAMPLER_BUDGET_S))
        for role, train, budget in wanted:
            if role in entries:
                continue
            try:
                entries[role] = train(latents, budget_s=budget, progress=progress, folder=folder)
            except Exception as e:  # the closed form is a working preview: a failed net must not end the run
                warnings.warn(f"latent-preview: training the day-one {role} on the GPU failed ({type(e).__name__}: "
                              f"{e}); previewing with what is cached", stacklevel=2)
    return best_entry(entries)
