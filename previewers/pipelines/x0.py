"""What a step preview shows: the denoised estimate x0, or the noisy latents x_t.

A diffusers pipeline hands its step callback the noisy latents x_{i+1} after `scheduler.step`
and throws the scheduler's x0 away. x0 looks far better early on, so `source="auto"` previews
x0 wherever it can be had exactly, by one of three means that leave the sampler untouched:

- consecutive latents, for deterministic first-order samplers: x_{i+1} = x_i + (σ_{i+1} − σ_i)·d
  with x0 = x_i − σ_i·d, so x0 = x_i − σ_i·(x_{i+1} − x_i)/(σ_{i+1} − σ_i). Needs the previous
  step, so step 0 shows latents. In bf16/fp16 pipelines the difference is rounded to the
  latents' precision, which adds faint noise to early x0 previews.
- the solver's own state: DPM-Solver++ and UniPC keep the x0 of the current step in
  `scheduler.model_outputs[-1]` (step 0 included).
- a forward hook on `pipe.unet` that keeps the model output, applies the pipeline's classifier-free
  guidance (and `guidance_rescale`) and converts it to x0 (step 0 included). SD/SDXL pipelines only.
  (DDIM goes here rather than through consecutive latents in its VE form x/√ᾱ: that is exact only
  for η = 0 without clip_sample, and breaks down at zero terminal SNR.)

What `source="auto"` gives, by scheduler:
- EulerDiscreteScheduler: x0 from consecutive latents (exact; the pipelines use no s_churn).
- FlowMatchEulerDiscreteScheduler (SD3, FLUX.1, FLUX.2): x0 from consecutive latents (exact); latents with
  `stochastic_sampling=True`.
- DPMSolverMultistep/Singlestep, EDMDPMSolverMultistep, CosineDPMSolverMultistep (`dpmsolver++`, `sde-dpmsolver++`),
  UniPCMultistep (`predict_x0`): the solver's x0 (exact, thresholding included).
- DDIM, PNDM, DDPM, EulerAncestralDiscrete, LMSDiscrete (SD/SDXL pipelines): the guided UNet output as x0 (exact for
  any DDIM η; `clip_sample`/thresholding are not applied).
- anything else (Heun, KDPM2, LCM, TCD, DEIS, FlowMatchHeun, ...): latents.

Latents: as handed over, except that VE-form latents of k-diffusion-style schedulers (Euler,
EulerAncestral, Heun, LMS, ...: `init_noise_sigma` > 1, x = z + σε with σ up to ~14.6) are
divided by √(σ² + 1), the scaling the UNet itself applies, so they are in the previewer's range.

Every estimator is called at every callback invocation (the consecutive one must see each step)
and computes only when `preview` is true. All arithmetic stays on the latents' device; scheduler
values kept on the CPU are read as Python numbers, so nothing waits for the GPU.
"""

import torch

SOURCES = ("auto", "x0", "latents")
CONSECUTIVE = ("EulerDiscreteScheduler", "FlowMatchEulerDiscreteScheduler")
SOLVER_STATE = ("DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "EDMDPMSolverMultistepScheduler",
                "CosineDPMSolverMultistepScheduler", "UniPCMultistepScheduler")
HOOK_VP = ("DDIMScheduler", "PNDMScheduler", "DDPMScheduler")  # UNet input is VP-form x_t at integer t: ᾱ = alphas_cumprod[t]
HOOK_VE = ("EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler")  # input x/√(σ²+1), σ = sigmas[step_index]


def scalar(value, device):
    """A scheduler value as a Python number when it lives on the CPU (no device copy, no sync),
    else as a float32 tensor on `device` (still no sync)."""
    if isinstance(value, torch.Tensor):
        return float(value) if value.device.type == "cpu" else value.to(device, torch.float32)
    return float(value)


def stores_x0(scheduler) -> bool:
    """Whether the solver's `model_outputs` hold x0 (they hold ε for `dpmsolver`, `predict_x0=False`)."""
    config = scheduler.config
    if type(scheduler).__name__ == "UniPCMultistepScheduler":
        return bool(config.get("predict_x0", True))
    return config.get("algorithm_type", "dpmsolver++") in ("dpmsolver++", "sde-dpmsolver++")


def x0_method(scheduler, has_unet: bool) -> str | None:
    """How x0 can be had exactly for this scheduler: "consecutive", "solver", "hook", or None."""
    name = type(scheduler).__name__
    if name in CONSECUTIVE and not scheduler.config.get("stochastic_sampling", False):
        return "consecutive"
    if name in SOLVER_STATE and stores_x0(scheduler):
        return "solver"
    if name in HOOK_VP + HOOK_VE and has_unet:
        return "hook"
    return None


class Latents:
    """x_t as the previewer should see it: VE-form latents scaled by 1/√(σ² + 1)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.ve = float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        index = getattr(self.scheduler, "step_index", None)
        if not self.ve or index is None:
            return latents
        sigma = scalar(self.scheduler.sigmas[min(index, len(self.scheduler.sigmas) - 1)], latents.device)
        return latents.float() / (sigma**2 + 1) ** 0.5  # step_index now points at the σ of these latents


class Consecutive:
    """x0 from this step's and the previous step's latents (deterministic first-order samplers)."""

    def __init__(self, scheduler):
        self.scheduler = scheduler
        self.previous = None

    def reset(self):
        self.previous = None

    def __call__(self, latents: torch.Tensor, timestep, preview: bool) -> torch.Tensor | None:
        previous, self.previous = self.previous, latents
        index = self.scheduler.step_index  # already advanced: sigmas[index] belongs to `latents`
        if not preview or previous is None or index is None or index < 1:
            return None
        sigma = scalar(self.scheduler.sigmas[index - 1], latents.device)
        sigma_next = scalar(self.scheduler.sigmas[index], latents.device)
        x, x_next = previous.float(), latents.float()
        return x - sigma * (x_next - x) / (sigma_next - sigma)


class SolverState:
    """The x0 a DPM-Solver++/UniPC scheduler stored for the current step."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def reset(self):
        pass

    def __call__(self, latents: torch.Tensor, timestep, preview: bool) -> torch.Tensor | None:
        outputs = getattr(self.scheduler, "model_outputs", None)
        if not preview or not outputs or outputs[-1] is None or outputs[-1].shape != latents.shape:
            return None
        return outputs[-1]


class DenoiserHook:
    """x0 from the UNet's output at each evaluation, guided as the SD/SDXL pipelines guide it.

    The forward hook only keeps references (input, output, ᾱ, guidance settings); the arithmetic
    runs in the callback, and only for previewed steps.
    """

    def __init__(self, pipe):
        self.pipe = pipe
        self.handle = None
        self.captured = None
        self.alphas = None  # alphas_cumprod on the UNet's device

    def attach(self):
        if self.handle is None:
            self.handle = self.pipe.unet.register_forward_hook(self.capture, with_kwargs=True)

    def detach(self):
        if self.handle is not None:
            self.handle.remove()
            self.handle = None
        self.captured = None

    def reset(self):
        self.attach()  # after close(): previews resume from the next evaluation

    def capture(self, module, args, kwargs, output):
        sample = args[0] if args else kwargs["sample"]
        timestep = args[1] if len(args) > 1 else kwargs["timestep"]
        pipe = self.pipe
        if type(pipe.scheduler).__name__ in HOOK_VE and pipe.scheduler.step_index is None:
            return
        guidance = (bool(getattr(pipe, "do_classifier_free_guidance", False)),
                    float(getattr(pipe, "guidance_scale", 1.0)), float(getattr(pipe, "guidance_rescale", 0.0) or 0.0))
        self.captured = (sample, output[0], self.alpha_bar(timestep, sample.device), guidance)

    def alpha_bar(self, timestep, device):
        s = self.pipe.scheduler
        if type(s).__name__ in HOOK_VE:
            sigma = scalar(s.sigmas[s.step_index], device)  # scale_model_input has set step_index
            return 1 / (sigma**2 + 1)
        if self.alphas is None or self.alphas.device != device:
            self.alphas = s.alphas_cumprod.to(device, torch.float32)
        return self.alphas[torch.as_tensor(timestep, device=device).long()]

    def __call__(self, latents: torch.Tensor, timestep, preview: bool) -> torch.Tensor | None:
        if not preview or self.captured is None:
            return None
        sample, output, alpha_bar, (cfg, scale, rescale) = self.captured
        if output.shape[0] != latents.shape[0] * (2 if cfg else 1) or output.shape[1] != latents.shape[1]:
            return None  # another guidance (PAG, InstructPix2Pix: 3 branches) or learned variance (IF, Kandinsky)
        if cfg:
            uncond, text = output.chunk(2)
            output = uncond + scale * (text - uncond)
            if rescale > 0:
                from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

                output = rescale_noise_cfg(output, text, guidance_rescale=rescale)
            sample = sample.chunk(2)[0]
        sample = sample[:, : latents.shape[1]]  # inpainting UNets also take the mask and masked image
        if sample.shape != latents.shape:
            return None
        sample, output = sample.float(), output.float()
        a = alpha_bar  # a Python number or a tensor on the device: no host-device copy
        prediction = self.pipe.scheduler.config.get("prediction_type", "epsilon")
        if prediction == "epsilon":
            return (sample - (1 - a) ** 0.5 * output) / a**0.5
        if prediction == "v_prediction":
            return a**0.5 * sample - (1 - a) ** 0.5 * output
        return output  # "sample": the model predicts x0 itself


class Source:
    """Per callback invocation: the tensor to preview (x0 where `estimator` gives it, else latents)."""

    def __init__(self, estimator, latents: Latents):
        self.estimator = estimator
        self.latents = latents

    def reset(self):
        """A new run starts."""
        if self.estimator is not None:
            self.estimator.reset()

    def close(self):
        """Remove the denoiser hook, if any."""
        if isinstance(self.estimator, DenoiserHook):
            self.estimator.detach()

    def __call__(self, latents: torch.Tensor, timestep, preview: bool) -> torch.Tensor | None:
        x0 = self.estimator(latents, timestep, preview) if self.estimator is not None else None
        if not preview:
            return None
        return x0 if x0 is not None else self.latents(latents)


def make_source(scheduler, source: str = "auto", pipe=None) -> Source:
    """The preview source for `scheduler` (and `pipe`, for the UNet hook). ValueError when
    `source="x0"` cannot be had exactly."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    method = None if scheduler is None else x0_method(scheduler, has_unet=getattr(pipe, "unet", None) is not None)
    if source == "x0" and method is None:
        raise ValueError(
            f"no exact x0 for {type(scheduler).__name__} here (exact: {', '.join(CONSECUTIVE + SOLVER_STATE)}; "
            f"on SD/SDXL pipelines also {', '.join(HOOK_VP + HOOK_VE)}); use source='latents' or 'auto'"
        )
    if source == "latents" or method is None:
        estimator = None
    elif method == "hook":
        estimator = DenoiserHook(pipe)
        estimator.attach()
    else:
        estimator = {"consecutive": Consecutive, "solver": SolverState}[method](scheduler)
    return Source(estimator, Latents(scheduler))
