"""Gradient fits: Adam on the display error, with a validation split and early stopping.

Latent-resolution previewers learn the teacher's decode area-pooled to latent resolution (whole
samples); the upsampler learns full-resolution targets from small random latent crops (16² latents
→ 128² pixels by default), which keeps each step cheap on a CPU. The loss is the squared error
after the display clamp: pixels whose target is clipped and whose output is already beyond the
same bound cost nothing, everywhere else the gradient flows as for plain MSE.
"""

import copy
import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Training:
    steps: int = 3000  # Adam steps: the fixed budget; early stopping may end sooner
    batch: int = 32  # samples (or latent crops, for the upsampler) per step
    lr: float = 2e-3  # peak learning rate, cosine-annealed to lr/20 over `steps`
    val_fraction: float = 0.1  # share of samples held out for validation and early stopping
    eval_every: int = 100  # steps between validation passes
    patience: int = 10  # validation passes without improvement before stopping
    crop: int = 16  # upsampler latent crop side (targets are crop·scale pixels)
    seed: int = 0


def hidden_by_clamp(out: torch.Tensor, clamped_target: torch.Tensor) -> torch.Tensor:
    """Where the display clamp hides the error: the target sits on a bound of [0, 1] and the unclamped
    output is already beyond it (bool, same shape)."""
    return ((out > 1) & (clamped_target >= 1)) | ((out < 0) & (clamped_target <= 0))


def display_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of unclamped `out` against the clamped target, ignoring errors the clamp hides."""
    t = target.clamp(0, 1)
    return (out - t).masked_fill(hidden_by_clamp(out, t), 0).square().mean()


def resolve_device(device: str) -> torch.device:
    """"auto" → CUDA when available, else CPU; anything else as given; CUDA without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"unknown device {device!r} ({e})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    return resolved


def split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) sample indices; at least one validation sample when n > 1."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = min(n - 1, max(1, round(n * val_fraction))) if n > 1 else 0
    return order[n_val:], order[:n_val]


def train(previewer, pairs, settings: Training = Training(), device="cpu", progress: bool = True) -> dict:
    """Train `previewer` (normalisation already set) on `pairs` in place; returns a summary
    {steps, best_step, val_loss, stopped_early} of the run. The best validation state is kept."""
    from tqdm import tqdm

    device = resolve_device(device) if isinstance(device, str) else device
    upsampler = previewer.scale > 1
    train_idx, val_idx = split(len(pairs), settings.val_fraction, settings.seed)
    latents = pairs.latents.to(device)
    targets = (pairs.full if upsampler else pairs.small).to(device)
    if upsampler and settings.crop > latents.shape[-1]:
        raise ValueError(f"upsampler crop {settings.crop} is larger than the {latents.shape[-1]}² latent samples")

    model = previewer.float().to(device).train()
    body = model.body
    params = [p for p in body.parameters() if p.requires_grad]
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    floor = settings.lr / 20
    generator = torch.Generator(device="cpu").manual_seed(settings.seed)

    def batch():
        pick = train_idx[torch.randint(len(train_idx), (settings.batch,), generator=generator)].to(device)
        x, y = latents[pick], targets[pick]
        if not upsampler:
            return x, y.float()
        c, s = settings.crop, previewer.scale
        top, left = (torch.randint(x.shape[-1] - c + 1, (2,), generator=generator) if x.shape[-1] > c else (0, 0))
        top, left = int(top), int(left)
        return x[..., top:top + c, left:left + c], y[..., top * s:(top + c) * s, left * s:(left + c) * s].float()

    @torch.no_grad()
    def validate() -> float:
        model.eval()
        total = 0.0
        for a in range(0, len(val_idx), settings.batch):
            pick = val_idx[a:a + settings.batch].to(device)
            total += display_loss(body(model.normalise(latents[pick])), targets[pick].float()).item() * len(pick)
        model.train()
        return total / max(1, len(val_idx))

    best, best_state, best_step, waited, step = math.inf, None, 0, 0, 0
    # validation PSNR: on the held-back pairs, against the teacher's decode clamped to [0, 1] at the previewer's resolution
    what = f"on {len(val_idx)} held-back pairs" if len(val_idx) else "on the last batch (too few pairs to hold any back)"
    bar = tqdm(total=settings.steps, desc=f"train {previewer.family} (validation PSNR {what})", unit="step",
               disable=not progress)
    for step in range(1, settings.steps + 1):
        for group in optimiser.param_groups:
            group["lr"] = floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * (step - 1) / settings.steps))
        x, y = batch()
        loss = display_loss(body(model.normalise(x)), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        bar.update()
        if step % settings.eval_every == 0 or step == settings.steps:
            val = validate() if len(val_idx) else loss.item()
            bar.set_postfix(val_psnr=f"{10 * math.log10(1 / max(val, 1e-12)):.2f} dB")
            if val < best:
                best, best_state, best_step, waited = val, copy.deepcopy(body.state_dict()), step, 0
            else:
                waited += 1
                if waited >= settings.patience:
                    break
    bar.close()
    if best_state is not None:
        body.load_state_dict(best_state)
    model.eval().requires_grad_(False)
    return {"steps": step, "best_step": best_step, "val_loss": best, "stopped_early": step < settings.steps}
