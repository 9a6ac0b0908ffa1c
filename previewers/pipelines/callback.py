"""PreviewCallback: per-step previews from a diffusers pipeline.

    cb = PreviewCallback.for_pipeline(pipe, previewer="auto", every=1, out_dir="steps/")
    image = pipe(prompt, callback_on_step_end=cb, callback_on_step_end_tensor_inputs=cb.tensor_inputs).images[0]
    cb.close()

Follows diffusers' `callback_on_step_end(pipe, step, timestep, callback_kwargs)` contract and
returns `callback_kwargs` untouched, so the pipeline's result is bit-identical with and without
it; works inside `diffusers.callbacks.MultiPipelineCallbacks`. The loop pays only for the
previewer itself: conversion runs on the latents' device and files are written by a background
thread (previewers/outputs/writer.py). A failing preview warns once and never breaks the run.
"""

import time

import torch

from previewers.models.families import Previewer
from previewers.outputs.images import resize, to_uint8
from previewers.outputs.writer import PreviewWriter
from previewers.pipelines.latents import PipelineLatents, bind
from previewers.pipelines.modular import add_preview_steps, is_modular, remove_preview_steps
from previewers.pipelines.nonfinite import NonFiniteWatch
from previewers.pipelines.resolve import resolve_previewer
from previewers.pipelines.vae_decode import VaePreview
from previewers.pipelines.x0 import Source, make_source

RESAMPLE = ("nearest", "bilinear")
FRAMES = ("all", "first")


class PreviewCallback:
    """diffusers step callback writing and handing out previews of the latents.

    Build it with `for_pipeline` (derives the latent convention, picks and places the previewer, sets up x0
    estimation, and for a modular pipeline inserts itself into its denoising loops); the constructor takes the parts:
      previewer: a Previewer; input (B, C, h, w) → RGB (B, 3, H, W) in [0, 1]. Moved to the latents' device on
        first use.
      source: an x0.Source choosing x0 or latents per step (None: latents as handed over).
      layout: the pipeline's latent convention bound to its decoder (latents.PipelineLatents), which maps its
        latents to (B, T, C, h, w) frames (None: they are (B, C, h, w) already).
      frames: for video latents, "all" tiles every latent frame in order in each step preview, "first" previews
        only the first (cheap); the run ends with `video.<animation>` of the last previewed step's frames, and
        on_preview gets, per image, the list of its frames.
      every: preview invocations 0, every, 2·every, ... (each invocation is one step; PNDM calls back more often
        than num_inference_steps).
      out_dir: writes out_dir/step_0007_img0.png per step and image, and at the end of the run
        `preview.<animation>` (animation="gif", "webp" or None) and `sheet.png` (sheet=True).
      on_preview(step, timestep, images): called on the writer thread with PIL images.
      size: upscale previews so the longer side has `size` pixels (resample "nearest" or "bilinear").
      keep: keep the run's previews in `images` (step → list of PIL images).
    It serves both diffusers step APIs: `callback_on_step_end=cb` (called `(pipe, step, timestep, kwargs)`) and the
    older `callback=cb, callback_steps=1` (called `(step, timestep, latents)`). The end of a run is seen from the
    pipeline's step count where it states one; call `close()` when done (or after an interrupted run) to write the
    last files, remove the x0 hook and, for a modular pipeline, its preview steps.
    """

    tensor_inputs = ["latents"]

    def __init__(self, previewer: Previewer, source: Source | None = None, layout: PipelineLatents | None = None,
                 every: int = 1, out_dir=None, on_preview=None, size: int | None = None, resample: str = "nearest",
                 animation: str | None = "gif", sheet: bool = True, keep: bool = False, frames: str = "all"):
        if not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if size is not None and (not isinstance(size, int) or size < 1):
            raise ValueError(f"size must be a positive integer (pixels) or None, got {size!r}")
        if resample not in RESAMPLE:
            raise ValueError(f"resample must be one of {', '.join(RESAMPLE)}, got {resample!r}")
        if on_preview is not None and not callable(on_preview):
            raise ValueError("on_preview must be a function (step, timestep, images)")
        if frames not in FRAMES:
            raise ValueError(f"frames must be one of {', '.join(FRAMES)}, got {frames!r}")
        self.previewer = previewer.eval().requires_grad_(False)
        self.source = source
        self.layout = layout
        self.every = every
        self.size = size
        self.resample = resample
        self.frames = frames
        self.writer = PreviewWriter(out_dir, on_preview, keep, animation, sheet)
        self.nonfinite = NonFiniteWatch()  # warns once per run about NaN/inf latents
        self.count = 0  # invocations in this run
        self.step_end = None  # when the previous invocation returned (perf_counter), to time a denoising step
        self.decode_timed = not isinstance(previewer, VaePreview)  # only a full VAE decode is worth timing
        self.preview_steps = None  # a modular pipeline's inserted preview steps (previewers/pipelines/modular.py)
        self.closed = False  # close() was called: the next step 0 starts a new run

    @classmethod
    def for_pipeline(cls, pipe, previewer="auto", source: str = "auto", space: str | None = None,
                     height: int | None = None, width: int | None = None, progress: bool = True,
                     **options) -> "PreviewCallback":
        """A callback for `pipe`, a diffusers pipeline (classic or Modular) that decodes latents with a VAE-like
        decoder, or works on pixels. Its latent convention is derived from the decoder and the pipeline's attributes
        (previewers/pipelines/conventions.py); for a modular pipeline a preview step is added to each of its denoising loops.

        previewer: "auto" (the preferred shipped previewer when the pipeline's decoder has a shipped space's config,
          else one fitted against the decoder on first use and cached on disk), "fit" (refit that one), "vae" (the
          pipeline's own decoder, decoding exactly as the pipeline does), a family name (the one shipped for the
          space), a registry name, a .safetensors path, a TAESD-family decoder file (.safetensors/.pth), a diffusers
          AutoencoderTiny, or a loaded Previewer (previewers/pipelines/resolve.py).
        source: "auto" (x0 where it is exact for the scheduler, else latents), "x0", "latents"; see
          previewers/pipelines/x0.py for what each scheduler gives. Build the callback after choosing the scheduler.
        space: the shipped latent space (sd1, sdxl, sd3, flux1, flux2) the latents are in, for a decoder whose
          config does not say (e.g. an AutoencoderTiny in a Stable Diffusion pipeline).
        height, width: the image size in pixels the pipeline runs at; pipelines holding packed tokens (FLUX, Qwen-Image,
          LTX-Video, ...) hand over tokens that do not carry it (default: the pipeline's default size, or the one
          square size the token count fits). Modular pipelines state it at every step.
        progress: show the progress of a fit on first use.
        options: the constructor's every, out_dir, on_preview, size, resample, animation, sheet, keep and frames
          (see the class docstring).
        """
        latents = bind(pipe, height, width, space)
        previewer = resolve_previewer(previewer, latents, type(pipe).__name__, progress)
        callback = cls(previewer, make_source(getattr(pipe, "scheduler", None), source, pipe), latents, **options)
        if is_modular(pipe):
            callback.preview_steps = add_preview_steps(pipe, callback.on_step)
        return callback

    @property
    def images(self) -> dict[int, list]:
        """Previews of the current (or last) run, step → list of PIL images (needs keep=True)."""
        self.writer.flush()
        return self.writer.images

    def __call__(self, *args):
        """`callback_on_step_end(pipe, step, timestep, callback_kwargs)` → callback_kwargs unchanged, or the older
        `callback(step, timestep, latents)` → None."""
        if len(args) == 4:
            pipe, step, timestep, callback_kwargs = args
            latents = callback_kwargs.get("latents") if isinstance(callback_kwargs, dict) else None
            if latents is None:
                self.writer.warn_once("inputs", "callback_kwargs has no 'latents'; pass "
                                                "callback_on_step_end_tensor_inputs=cb.tensor_inputs")
            else:
                self.on_step(step, timestep, latents, total=getattr(pipe, "num_timesteps", None))
            return callback_kwargs
        if len(args) == 3:
            self.on_step(*args)
            return None
        raise TypeError(f"PreviewCallback is called as (pipe, step, timestep, callback_kwargs) or (step, timestep, "
                        f"latents), got {len(args)} arguments")

    def on_step(self, step: int, timestep, latents: torch.Tensor, total: int | None = None,
                size: dict | None = None) -> None:
        """One denoising step's latents, from any step API. `total`: the run's number of steps, when known (the run's
        summary is written after the last); `size`: the run's image size, {"height": .., "width": ..} in pixels."""
        if not isinstance(latents, torch.Tensor) or latents.ndim < 3:
            return  # not image latents: a prior's embeddings (unCLIP) share the callback with the decoder's steps
        try:
            self.preview(step, timestep, latents, total, size)
        except Exception as e:  # a preview must never break a long generation
            self.writer.warn_once("preview", f"step preview failed ({type(e).__name__}: {e})")
        self.step_end = time.perf_counter()

    @torch.no_grad()
    def preview(self, step: int, timestep, latents: torch.Tensor, total: int | None, size: dict | None) -> None:
        # a new run, unless the run states more steps than it has made: pipelines that denoise in chunks (AnyFlow
        # FAR) restart their step index for every chunk within one run
        if step == 0 and (self.closed or not (isinstance(total, int) and 0 < self.count < total)):
            self.closed = False
            if self.count:
                self.writer.finish()  # the summary of a previous run that was cut short
                self.writer.new_run()
            self.nonfinite.poll()  # after finish(): every count of the previous run has landed
            self.nonfinite.reset()
            self.count = 0
            if self.source is not None:
                self.source.reset()
        n, self.count = self.count, self.count + 1
        wanted = n % self.every == 0
        x = self.source(latents, timestep, wanted) if self.source is not None else latents if wanted else None
        if x is not None:
            self.nonfinite(x, n)
            pixels = (size["height"], size["width"]) if size and size.get("height") and size.get("width") else None
            if not self.decode_timed and step > 0 and self.step_end is not None:
                self.writer.put(n, timestep, self.timed_render(x, pixels))
            else:
                self.writer.put(n, timestep, self.render(x, pixels))
        if isinstance(total, int) and n + 1 >= total:
            self.writer.finish()
            self.nonfinite.poll()

    def render(self, x: torch.Tensor, pixels: tuple[int, int] | None = None) -> torch.Tensor:
        """Latents in the pipeline's layout → uint8 frames on the same device: (B, H, W, 3), or (B, T, H, W, 3) for
        video latents. `pixels`: the run's (height, width), which packed tokens need."""
        frames = self.layout.frames(x, pixels) if self.layout is not None else x[:, None]  # (B, T, C, h, w)
        video = frames.shape[1] > 1
        if self.frames == "first":
            frames = frames[:, :1]
        if isinstance(self.previewer, VaePreview):
            rgb = self.previewer(frames)  # the VAE stays where the pipeline put it
        else:
            if self.previewer.in_scale.device != x.device:
                self.previewer.to(x.device)
            rgb = self.previewer(frames.flatten(0, 1)).unflatten(0, frames.shape[:2])
        b, t = rgb.shape[:2]
        rgb = rgb.flatten(0, 1)
        if self.size is not None:
            rgb = resize(rgb, self.size, self.resample)
        out = to_uint8(rgb).unflatten(0, (b, t))
        return out if video else out[:, 0]

    def timed_render(self, x: torch.Tensor, pixels: tuple[int, int] | None) -> torch.Tensor:
        """render(), warning once when it takes longer than the denoising step before it (VAE decodes only)."""
        sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
        sync()  # timing a full decode is worth one wait for the GPU
        start = time.perf_counter()
        out = self.render(x, pixels)
        sync()
        cost, step = time.perf_counter() - start, start - self.step_end
        self.decode_timed = True
        if cost > step:
            self.writer.warn_once("vae cost", f"previewer='vae' takes {cost:.2f} s per preview, more than a denoising "
                                              f"step ({step:.2f} s); preview less often with every=K")
        return out

    def close(self) -> None:
        """Write what is pending (and the animation and sheet), stop the writer thread, remove the x0 hook and a
        modular pipeline's preview steps."""
        self.nonfinite.poll(wait=True)
        self.writer.close()
        self.closed = True  # the next step 0 starts a new run
        if self.source is not None:
            self.source.close()
        if self.preview_steps is not None:
            remove_preview_steps(self.preview_steps)
            self.preview_steps = None
