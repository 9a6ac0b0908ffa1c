"""Linear/affine previewers as the factor tables other tools read.

ComfyUI (and AUTOMATIC1111, InvokeAI, stable-diffusion.cpp) compute, per latent pixel x (C values
as the denoiser holds them), rgb = x · latent_rgb_factors + latent_rgb_factors_bias in about
[-1, 1] and show (rgb + 1) / 2 clamped to [0, 1]. Our previewer shows W·(x·in_scale + in_shift) + b
directly in [0, 1], so the tool's numbers are factors = 2·(W·diag(in_scale))ᵀ (C×3) and
bias = 2·(W·in_shift + b) − 1; a fitted `linear` comes out with bias 0 (see previewers/first_use/closed_form.py).
"""

import json

import torch

from previewers.models.card import WeightCard

EXPORTABLE = ("linear", "affine")
DIGITS = 8  # significant digits in JSON, decimals in the Python snippet: reproduces the previewer to ~1e-7


def unit_factors(previewer) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, 3) weight and (3,) bias with display = x · weight + bias in [0, 1] (before the clamp)."""
    if previewer.family not in EXPORTABLE:
        raise ValueError(f"only {' and '.join(EXPORTABLE)} previewers are factor tables; a {previewer.family} previewer "
                         "is not a per-pixel linear map (ship its weight file and load it with previewers.load)")
    w = previewer.body.weight.detach().double()[:, :, 0, 0]  # (3, C)
    b = previewer.body.bias.detach().double() if previewer.body.bias is not None else torch.zeros(3, dtype=torch.float64)
    scale, shift = previewer.in_scale.double(), previewer.in_shift.double()
    return (w * scale).T, w @ shift + b


def factors(previewer) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ComfyUI's (latent_rgb_factors (C, 3), latent_rgb_factors_bias (3,) or None when it is zero)."""
    weight, bias = unit_factors(previewer)
    bias = 2 * bias - 1
    return 2 * weight, None if bias.abs().max() < 1e-6 else bias


def _numbers(t: torch.Tensor) -> list:
    return [float(f"{v:.{DIGITS}g}") for v in t.tolist()]


# the class in ComfyUI's comfy/latent_formats.py whose __init__ holds each space's factors
COMFYUI_CLASSES = {"sd1": "SD15", "sdxl": "SDXL", "sd3": "SD3", "flux1": "Flux", "flux2": "Flux2"}
INDENT = " " * 8  # the body of a method in ComfyUI's 4-space style


def comfyui_snippet(previewer, name: str) -> str:
    """The two attribute assignments ComfyUI's latent format classes make in `__init__`, indented to paste
    there, after a comment saying where they go and where the numbers come from."""
    weight, bias = factors(previewer)
    card = WeightCard.of(previewer)
    space = card.space
    where = (f"the __init__ of class {COMFYUI_CLASSES[space]}" if space in COMFYUI_CLASSES
             else "the __init__ of the latent format class of your model")
    lines = [
        f"# {name}: {space or '?'} latent -> RGB preview factors, {previewer.family} fitted by latent-preview"
        f" against {card.teacher or '?'}.",
        f"# Paste these lines into ComfyUI's comfy/latent_formats.py, in {where},",
        "# replacing its own latent_rgb_factors and latent_rgb_factors_bias.",
        "# Input: latents as the denoiser holds them (what ComfyUI previews as x0)"
        + (", unpatchified to 32 channels at H/8 (ComfyUI's latent_rgb_factors_reshape)." if space == "flux2"
           else "."),
        "# Preview: ((x @ latent_rgb_factors + latent_rgb_factors_bias) + 1) / 2, clamped to [0, 1].",
    ]
    if card.metrics is not None and card.metrics.noised is not None:
        lines.append(f"# Held-out PSNR against the teacher: {card.metrics.clean.psnr:.2f} dB clean, "
                     f"{card.metrics.noised.psnr:.2f} dB noised.")
    lines.append(INDENT + "self.latent_rgb_factors = [")
    lines.append(INDENT + "    #" + "".join(f"{c:>13}" for c in ("R", "G", "B")))
    for c, row in enumerate(weight):
        lines.append(INDENT + "    [" + ", ".join(f"{v: .{DIGITS}f}" for v in row.tolist()) + f"],  # channel {c}")
    lines.append(INDENT + "]")
    lines.append(INDENT + "self.latent_rgb_factors_bias = " + ("None" if bias is None else
                 "[" + ", ".join(f"{v:.{DIGITS}f}" for v in bias.tolist()) + "]"))
    return "\n".join(lines) + "\n"


def json_export(previewer, name: str) -> str:
    """The same numbers as JSON, in ComfyUI's [-1, 1] convention and in the direct [0, 1] form."""
    weight, bias = factors(previewer)
    unit_weight, unit_bias = unit_factors(previewer)
    card = WeightCard.of(previewer)
    document = {
        "name": name,
        "space": card.space,
        "family": previewer.family,
        "teacher": card.teacher,
        "latent_channels": previewer.latent_channels,
        "input": "latents as the denoiser holds them, one C-vector x per latent pixel",
        "comfyui": {
            "display": "clamp(((x @ latent_rgb_factors + latent_rgb_factors_bias) + 1) / 2, 0, 1)",
            "latent_rgb_factors": [_numbers(r) for r in weight],
            "latent_rgb_factors_bias": None if bias is None else _numbers(bias),
        },
        "unit": {
            "display": "clamp(x @ weight + bias, 0, 1)",
            "weight": [_numbers(r) for r in unit_weight],
            "bias": _numbers(unit_bias),
        },
        "metrics": None if card.metrics is None else card.metrics.to_dict(),
    }
    return json.dumps(document, indent=2) + "\n"
