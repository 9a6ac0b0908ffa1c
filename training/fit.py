"""fit(): one previewer family fitted against a teacher's decodes, with its recipe in `meta`."""

import platform
import time
import warnings

import torch

from previewers.first_use.cache import weights_digest
from previewers.first_use.closed_form import fit_closed_form, is_closed_form, set_normalisation
from previewers.models.families import Quadratic, build
from training import distributed
from training.adam import Training, resolve_device, train


def start_from_closed_form(previewer, pairs, ridge: float, reweight: int, progress: bool, world) -> None:
    """For a residual body (families' `base` argument): solve its linear base by least squares and zero the
    net's last layer, so the net starts exactly at the closed-form previewer (training keeps the best
    validation state, so it can only end at or above it)."""
    base = previewer.body.base
    # the same map as a lone previewer: a quadratic form, or a linear k×k conv (1x1: affine)
    solved = (build("quadratic", previewer.latent_channels) if isinstance(base, Quadratic)
              else build("conv", previewer.latent_channels, channels=(), kernels=(base.kernel_size[0],)))
    solved.in_scale.copy_(previewer.in_scale)
    solved.in_shift.copy_(previewer.in_shift)
    fit_closed_form(solved, pairs.latents, pairs.small, ridge=ridge, reweight=reweight, progress=progress, world=world)
    base.load_state_dict((solved.body if isinstance(base, Quadratic) else solved.body[0]).state_dict())
    last = previewer.body.net[-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)


def dead_relus(previewer, latents: torch.Tensor) -> list[int]:
    """Positions (in module order, from 0) of the ReLUs in `previewer` that output zero for every element on
    `latents` (N, C, h, w): a layer dead on the data passes nothing on, so the net behind it stops learning."""
    relus = [m for m in previewer.modules() if isinstance(m, torch.nn.ReLU)]
    if not relus:  # closed-form maps and leaky-ReLU nets: nothing can die, so no forward pass is needed
        return []
    alive = [False] * len(relus)

    def hook(i):
        def record(module, inputs, output):
            alive[i] = alive[i] or bool((output > 0).any())
        return record

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(relus)]
    try:
        with torch.no_grad():
            for chunk in latents.split(64):
                previewer(chunk)
    finally:
        for h in handles:
            h.remove()
    return [i for i, a in enumerate(alive) if not a]


def device_name(device: torch.device) -> str:
    return (f"{torch.cuda.get_device_name(device)} ({device})" if device.type == "cuda"
            else f"cpu ({platform.processor() or platform.machine()})")


def build_for(teacher, family: str, args: dict | None = None):
    """A `family` previewer (constructor `args`) for `teacher`'s latents; ValueError for arguments the family
    does not take and for an output scale the teacher's decodes cannot supply."""
    previewer = build(family, teacher.latent_channels, **dict(args or {}))
    if previewer.scale not in (1, teacher.scale_factor):
        raise ValueError(f"{family} {previewer.args} outputs {previewer.scale}x the latent size but teacher "
                         f"{teacher.name} decodes to {teacher.scale_factor}x; choose stages to match")
    return previewer


def fit(teacher, family: str, pairs, space: str, args: dict | None = None, device: str = "auto",
        ridge: float = 1e-5, reweight: int = 3, training: Training = Training(), progress: bool = True,
        checkpoint=None, resume: bool = False, validation=None, init=None, deadline: float | None = None):
    """A `family` previewer (constructor `args`, defaults when None) fitted to `pairs` of `teacher`.

    Closed-form families (linear, affine, quadratic, one-layer conv) are solved by ridge least
    squares on the CPU, reweighted `reweight` times toward the best mean PSNR after the display
    clamp (previewers/first_use/closed_form.py). Other families are trained with `training` on `device`, residual
    ones (`base` in args) from their closed-form base; `checkpoint`/`resume`/`validation` as in
    training.adam.train. `init`: a previewer of the same family and arguments (a loaded weight file) to
    start Adam from instead, weights and normalisation, for a further run with a new step budget; the
    recipe keeps its recipe under "init". `deadline`: a time.perf_counter() value Adam stops at (training.adam.train).
    The result carries meta: space, teacher and the full recipe (options, data, seed, device, seconds,
    versions; under torchrun also world_size and every process's device), ready for previewers.save.
    Under torchrun every process runs fit() on the same pairs: least squares and the normalisation
    statistics split their chunks over the processes and all-reduce the sums, Adam runs
    data-parallel (training.adam.train); progress shows on rank 0 only.
    """
    world = distributed.current()
    progress = progress and world.main
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(training.seed)  # the recipe's seed fixes the initialisation too, so a fit can be repeated
        previewer = build_for(teacher, family, args)
    if pairs.latents.shape[1] != teacher.latent_channels:
        raise ValueError(f"pairs have {pairs.latents.shape[1]}-channel latents, "
                         f"teacher {teacher.name} takes {teacher.latent_channels}")
    closed = is_closed_form(family, previewer.args)
    if init is not None and (closed or (init.family, init.latent_channels, init.args)
                             != (family, previewer.latent_channels, previewer.args)):
        raise ValueError(f"can only continue an Adam fit of the same family and arguments: asked for {family} "
                         f"{previewer.args}, the starting file is {init.family} {init.args} "
                         f"({init.latent_channels} latent channels)")
    if not closed and training.steps == 0 and init is None and not previewer.args.get("base"):
        raise ValueError(f"0 Adam steps keeps where a fit starts: a residual net's least-squares base, or a starting "
                         f"file; {family} {previewer.args} has neither (its start is random)")
    device = torch.device("cpu") if closed else resolve_device(device)
    start = time.perf_counter()
    summary = None  # what Adam reports; least squares has nothing to add
    if init is not None:
        previewer.load_state_dict(init.state_dict())
    else:
        set_normalisation(previewer, pairs.latents, world=world)
    if closed:
        fit_closed_form(previewer, pairs.latents, pairs.small, ridge=ridge, reweight=reweight, progress=progress,
                        world=world)
    else:
        if previewer.args.get("base") and init is None:
            start_from_closed_form(previewer, pairs, ridge, reweight, progress, world)
        summary = train(previewer, pairs, training, device=device, progress=progress, checkpoint=checkpoint,
                        resume=resume, validation=validation,
                        init_digest=None if init is None else weights_digest(init), deadline=deadline)
    previewer = previewer.cpu().eval().requires_grad_(False)
    if summary is not None:
        summary["dead_relus"] = dead_relus(previewer, pairs.latents[:256].float())
        if summary["dead_relus"] and world.main:  # flux1's first shuffle upsampler lost its last stage this way
            warnings.warn(f"{family} fit: ReLU layers {summary['dead_relus']} (in module order) output zero on every "
                          "training sample, so the convs they feed get no gradient; refit with a lower --lr (an upsampler "
                          "also with \"activation\": \"leaky\")", stacklevel=2)
    recipe = {
        "method": "least squares" if closed else "Adam",
        "family": family,
        "args": previewer.args,
        "ridge": ridge if closed or previewer.args.get("base") else None,
        "reweight": reweight if closed or previewer.args.get("base") else None,
        "training": vars(training) if summary is not None else None,
        "result": summary,
        "data": pairs.source,
        "samples": len(pairs),
        **({"validation": validation.source} if validation is not None and summary is not None else {}),
        **({"init": init.meta.get("recipe")} if init is not None else {}),
        "seed": training.seed,
        "device": device_name(device),
        "world_size": world.size,
        "devices": world.gather(device_name(device)),  # one per process, in rank order
        "seconds": round(time.perf_counter() - start, 2),
        "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
    }
    previewer.meta = {"space": space, "teacher": teacher.name, "teacher_space": teacher.space_info, "recipe": recipe}
    return previewer
