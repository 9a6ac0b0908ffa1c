"""fit(): one previewer family fitted against a teacher's decodes, with its recipe in `meta`."""

import platform
import time

import torch

from previewers.families import build

from .closed_form import fit_closed_form, is_closed_form
from .gradient import Training, resolve_device, train


def set_normalisation(previewer, latents: torch.Tensor) -> None:
    """in_scale/in_shift from per-channel latent statistics, so the body sees ≈ zero-mean unit-variance
    inputs. `linear` has no bias to absorb a shift, so it only gets a scale (1 / RMS); its shift is
    left to the closed-form fit (the display offset, see training/closed_form.py)."""
    x = latents.transpose(0, 1).reshape(latents.shape[1], -1).double()  # (C, N·h·w)
    if previewer.family == "linear":
        scale, shift = 1 / x.square().mean(1).sqrt(), torch.zeros(x.shape[0], dtype=x.dtype)
    else:
        mean, std = x.mean(1), x.std(1)
        scale, shift = 1 / std, -mean / std
    previewer.in_scale.copy_(scale.clamp(max=1e6))
    previewer.in_shift.copy_(shift)


def build_for(teacher, family: str, args: dict | None = None):
    """A `family` previewer (constructor `args`) for `teacher`'s latents; ValueError for arguments the family
    does not take and for an output scale the teacher's decodes cannot supply."""
    previewer = build(family, teacher.latent_channels, **dict(args or {}))
    if previewer.scale not in (1, teacher.scale_factor):
        raise ValueError(f"{family} {previewer.args} outputs {previewer.scale}x the latent size but teacher "
                         f"{teacher.name} decodes to {teacher.scale_factor}x; choose stages to match")
    return previewer


def fit(teacher, family: str, pairs, space: str, args: dict | None = None, device: str = "auto",
        ridge: float = 1e-5, reweight: int = 3, training: Training = Training(), progress: bool = True):
    """A `family` previewer (constructor `args`, defaults when None) fitted to `pairs` of `teacher`.

    Closed-form families (linear, affine, quadratic, one-layer conv) are solved by ridge least
    squares on the CPU, reweighted `reweight` times toward the best mean PSNR after the display
    clamp (training/closed_form.py). Other families are trained with `training` on `device`. The
    result carries meta: space, teacher and the full recipe (options, data, seed, device, seconds,
    versions), ready for previewers.save.
    """
    previewer = build_for(teacher, family, args)
    if pairs.latents.shape[1] != teacher.latent_channels:
        raise ValueError(f"pairs have {pairs.latents.shape[1]}-channel latents, "
                         f"teacher {teacher.name} takes {teacher.latent_channels}")
    closed = is_closed_form(family, previewer.args)
    device = torch.device("cpu") if closed else resolve_device(device)
    start = time.perf_counter()
    set_normalisation(previewer, pairs.latents)
    summary = None  # what Adam reports; least squares has nothing to add
    if closed:
        fit_closed_form(previewer, pairs.latents, pairs.small, ridge=ridge, reweight=reweight, progress=progress)
    else:
        summary = train(previewer, pairs, training, device=device, progress=progress)
    previewer = previewer.cpu().eval().requires_grad_(False)
    recipe = {
        "method": "least squares" if closed else "Adam",
        "family": family,
        "args": previewer.args,
        "ridge": ridge if closed else None,
        "reweight": reweight if closed else None,
        "training": vars(training) if summary is not None else None,
        "result": summary,
        "data": pairs.source,
        "samples": len(pairs),
        "seed": training.seed,
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else f"cpu ({platform.processor() or platform.machine()})"),
        "seconds": round(time.perf_counter() - start, 2),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    previewer.meta = {"space": space, "teacher": teacher.name, "teacher_space": teacher.space_info, "recipe": recipe}
    return previewer
