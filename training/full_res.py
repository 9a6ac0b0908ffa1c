"""Full-resolution previews against what any latent-resolution preview can show.

A full-resolution previewer (scale > 1: the upsampler, TAESD-family decoders) earns its cost only where it
shows detail that no upscaled latent-resolution preview can: above the ceiling of those, the teacher's own
decode area-pooled to latent resolution and upscaled back bicubically. The wrappers here turn each side of
that comparison into a previewer-like module (`scale`, `meta`, latents → RGB in [0, 1]), so
training.evaluate scores them beside everything else, on the same tiles, in the same run.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

from training.evaluate import Row, evaluate


class Upscaled(nn.Module):
    """A latent-resolution preview upscaled bicubically by `factor` (what a viewer shows of it at full size)."""

    def __init__(self, module: nn.Module, factor: int):
        super().__init__()
        self.module, self.factor = module, factor
        self.scale, self.family, self.meta = module.scale * factor, "bicubic upscale", {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.module(x), scale_factor=self.factor, mode="bicubic", align_corners=False).clamp_(0, 1)


class Pooled(nn.Module):
    """A full-resolution preview area-pooled to latent resolution (its colours, without its detail)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        self.scale, self.family, self.meta = 1, "pooled", {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.module(x), self.module.scale)


class Ceiling(nn.Module):
    """The teacher's decode pooled to latent resolution and upscaled back bicubically: the best any
    latent-resolution preview can look at full size. Costs a teacher decode (its `ms` is the teacher's)."""

    def __init__(self, teacher):
        super().__init__()
        self.teacher = teacher
        self.scale, self.family, self.meta = teacher.scale_factor, "ceiling", {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.teacher.scale_factor
        small = F.avg_pool2d(self.teacher.decode(x).float().cpu(), f)
        return F.interpolate(small, scale_factor=f, mode="bicubic", align_corners=False).clamp_(0, 1)


CEILING = "ceiling: teacher pooled, bicubic back"




def comparison(rows: list[Row], modules: dict, teacher, data, progress: bool = True) -> list[Row]:
    """Rows that put the full-resolution previewers among `rows` (scored on `data`, with their `modules`) in
    context: each one pooled to latent resolution, the best latent-resolution row (clean PSNR) upscaled
    bicubically to the teacher's scale, and the ceiling. A previewer between the two (A1111's Approx NN gives
    2x) is also upscaled bicubically to the teacher's scale: its own row is scored against the decode pooled to
    its size, which is no full-resolution number. Each derived row's `shows` names the row it shows. Empty when no
    row is above latent resolution."""
    full = [r for r in rows if r.scale > 1]
    if not full:
        return []
    f = teacher.scale_factor
    shown = {f"{r.name}, pooled": (r.name, Pooled(modules[r.name])) for r in full}
    upscaled = [r for r in full if r.scale < f]
    latent = [r for r in rows if r.scale == 1]
    if latent:
        upscaled.append(max(latent, key=lambda r: r.clean["psnr"]))
    shown |= {f"{r.name}, bicubic ×{f // r.scale}": (r.name, Upscaled(modules[r.name], f // r.scale)) for r in upscaled}
    out = evaluate({name: module for name, (_, module) in shown.items()} | {CEILING: Ceiling(teacher)}, data,
                   progress=progress)
    for row in out:
        row.shows = shown[row.name][0] if row.name in shown else None
    return out


def full_res_metrics(module: nn.Module, teacher, data) -> dict:
    """What a full-resolution previewer's weight file stores beside its own metrics (`metrics["full_res"]`), so
    a choice between previews can be made from the files alone (previewers.pipelines.resolve.auto_previewer): its
    PSNR/SSIM pooled to latent resolution, and the ceiling's on the same tiles with the teacher's ms."""
    pooled, ceiling = evaluate({"pooled": Pooled(module), CEILING: Ceiling(teacher)}, data, progress=False)
    return {"pooled": {"clean": pooled.clean, "noised": pooled.noised},
            "ceiling": {"clean": ceiling.clean, "noised": ceiling.noised, "teacher_ms": ceiling.ms}}
