"""Gradient fits: Adam on the display error, with a validation split and early stopping.

Latent-resolution previewers learn the teacher's decode area-pooled to latent resolution (whole
samples); the upsampler learns full-resolution targets from small random latent crops (16² latents
→ 128² pixels by default), which keeps each step cheap on a CPU. The loss is the squared error
after the display clamp: pixels whose target is clipped and whose output is already beyond the
same bound cost nothing, everywhere else the gradient flows as for plain MSE.

The learning rate follows torch's CosineAnnealingLR from `lr` down to lr/20 over the step budget, with no warm-up.
Everything a run needs to go on (model, optimiser, schedule, batch generators, step, best state so far) is one
TrainingState, saved whole in the checkpoint after each validation pass.
"""

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.optim.lr_scheduler import CosineAnnealingLR, LRScheduler

from previewers.files import atomic_write
from previewers.first_use.closed_form import hidden_by_clamp
from previewers.metrics import psnr_from_mse, ssim_differentiable
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
# weight of 1 − SSIM in "l1-gradient-ssim" (what it gained on flux1's upsampler: benchmarks/README.md, "Upsamplers")
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


CHECKPOINT_VERSION = 2  # in every checkpoint's key; 2: the state holds the scheduler's (older checkpoints are refused)
MSE_FLOOR = 1e-12  # reported PSNRs count a lower validation loss as this (120 dB), so an exact fit's figure is finite


@dataclass
class TrainingData:
    """What a run trains and validates on. Tensors are on the run's device; streamed pairs (training/streamed.py)
    stay in their shard files and are read batch by batch."""

    latents: torch.Tensor  # (N, C, h, w) denoiser latents
    targets: torch.Tensor  # (N, 3, h·s, w·s) the teacher's decode at the previewer's scale s (pooled when s = 1)
    train: torch.Tensor  # (T,) indices into latents of the training samples
    val_latents: torch.Tensor  # the validation samples' latents and targets: `latents`, `targets` themselves unless
    val_targets: torch.Tensor  # validation samples of their own were given
    val: torch.Tensor  # (V,) indices into val_latents


def training_data(pairs, validation, settings: Training, scale: int, device: torch.device) -> TrainingData:
    """`pairs` (and `validation`, or a random `val_fraction` of pairs' images when it is None) on `device`."""
    latents, targets = on_device(pairs, scale, device)
    if validation is None:
        train_idx, val_idx = split(pairs.image, settings.val_fraction, settings.seed)
        val_latents, val_targets = latents, targets
    else:  # every sample of `pairs` trains
        train_idx, val_idx = torch.arange(len(pairs)), torch.arange(len(validation))
        val_latents, val_targets = on_device(validation, scale, device)
    if scale > 1 and settings.crop > latents.shape[-1]:
        raise ValueError(f"upsampler crop {settings.crop} is larger than the {latents.shape[-1]}² latent samples")
    return TrainingData(latents, targets, train_idx, val_latents, val_targets, val_idx)


def on_device(pairs, scale: int, device: torch.device) -> tuple:
    """(latents, targets at the previewer's scale) of `pairs`: in-memory tensors moved to `device` once, streamed
    ones left in their shard files."""
    return tuple(t.to(device) if isinstance(t, torch.Tensor) else t
                 for t in (pairs.latents, pairs.full if scale > 1 else pairs.small))


def rows(source, pick: torch.Tensor, device: torch.device) -> torch.Tensor:
    """source[pick] on `device`, read where `source` lives (device, CPU or shard files)."""
    return source[pick.to(source.device)].to(device)


def draw_batch(data: TrainingData, settings: Training, scale: int, generator: torch.Generator,
               device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """`settings.batch` random training samples (x, float32 y); for an upsampler (scale > 1) one random
    settings.crop² latent window of them and the scale·crop² target pixels it decodes to."""
    pick = data.train[torch.randint(len(data.train), (settings.batch,), generator=generator)]
    x, y = rows(data.latents, pick, device), rows(data.targets, pick, device)
    if scale == 1:
        return x, y.float()
    c, s = settings.crop, scale
    top, left = (torch.randint(x.shape[-1] - c + 1, (2,), generator=generator) if x.shape[-1] > c else (0, 0))
    top, left = int(top), int(left)
    return x[..., top:top + c, left:left + c], y[..., top * s:(top + c) * s, left * s:(left + c) * s].float()


@torch.no_grad()
def validation_loss(model, data: TrainingData, batch: int, world, device: torch.device) -> float:
    """Mean display_loss over the validation samples, split over the processes and summed, so all see the same."""
    model.eval()
    total = 0.0
    mine = data.val[world.rank::world.size]
    for a in range(0, len(mine), batch):
        pick = mine[a:a + batch]
        total += display_loss(model.body(model.normalise(rows(data.val_latents, pick, device))),
                              rows(data.val_targets, pick, device).float()).item() * len(pick)
    model.train()
    return world.sum(torch.tensor(total, dtype=torch.float64)).item() / max(1, len(data.val))


@dataclass
class TrainingState:
    """Everything a run needs to go on; state_dict() is what the checkpoint holds, so a killed fit resumes exactly."""

    body: torch.nn.Module
    optimiser: torch.optim.Optimizer
    scheduler: LRScheduler
    generator: torch.Generator  # this process's batch generator
    step: int = 0  # steps done
    best: float = math.inf  # the lowest validation loss so far, the starting point's included
    best_step: int = 0
    best_state: dict = field(default_factory=dict)  # the body's weights at best_step
    waited: int = 0  # validation passes since `best` last improved
    start_val: float = math.inf  # the validation loss before the first step

    PROGRESS = ("step", "best", "best_step", "best_state", "waited", "start_val")

    def record(self, val: float) -> None:
        """A validation pass's loss: a new best keeps the body's weights, anything else adds to the wait."""
        if val < self.best:
            self.best, self.best_state, self.best_step, self.waited = val, copy.deepcopy(self.body.state_dict()), \
                self.step, 0
        else:
            self.waited += 1

    def state_dict(self, world) -> dict:
        """The whole state, with every process's generator: a collective, so every process calls it."""
        return {"model": self.body.state_dict(), "optimiser": self.optimiser.state_dict(),
                "scheduler": self.scheduler.state_dict(), "generators": world.gather(self.generator.get_state()),
                **{name: getattr(self, name) for name in self.PROGRESS}}

    def load_state_dict(self, state: dict, rank: int) -> None:
        self.body.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimiser"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.generator.set_state(state["generators"][rank])
        for name in self.PROGRESS:
            setattr(self, name, state[name])


def start(body: torch.nn.Module, settings: Training, world) -> TrainingState:
    """A run's state before its first step: Adam at `settings.lr` on the body's trainable parameters, cosine-annealed
    to lr/20 over `settings.steps` (step s, from 1, runs at the rate after s − 1 scheduler steps), and a batch
    generator of its own per process (seeded by seed and rank)."""
    optimiser = torch.optim.Adam([p for p in body.parameters() if p.requires_grad], lr=settings.lr)
    scheduler = CosineAnnealingLR(optimiser, T_max=settings.steps, eta_min=settings.lr / 20)
    generator = torch.Generator(device="cpu").manual_seed(settings.seed + 1_000_003 * world.rank)
    return TrainingState(body, optimiser, scheduler, generator)


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a run killed while writing leaves the previous checkpoint intact, and no temporary file."""
    with atomic_write(path) as tmp:
        torch.save(state, tmp)


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
        raise ValueError(f"{path}: a checkpoint of a different fit (other family, arguments, data, settings, number of "
                         "processes, or an older checkpoint format); delete it or choose another output to start afresh")
    return state


def train(previewer, pairs, settings: Training = Training(), device="cpu", progress: bool = True,
          checkpoint=None, resume: bool = False, validation=None, init_digest: str | None = None,
          deadline: float | None = None) -> dict:
    """Train `previewer` (normalisation already set) on `pairs` in place; returns a summary
    {steps, best_step, val_loss, val_psnr, start_val_psnr, stopped_early, resumed_from} of the run. The
    best validation state is kept, the starting point included. `validation`: samples of their own (Pairs, e.g.
    training.evaluate.validation_pairs) to validate on, instead of a random `val_fraction` of the images;
    every sample of `pairs` then trains.

    checkpoint: a file written after every validation pass (the TrainingState, whole); with
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
    world = distributed.current()
    data = training_data(pairs, validation, settings, previewer.scale, device)
    model = previewer.float().to(device).train()
    net = model.body
    if world.size > 1:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model.body, device_ids=[device.index] if device.type == "cuda" else None)
    state = start(model.body, settings, world)

    path = Path(checkpoint) if checkpoint is not None else None
    key = {"checkpoint": CHECKPOINT_VERSION, "family": previewer.family, "args": previewer.args,
           "settings": vars(settings), "data": pairs.source, "samples": len(pairs),
           "validation": None if validation is None else validation.source, "world_size": world.size,
           **({"init": init_digest} if init_digest is not None else {})}
    saved = world.from_main(lambda: load_checkpoint(path, key)) if path is not None and resume else None
    if saved is not None:
        state.load_state_dict(saved, world.rank)
    else:  # the starting point counts: a residual net starts at its closed-form solution
        state.start_val = validation_loss(model, data, settings.batch, world, device) if len(data.val) else math.inf
        state.best, state.best_state = state.start_val, copy.deepcopy(model.body.state_dict())
    resumed_from = state.step if saved is not None else None

    bar = tqdm(total=settings.steps, initial=state.step, desc=f"train {previewer.family}", unit="step",
               disable=not progress)
    resolution = "full res" if previewer.scale > 1 else "latent res"
    bar.set_postfix(val_psnr=f"{decibels(state.best)} (validation images, {resolution})")
    out_of_time = False
    while state.step < settings.steps:
        state.step += 1
        x, y = draw_batch(data, settings, previewer.scale, state.generator, device)
        out = net(model.normalise(x))
        loss = training_loss(out, y, settings.loss)
        state.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        state.optimiser.step()
        state.scheduler.step()
        bar.update()
        out_of_time = deadline is not None and past(deadline, world)
        if state.step % settings.eval_every and state.step < settings.steps and not out_of_time:
            continue
        # without validation samples, the display loss of the last batches, averaged over the processes
        val = (validation_loss(model, data, settings.batch, world, device) if len(data.val)
               else world.sum(display_loss(out.detach(), y).double()).item() / world.size)
        state.record(val)
        bar.set_postfix(val_psnr=f"{decibels(val)}, best {decibels(state.best)} at {state.best_step} ({resolution})")
        if state.waited >= settings.patience:
            break
        if path is not None:
            snapshot = state.state_dict(world)  # every process takes part: it gathers their generators
            if world.main:
                save_checkpoint(path, {"key": key, **snapshot})
        if out_of_time:
            break
    bar.close()
    model.body.load_state_dict(state.best_state)
    model.eval().requires_grad_(False)
    if path is not None and world.main:
        path.unlink(missing_ok=True)
    return {"steps": state.step, "best_step": state.best_step, "val_loss": state.best,
            "val_psnr": round(float(psnr_from_mse(state.best, MSE_FLOOR)), 3),
            # None: no validation samples, so the start was not scored
            "start_val_psnr": round(float(psnr_from_mse(state.start_val, MSE_FLOOR)), 3) if len(data.val) else None,
            "stopped_early": state.step < settings.steps, "resumed_from": resumed_from,
            **({"out_of_time": True} if out_of_time else {})}


def decibels(mse: float) -> str:
    """A validation loss as the PSNR the progress bar shows."""
    return f"{psnr_from_mse(mse, MSE_FLOOR):.2f} dB"


def past(deadline: float, world) -> bool:
    """Whether any process is past `deadline` (a time.perf_counter() value), so under torchrun all stop at the same
    step: the first one late."""
    late = float(time.perf_counter() > deadline)
    return (world.sum(torch.tensor(late)).item() > 0) if world.size > 1 else bool(late)
