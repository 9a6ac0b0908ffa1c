"""Gradient fits: Adam on the display error, with a validation split and early stopping.

Latent-resolution previewers learn the teacher's decode area-pooled to latent resolution (whole
samples); the upsampler learns full-resolution targets from small random latent crops (16² latents
→ 128² pixels by default), which keeps each step cheap on a CPU. The loss is the squared error
after the display clamp: pixels whose target is clipped and whose output is already beyond the
same bound cost nothing, everywhere else the gradient flows as for plain MSE.
"""

import copy
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from previewers.first_use.closed_form import hidden_by_clamp
from training import distributed


@dataclass(frozen=True)
class Training:
    steps: int = 3000  # Adam steps: the fixed budget; early stopping may end sooner
    batch: int = 32  # samples (or latent crops, for the upsampler) per step
    lr: float = 2e-3  # peak learning rate, cosine-annealed to lr/20 over `steps`
    val_fraction: float = 0.1  # share of source images whose samples are held out for validation and early stopping
    eval_every: int = 100  # steps between validation passes
    patience: int = 10  # validation passes without improvement before stopping
    crop: int = 16  # upsampler latent crop side (targets are crop·scale pixels)
    seed: int = 0
    loss: str = "mse"  # one of LOSSES


LOSSES = ("mse", "l1-gradient", "l1-gradient-ssim")
EDGE_WEIGHT = 1.0  # weight of the difference term in "l1-gradient" (per-pixel mean, like the L1 term)
# weight of 1 − SSIM in "l1-gradient-ssim": continuing flux1's upsampler with it raised SSIM 0.845 → 0.856 and PSNR
# 28.65 → 28.70 dB (benchmarks/fit_upsampler.sh)
SSIM_WEIGHT = 0.5


def display_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """out − clamped target, zero where the display clamp hides the error. (B, 3, H, W)."""
    t = target.clamp(0, 1)
    return (out - t).masked_fill(hidden_by_clamp(out, t), 0)


def display_loss(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error of unclamped `out` against the clamped target, ignoring errors the clamp hides."""
    return display_error(out, target).square().mean()


def training_loss(out: torch.Tensor, target: torch.Tensor, loss: str) -> torch.Tensor:
    """The loss Adam minimises: "mse" (display_loss), "l1-gradient" (L1 of the display error plus L1 of its
    spatial differences), or "l1-gradient-ssim" (that plus SSIM_WEIGHT·(1 − SSIM) of the clamped output, the
    structure term the full-resolution SSIM goal scores)."""
    if loss == "mse":
        return display_loss(out, target)
    e = display_error(out, target)
    edges = (e[..., :, 1:] - e[..., :, :-1]).abs().mean() + (e[..., 1:, :] - e[..., :-1, :]).abs().mean()
    l1_gradient = e.abs().mean() + EDGE_WEIGHT * edges
    if loss == "l1-gradient":
        return l1_gradient
    # imported here: previewers.metrics needs scikit-image (the train extra), and the CLI's parser imports this module
    # for LOSSES in a runtime-only install
    from previewers.metrics import ssim_differentiable

    return l1_gradient + SSIM_WEIGHT * (1 - ssim_differentiable(out.clamp(0, 1), target.clamp(0, 1)).mean())


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
    if resolved.type == "cuda" and resolved.index is None:  # under torchrun: this process's own GPU
        resolved = torch.device("cuda", distributed.current().local_rank)
    return resolved


def split(groups: torch.Tensor, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) sample indices, whole groups at a time: `groups` (N,) gives each sample's source
    image (crops of one image are near-duplicates, so validating on crops of training images would
    flatter the fit); samples with group −1 (saved latents) are each their own group. At least one
    validation group when there are two or more."""
    groups = groups.clone()
    loose = groups < 0
    groups[loose] = groups.max().clamp(min=0) + 1 + torch.arange(int(loose.sum()))
    ids = groups.unique()
    order = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction))) if len(ids) > 1 else 0
    val = torch.isin(groups, order[:n_val])
    return (~val).nonzero().flatten(), val.nonzero().flatten()


def psnr_of(mse: float) -> float:
    return 10 * math.log10(1 / max(mse, 1e-12))


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a run killed while writing leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(state, tmp)
        tmp.replace(path)
    finally:  # a run stopped mid-write leaves no torn file behind
        tmp.unlink(missing_ok=True)


def load_checkpoint(path: Path, key: dict) -> dict | None:
    """The checkpoint at `path` if it exists and was written by a run with the same `key`; ValueError for a
    foreign or unreadable one (resuming a different fit would silently mix two runs)."""
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for torn or foreign files
        raise ValueError(f"{path}: unreadable checkpoint ({type(e).__name__}); delete it to start afresh") from None
    if not isinstance(state, dict) or state.get("key") != key:
        raise ValueError(f"{path}: a checkpoint of a different fit (other family, arguments, data, settings or number of processes); "
                         "delete it or choose another output to start afresh")
    return state


def train(previewer, pairs, settings: Training = Training(), device="cpu", progress: bool = True,
          checkpoint=None, resume: bool = False, validation=None, init_digest: str | None = None,
          deadline: float | None = None) -> dict:
    """Train `previewer` (normalisation already set) on `pairs` in place; returns a summary
    {steps, best_step, val_loss, val_psnr, start_val_psnr, stopped_early, resumed_from} of the run. The
    best validation state is kept, the starting point included. `validation`: samples of their own (Pairs, e.g.
    training.evaluate.validation_pairs) to validate on, instead of a random `val_fraction` of the images;
    every sample of `pairs` then trains.

    checkpoint: a file written after every validation pass (model, optimiser, RNG, best state); with
    `resume`, a run continues from it where it exists (same fit only), so a killed fit loses at most
    `eval_every` steps. The file is removed when the run ends.

    Under torchrun the body is wrapped in DistributedDataParallel: each process draws its own
    batches of `settings.batch` samples (its own generator, seeded by seed and rank), gradients are
    averaged, validation is split over the processes and summed, so all take the same decisions.
    Rank 0 alone reads and writes the checkpoint, which holds every process's generator state.
    `init_digest`: a digest of the starting weights when they came from a file, not training.fit's fresh start (part of
    the checkpoint's key, so a checkpoint resumes only the run that started there).
    `deadline`: a time.perf_counter() value; the first step past it validates, checkpoints and ends the run (the
    summary's "out_of_time"), so a fit can be held to a wall-clock budget (the day-one net on a GPU).
    """
    from tqdm import tqdm

    if settings.loss not in LOSSES:
        raise ValueError(f"unknown loss {settings.loss!r}; known: {', '.join(LOSSES)}")
    device = resolve_device(device) if isinstance(device, str) else device
    upsampler = previewer.scale > 1
    if validation is None:
        train_idx, val_idx = split(pairs.image, settings.val_fraction, settings.seed)
    else:
        train_idx, val_idx = torch.arange(len(pairs)), torch.arange(len(validation))
    world = distributed.current()

    def on_device(source):
        # in-memory pairs move to the device once; streamed ones (training/streamed.py) are read batch by batch
        return (t.to(device) if isinstance(t, torch.Tensor) else t
                for t in (source.latents, source.full if upsampler else source.small))

    latents, targets = on_device(pairs)
    val_latents, val_targets = (latents, targets) if validation is None else on_device(validation)
    if upsampler and settings.crop > latents.shape[-1]:
        raise ValueError(f"upsampler crop {settings.crop} is larger than the {latents.shape[-1]}² latent samples")

    model = previewer.float().to(device).train()
    body = model.body
    params = [p for p in body.parameters() if p.requires_grad]
    net = body
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(body, device_ids=[device.index] if device.type == "cuda" else None)
    optimiser = torch.optim.Adam(params, lr=settings.lr)
    floor = settings.lr / 20
    generator = torch.Generator(device="cpu").manual_seed(settings.seed + 1_000_003 * world.rank)

    def rows(source, pick):
        return source[pick.to(source.device)].to(device)

    def batch():
        pick = train_idx[torch.randint(len(train_idx), (settings.batch,), generator=generator)]
        x, y = rows(latents, pick), rows(targets, pick)
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
        mine = val_idx[world.rank::world.size]
        for a in range(0, len(mine), settings.batch):
            pick = mine[a:a + settings.batch]
            total += display_loss(body(model.normalise(rows(val_latents, pick))),
                                  rows(val_targets, pick).float()).item() * len(pick)
        model.train()
        return world.sum(torch.tensor(total, dtype=torch.float64)).item() / max(1, len(val_idx))

    path = Path(checkpoint) if checkpoint is not None else None
    key = {"family": previewer.family, "args": previewer.args, "settings": vars(settings), "data": pairs.source,
           "samples": len(pairs), "validation": None if validation is None else validation.source,
           "world_size": world.size, **({"init": init_digest} if init_digest is not None else {})}
    state = world.from_main(lambda: load_checkpoint(path, key)) if path is not None and resume else None
    if state is not None:
        body.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimiser"])
        generator.set_state(state["generators"][world.rank])
        best, best_state, best_step, waited, first = state["best"], state["best_state"], state["best_step"], \
            state["waited"], state["step"] + 1
        start_val = state["start_val"]
    else:
        # the starting point counts: a residual net starts at its closed-form solution
        start_val = validate() if len(val_idx) else math.inf
        best, best_state, best_step, waited, first = start_val, copy.deepcopy(body.state_dict()), 0, 0, 1
    resumed_from = first - 1 if state is not None else None

    bar = tqdm(total=settings.steps, initial=first - 1, desc=f"train {previewer.family}", unit="step",
               disable=not progress)
    resolution = "full res" if upsampler else "latent res"
    bar.set_postfix(val_psnr=f"{psnr_of(best):.2f} dB (validation images, {resolution})")
    step = first - 1
    out_of_time = False
    for step in range(first, settings.steps + 1):
        for group in optimiser.param_groups:
            group["lr"] = floor + (settings.lr - floor) * 0.5 * (1 + math.cos(math.pi * (step - 1) / settings.steps))
        x, y = batch()
        out = net(model.normalise(x))
        loss = training_loss(out, y, settings.loss)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        bar.update()
        if deadline is not None:  # under torchrun every process stops at the same step: the first one late
            late = float(time.perf_counter() > deadline)
            out_of_time = (world.sum(torch.tensor(late)).item() > 0) if world.size > 1 else bool(late)
        if step % settings.eval_every == 0 or step == settings.steps or out_of_time:
            # without validation samples, the display loss of the last batches, averaged over the processes
            val = validate() if len(val_idx) else world.sum(display_loss(out.detach(), y).double()).item() / world.size
            if val < best:
                best, best_state, best_step, waited = val, copy.deepcopy(body.state_dict()), step, 0
            else:
                waited += 1
            bar.set_postfix(val_psnr=f"{psnr_of(val):.2f} dB, best {psnr_of(best):.2f} at {best_step} ({resolution})")
            if waited >= settings.patience:
                break
            if path is not None:
                generators = world.gather(generator.get_state())
                if world.main:
                    save_checkpoint(path, {"key": key, "model": body.state_dict(), "optimiser": optimiser.state_dict(),
                                           "generators": generators, "best": best, "best_state": best_state,
                                           "best_step": best_step, "waited": waited, "step": step,
                                           "start_val": start_val})
            if out_of_time:
                break
    bar.close()
    body.load_state_dict(best_state)
    model.eval().requires_grad_(False)
    if path is not None and world.main:
        path.unlink(missing_ok=True)
    return {"steps": step, "best_step": best_step, "val_loss": best, "val_psnr": round(psnr_of(best), 3),
            "start_val_psnr": round(psnr_of(start_val), 3), "stopped_early": step < settings.steps,
            "resumed_from": resumed_from, **({"out_of_time": True} if out_of_time else {})}
