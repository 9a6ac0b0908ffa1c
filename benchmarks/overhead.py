"""Per-step overhead of PreviewCallback in a real diffusers StableDiffusionPipeline (issue 6).

    python -m benchmarks.overhead --device cpu      # writes benchmarks/results/overhead-cpu.md

A StableDiffusionPipeline with random weights (text_encoder=None, random prompt embeddings,
classifier-free guidance 7.5 so the UNet runs on a batch of 2, the SD 1.5 PNDM scheduler,
64² latents = 512² images, output_type="latent") runs without a callback, with PreviewCallback
writing nothing, and with it writing a PNG per step. Two UNets: a tiny one (where any overhead
shows) and the full SD 1.5 UNet2DConditionModel config (the one the ≤1% target is about).

Every run gets the same step-end hook, which synchronises the device and times the callback
inside it (nothing for the no-callback run), so all runs wait for the device alike. Reported:
the callback's own time per step as a fraction of one UNet step (timed alone, same inputs), and
the end-to-end extra time per step against the run without callback, as a fraction of its step,
which also catches the PNG writer thread's work (its final flush is inside the timed run).

Then the other latent layouts at their real sizes: FLUX.1 (FluxPipeline, packed tokens (B, 4096, 64) at 1024²)
and Wan 2.1 (WanPipeline, 5-D latents (B, 16, 21, 60, 104) at 480x832, 81 frames). Their transformers cannot
run at that size on a CPU, so each pipeline gets a tiny random transformer and a narrow VAE of the real latent
config; one short real run proves the callback works on it (one preview per step, of the expected size, no
warning), then the callback is timed directly, `cb(pipe, step, timestep, {"latents": x})` on random latents
of the real shape (source="latents"), beside the SD 1.5 layout (B, 4, 64, 64) timed the same way. Reported:
that time over the full SD 1.5 UNet step above (the common yardstick on this machine), and per latent pixel
against SD's (what unpacking tokens or video frames adds).
"""

import argparse
import datetime
import math
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import diffusers
import torch

from benchmarks.reference import FLUX1_VAE, SD15_UNET, SD15_VAE, sd15_scheduler
from benchmarks.speed import QUICK_TIMING, TIMING, previewers_for
from benchmarks.timing import machine, median_seconds, progress, publish, synchronize
from previewers import FAMILIES, PreviewCallback, build
from training.adam import resolve_device

RESULTS = Path(__file__).resolve().parent / "results"
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
GUIDANCE = 7.5
LATENT_SIDE = 64  # 512² images

# A small UNet of the SD layout (cross-attention down/up blocks, 2 layers per block), as in
# diffusers' own pipeline tests but at full latent size.
TINY_UNET = dict(
    sample_size=LATENT_SIDE, in_channels=4, out_channels=4, layers_per_block=2, cross_attention_dim=32,
    block_out_channels=(32, 64), norm_num_groups=32, attention_head_dim=8,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
)
# Beside it a narrow VAE of the SD 1.5 layout: the pipeline only reads its scale factor (8x),
# latent channels and scaling factor, since it never decodes (output_type="latent").
TINY_VAE = dict(SD15_VAE, block_out_channels=(32, 32, 32, 32), layers_per_block=1)

# (UNet, inference steps, timed runs) per device type: the full UNet takes tens of seconds a
# step on a small CPU, so two steps and one run there.
PLANS = {
    "cpu": (("tiny", 10, 3), ("sd15", 2, 1)),
    "cuda": (("tiny", 20, 5), ("sd15", 20, 5)),
}
QUICK_PLAN = (("tiny", 2, 1),)
QUICK_SIDE = 16
CONFIGS = ("no callback", "callback, no files", "callback, PNG per step")


# The other latent layouts, timed by calling the callback directly (see the module docstring).
# name: (label, realistic run size, --quick run size); sizes are (height, width, frames or None).
LAYOUTS = {
    "sd15": ("SD 1.5", (512, 512, None), (QUICK_SIDE * 8, QUICK_SIDE * 8, None)),
    "flux1": ("FLUX.1", (1024, 1024, None), (128, 128, None)),
    "wan": ("Wan 2.1", (480, 832, 81), (64, 64, 5)),
}
PROOF_STEPS, QUICK_PROOF_STEPS = 10, 2  # the short real run; the direct timing cycles through its steps
PROOF_FRAMES = 9  # Wan's real run: 3 latent frames (81 frames would be 32,760 tokens of attention)
ROUNDS, QUICK_ROUNDS = 20, 1  # direct timing: rounds of one run's steps, the layouts in turn
# Narrow VAEs of the real latent configs: FLUX.1's (16 channels, scale 0.3611, shift 0.1159, 8x: four blocks)
# and Wan 2.1's AutoencoderKLWan (z_dim 16, its latents_mean/std, 8x spatial, 4x temporal). Neither decodes here.
TINY_FLUX1_VAE = dict(FLUX1_VAE, block_out_channels=(32, 32, 32, 32), layers_per_block=1)
TINY_WAN_VAE = dict(base_dim=8, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=1, temperal_downsample=[False, True, True],
                    scale_factor_temporal=4, scale_factor_spatial=8)
# black-forest-labs/FLUX.1-dev, scheduler/scheduler_config.json (resolution-dependent shift).
FLUX1_SCHEDULER = dict(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256,
                       max_image_seq_len=4096)


def build_pipeline(unet_name: str, device, dtype, side: int = LATENT_SIDE):
    """(pipe, call kwargs) for a random-weight StableDiffusionPipeline with `unet_name` ("tiny" or "sd15")
    making side² latents."""
    config, vae_config = (TINY_UNET, TINY_VAE) if unet_name == "tiny" else (SD15_UNET, SD15_VAE)
    unet = diffusers.UNet2DConditionModel(**config).to(device, dtype).eval().requires_grad_(False)
    vae = diffusers.AutoencoderKL(**vae_config).to(device, dtype).eval().requires_grad_(False)
    pipe = diffusers.StableDiffusionPipeline(
        vae=vae, text_encoder=None, tokenizer=None, unet=unet, scheduler=sd15_scheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    embeds = [torch.randn(1, 77, config["cross_attention_dim"], generator=g).to(device, dtype) for _ in range(2)]
    pixels = side * pipe.vae_scale_factor
    kwargs = dict(prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], guidance_scale=GUIDANCE,
                  height=pixels, width=pixels, output_type="latent")
    return pipe, kwargs


def build_layout_pipeline(name: str, device, dtype):
    """(pipe, call kwargs) for the layout `name` of LAYOUTS: the tiny SD pipeline, or a FluxPipeline / WanPipeline
    with a tiny random transformer and a narrow VAE of the real latent config (text encoders left out)."""
    if name == "sd15":
        return build_pipeline("tiny", device, dtype)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    emb = lambda *shape: torch.randn(*shape, generator=g).to(device, dtype)  # noqa: E731
    if name == "flux1":
        transformer = diffusers.FluxTransformer2DModel(
            patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=8, num_attention_heads=2,
            joint_attention_dim=16, pooled_projection_dim=16, axes_dims_rope=(2, 2, 4))
        vae = diffusers.AutoencoderKL(**TINY_FLUX1_VAE)
        pipe = diffusers.FluxPipeline(scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX1_SCHEDULER), vae=vae,
                                      text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                      transformer=transformer)
        kwargs = dict(prompt_embeds=emb(1, 5, 16), pooled_prompt_embeds=emb(1, 16))
    elif name == "wan":
        transformer = diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=16, out_channels=16,
            text_dim=16, freq_dim=16, ffn_dim=16, num_layers=1)
        vae = diffusers.AutoencoderKLWan(**TINY_WAN_VAE)
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                     scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0))
        kwargs = dict(prompt_embeds=emb(1, 5, 16), negative_prompt_embeds=emb(1, 5, 16))
    else:
        raise ValueError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    pipe.to(device, dtype)
    for module in (pipe.transformer, pipe.vae):
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs


def latent_shape(name: str, pipe, height: int, width: int, frames: int | None) -> tuple[int, ...]:
    """The latents `pipe` hands its step callback for one image (or video) of height x width (x frames)."""
    if name == "sd15":
        return (1, pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor)
    if name == "flux1":  # 2x2 patches of the 16-channel latents, one token each
        side = 2 * pipe.vae_scale_factor
        return (1, (height // side) * (width // side), pipe.transformer.config.in_channels)
    temporal, spatial = pipe.vae_scale_factor_temporal, pipe.vae_scale_factor_spatial
    return (1, pipe.vae.config.z_dim, (frames - 1) // temporal + 1, height // spatial, width // spatial)


def latent_pixels(name: str, shape: tuple[int, ...]) -> int:
    """Latent pixels (positions over all frames) of one step's latents."""
    if name == "flux1":
        return shape[1] * 4  # a token is a 2x2 patch
    return int(torch.tensor(shape[2:]).prod())


def layout_size(name: str, quick: bool) -> tuple[int, int, int | None]:
    return LAYOUTS[name][2 if quick else 1]


def proof_run(name: str, pipe, kwargs, previewer, steps: int, quick: bool) -> str:
    """One short real run of `pipe` with the callback (keep=True): one preview per step of the latent size, no
    latent-preview warning. Returns what it ran, for the report; raises RuntimeError when the callback failed."""
    height, width, frames = layout_size(name, quick)
    if frames is not None and not quick:
        frames = PROOF_FRAMES
    extra = {} if frames is None else dict(num_frames=frames)
    call = dict(kwargs, height=height, width=width, output_type="latent")
    cb = PreviewCallback.for_pipeline(pipe, previewer=previewer, height=height, width=width, keep=True,
                                      animation=None, sheet=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        latents = pipe(**call, **extra, num_inference_steps=steps,
                       generator=torch.Generator().manual_seed(0), callback_on_step_end=cb,
                       callback_on_step_end_tensor_inputs=cb.tensor_inputs)
        latents = latents.frames if frames is not None else latents.images
        images = cb.images
        cb.close()
    problems = [str(w.message) for w in caught if "latent-preview" in str(w.message)]
    shape = latent_shape(name, pipe, height, width, frames)
    if tuple(latents.shape) != shape:
        problems.append(f"the run's latents are {tuple(latents.shape)}, not {shape}")
    factor = pipe.vae_scale_factor_spatial if name == "wan" else pipe.vae_scale_factor
    scale = getattr(previewer, "scale", 1)  # output pixels per latent pixel (1: affine, at latent resolution)
    h, w = height // factor * scale, width // factor * scale
    if sorted(images) != list(range(pipe.num_timesteps)):
        problems.append(f"previews of steps {sorted(images)}, not of each of its {pipe.num_timesteps} steps")
    for step, previews in images.items():
        clips = previews if frames is not None else [[image] for image in previews]
        got = {(len(clip), clip[0].size) for clip in clips}
        want = {(shape[2] if frames is not None else 1, (w, h))}
        if got != want:
            problems.append(f"step {step}: previews of (frames, size) {got}, not {want}")
            break
    if problems:
        raise RuntimeError(f"{type(pipe).__name__}: the callback failed in a real run: " + "; ".join(problems))
    size = f"{width}x{height}" + (f", {frames} frames" if frames is not None else "")
    calls = "" if pipe.num_timesteps == steps else f" ({pipe.num_timesteps} callback calls)"
    return f"{size}, {steps} steps{calls}: {len(images)} previews, latents {shape_text(tuple(latents.shape))}"


def callback_step_seconds(layouts: dict, device, rounds: int) -> dict:
    """Median seconds per call of each layout's callback (device synchronised), called directly on its latents as
    the pipeline would: `cb(pipe, step, timestep, {"latents": x})` through the steps of one run, the layouts in
    turn each round (so load drift hits all alike). The writer thread is flushed after each call, outside the timed
    span: in a run it works while the denoiser computes the next step."""
    times = {name: [] for name in layouts}
    for round_ in range(rounds + 1):  # round 0: warm-up
        for name, (pipe, cb, x) in layouts.items():
            timesteps = pipe.scheduler.timesteps
            for step in range(pipe.num_timesteps):
                kwargs = {"latents": x}
                synchronize(device)
                start = time.perf_counter()
                cb(pipe, step, timesteps[min(step, len(timesteps) - 1)], kwargs)
                synchronize(device)
                if round_:
                    times[name].append(time.perf_counter() - start)
                cb.writer.flush()
    return {name: statistics.median(t) for name, t in times.items()}


def control_shape(name: str, shape: tuple[int, ...]) -> tuple[int, ...] | None:
    """The same latents in the plain spatial layout (B, C, h, w), for a control row that isolates what the
    layout's handling costs: FLUX.1's tokens unpacked, Wan's latent frames as a batch of images."""
    if name == "flux1":
        b, n, d = shape
        side = math.isqrt(n)  # the square runs benchmarked here
        return (b, d // 4, 2 * side, 2 * side)
    if name == "wan":
        b, c, t, h, w = shape
        return (b * t, c, h, w)
    return None


def benchmark_layouts(previewers: dict, device, dtype, quick: bool, progress) -> list[dict]:
    """Per layout: a proof run, then the callback's time per step on latents of the realistic shape, and on the
    same latents in the spatial layout (a control)."""
    steps, rounds = (QUICK_PROOF_STEPS, QUICK_ROUNDS) if quick else (PROOF_STEPS, ROUNDS)
    layouts, rows = {}, []
    for name, (label, _, _) in LAYOUTS.items():
        progress(f"{label}: building the pipeline and one real run ({steps} steps)")
        pipe, kwargs = build_layout_pipeline(name, device, dtype)
        proof = proof_run(name, pipe, kwargs, previewers[name], steps, quick)
        height, width, frames = layout_size(name, quick)
        shape = latent_shape(name, pipe, height, width, frames)
        size = f"{width}x{height}" + (f", {frames} frames" if frames is not None else "")
        row = dict(layout=name, label=label, pipeline=type(pipe).__name__, size=size, shape=shape,
                   pixels=latent_pixels(name, shape), proof=proof, control=None)
        rows.append(row)
        spatial = control_shape(name, shape)
        for key, x_shape in ((name, shape), (f"{name} control", spatial)):
            if x_shape is None:
                continue
            cb = PreviewCallback.for_pipeline(pipe, previewer=previewers[name], source="latents", height=height,
                                              width=width, animation=None, sheet=False)
            x = torch.randn(x_shape, generator=torch.Generator().manual_seed(0)).to(device, dtype)
            layouts[key] = (pipe, cb, x)
        if spatial is not None:
            row["control"] = dict(layout=f"{name} control", shape=spatial)
    progress(f"timing the callbacks directly ({rounds} rounds)")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        seconds = callback_step_seconds(layouts, device, rounds)
    problems = [str(w.message) for w in caught if "latent-preview" in str(w.message)]
    if problems:
        raise RuntimeError("the callback failed when timed directly: " + "; ".join(problems))
    for row in rows:
        row["callback_s"] = seconds[row["layout"]]
        if row["control"] is not None:
            row["control"]["callback_s"] = seconds[row["control"]["layout"]]
    for _, cb, _ in layouts.values():
        cb.close()
    return rows


def unet_step_seconds(pipe, kwargs, device, timing: dict) -> float:
    """One UNet call as the pipeline makes it under guidance: batch 2 (unconditional + conditional)."""
    unet, side = pipe.unet, kwargs["height"] // pipe.vae_scale_factor
    x = torch.randn(2, unet.config.in_channels, side, side).to(device, unet.dtype)
    context = torch.cat([kwargs["negative_prompt_embeds"], kwargs["prompt_embeds"]])
    t = torch.tensor(500, device=device)
    return median_seconds(lambda: unet(x, t, encoder_hidden_states=context), device, **timing)


def run_once(pipe, kwargs, steps: int, callback, device) -> tuple[float, list[float]]:
    """(wall seconds of one pipeline run incl. the callback's final flush, callback seconds per step)."""
    spent: list[float] = []

    def on_step_end(p, step, timestep, callback_kwargs):
        synchronize(device)
        start = time.perf_counter()
        if callback is not None:
            callback_kwargs = callback(p, step, timestep, callback_kwargs)
        synchronize(device)
        spent.append(time.perf_counter() - start)
        return callback_kwargs

    generator = torch.Generator().manual_seed(0)
    synchronize(device)
    start = time.perf_counter()
    pipe(**kwargs, num_inference_steps=steps, generator=generator,
         callback_on_step_end=on_step_end, callback_on_step_end_tensor_inputs=PreviewCallback.tensor_inputs)
    if callback is not None:
        callback.close()  # waits for the writer thread: its PNGs count
    synchronize(device)
    return time.perf_counter() - start, spent


def make_callback(config: str, pipe, previewer, out_dir: Path):
    if config == "no callback":
        return None
    folder = out_dir if config == "callback, PNG per step" else None
    return PreviewCallback.for_pipeline(pipe, previewer=previewer, every=1, out_dir=folder, animation=None, sheet=False)


def benchmark_unet(unet_name: str, steps: int, runs: int, previewer, device, dtype, side: int, timing: dict,
                   progress) -> dict:
    progress(f"building the pipeline ({unet_name} UNet)")
    pipe, kwargs = build_pipeline(unet_name, device, dtype, side)
    progress(f"{unet_name}: one UNet step alone")
    unet_s = unet_step_seconds(pipe, kwargs, device, timing)
    walls = {c: [] for c in CONFIGS}
    inside = {c: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        # Warm-up: one single-step run through the whole path (UNet, x0 hook, previewer, PNG writer).
        run_once(pipe, kwargs, 1, make_callback(CONFIGS[-1], pipe, previewer, Path(tmp) / "warm-up"), device)
        for run in range(runs):
            for config in CONFIGS:  # interleaved, so drift in machine load spreads over all three
                progress(f"{unet_name}: run {run + 1}/{runs}, {config}")
                callback = make_callback(config, pipe, previewer, Path(tmp) / f"run{run}")
                wall, spent = run_once(pipe, kwargs, steps, callback, device)
                walls[config].append(wall / len(spent))
                inside[config] += spent
    invocations = pipe.num_timesteps
    params = sum(p.numel() for p in pipe.unet.parameters())
    return dict(unet=unet_name, params=params, steps=steps, invocations=invocations, runs=runs, unet_s=unet_s,
                step_s={c: statistics.median(v) for c, v in walls.items()},
                callback_s={c: statistics.median(v) for c, v in inside.items() if c != "no callback"})


def percent(x: float) -> str:
    return f"{100 * x:.3g}%"


def shape_text(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(str(n) for n in shape) + ")"


def yardstick(results: list[dict]) -> tuple[str, float]:
    """(label, seconds) of the UNet step the layouts' callbacks are compared with: the full SD 1.5 UNet's, or
    the tiny UNet's in a quick run (which has no full one)."""
    r = next((r for r in results if r["unet"] == "sd15"), results[-1])
    return ("SD 1.5 UNet step" if r["unet"] == "sd15" else f"{r['unet']} UNet step"), r["unet_s"]


def layouts_report(rows: list[dict], results: list[dict], with_times: bool, rounds: int) -> list[str]:
    unit, unet_s = yardstick(results)
    sd = next(r for r in rows if r["layout"] == "sd15")
    per_pixel = sd["callback_s"] / sd["pixels"]
    lines = [
        "", "## Other latent layouts: the callback timed directly", "",
        "Real FLUX.1 and Wan 2.1 transformers cannot run on this machine, so each pipeline is built with a tiny "
        "random transformer and a narrow VAE of the real latent config (FLUX.1: AutoencoderKL, 16 channels, "
        "scaling 0.3611, shift 0.1159, 8x; Wan 2.1: AutoencoderKLWan, z_dim 16, its latents_mean/std, 8x spatial, "
        "4x temporal; both FlowMatchEulerDiscreteScheduler), and one short real run (`output_type=\"latent\"`, "
        "source `auto`) proves the callback works on it: one preview per step at latent resolution, no warning. "
        "Then each callback (`PreviewCallback.for_pipeline(pipe, previewer=..., height=..., width=...)`, "
        "`source=\"latents\"`, no files) is called directly as the pipeline calls it, "
        "`cb(pipe, step, timestep, {\"latents\": x})`, on random latents of the realistic shape, through the "
        f"steps of one run, the layouts in turn; median over {rounds} rounds after a warm-up round, device "
        "synchronised around each call. The writer thread (PIL images, and for video the tiled frames) is flushed "
        "after each call outside the timed span: in a run it works while the denoiser computes the next step. "
        "SD 1.5's layout is timed the same way, as the reference.", "",
        f"- callback / {unit}: that time over the {unit} timed above ({'batch 2, 64² latents' if unit.startswith('SD 1.5') else 'quick run: no full UNet'}), "
        "the common yardstick on this machine (the FLUX.1 and Wan transformers' own steps are far longer).",
        "- per latent pixel vs SD 1.5: callback time per latent pixel (over all frames) over SD 1.5's: what "
        "unpacking tokens or video frames, and 16 instead of 4 channels, add per pixel.",
        "- vs the same latents spatial: the same callback and previewer on the same number of latents already in "
        "the plain (B, C, h, w) layout (FLUX.1's tokens unpacked; Wan's latent frames as a batch of images), timed "
        "in the same rounds: what the layout's handling alone adds.",
        "- all latents batch 1 (guidance doubles only the denoiser's batch).",
    ]
    head = ["layout", "pipeline (run size)", "latents handed to the callback", "latent pixels", "previewer",
            f"callback / {unit}", "per latent pixel vs SD 1.5", "vs the same latents spatial (control)"]
    if with_times:
        head += ["callback ms", "control ms"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        control = r["control"]
        cells = [r["label"], f"{r['pipeline']} ({r['size']})", shape_text(r["shape"]), f"{r['pixels']:,}",
                 r["previewer_label"], percent(r["callback_s"] / unet_s),
                 f"{r['callback_s'] / r['pixels'] / per_pixel:.2f}×",
                 "—" if control is None else
                 f"{r['callback_s'] / control['callback_s']:.2f}× of {shape_text(control['shape'])}"]
        if with_times:
            cells += [f"{r['callback_s'] * 1e3:.3g}", "—" if control is None else f"{control['callback_s'] * 1e3:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Real runs that proved the callback on each pipeline (tiny transformer; Wan with fewer frames, "
                  "whose attention over 81 frames' 32,760 tokens the CPU cannot afford):", ""]
    lines += [f"- {r['label']}: {r['pipeline']} {r['proof']}" for r in rows]
    return lines


def report(results: list[dict], previewer_label: str, device, dtype, command: str, quick: bool,
           layouts: list[dict] | None = None, rounds: int = ROUNDS) -> str:
    with_times = device.type == "cuda"
    lines = [
        "# Overhead: PreviewCallback in diffusers pipelines", "",
        *([f"**Quick run (--quick): tiny UNet, {QUICK_SIDE}² latents, two steps; small FLUX.1 and Wan sizes; "
           "the numbers mean nothing.**", ""] if quick else []),
        f"Machine: {machine(device, dtype)}.  ",
        f"Run: `{command}` on {datetime.date.today().isoformat()}.", "",
        "## StableDiffusionPipeline: per-step overhead in real runs", "",
        f"StableDiffusionPipeline, random weights, text_encoder=None with random prompt embeddings, guidance "
        f"{GUIDANCE} (UNet batch 2), PNDM with the SD 1.5 scheduler config, {LATENT_SIDE}² latents (512² images), "
        f"output_type=\"latent\". Previewer: {previewer_label}, every step, `source=\"auto\"` (x0 from a UNet hook "
        "under PNDM). Medians over runs after a warm-up run; a step is one callback invocation.", "",
        "- callback / UNet step: the callback's own time per step (device synchronised) over one UNet call "
        "alone (batch 2); the issue's target is ≤ 1% with `affine` on the full SD 1.5 UNet.",
        "- end-to-end: extra wall time per step against the run without callback, over that run's step "
        "(includes the PNG writer thread; noisy on a shared CPU, can come out negative).",
    ]
    if not with_times:
        lines.append("- Absolute times are left out on the CPU (a shared machine; DESIGN.md, Measuring).")
    head = ["UNet", "params", "callback calls × runs", "configuration", "callback / UNet step", "end-to-end"]
    if with_times:
        head += ["UNet step ms", "pipeline step ms", "callback ms"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        base = r["step_s"]["no callback"]
        for config in CONFIGS[1:]:
            cb = r["callback_s"][config]
            cells = [f"{r['unet']}", f"{r['params'] / 1e6:.3g} M", f"{r['invocations']} × {r['runs']}", config,
                     percent(cb / r["unet_s"]), percent((r["step_s"][config] - base) / base)]
            if with_times:
                cells += [f"{r['unet_s'] * 1e3:.3g}", f"{base * 1e3:.3g}", f"{cb * 1e3:.3g}"]
            lines.append("| " + " | ".join(cells) + " |")
    if layouts:
        lines += layouts_report(layouts, results, with_times, rounds)
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.overhead", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda", "auto"), default="auto")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--family", choices=FAMILIES, default="affine", help="previewer family (default affine, the target's)")
    parser.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's choice); 1 gives steadier ratios on a busy machine")
    parser.add_argument("--out", type=Path, help="markdown table to write (default benchmarks/results/overhead-<device>[-<dtype>].md)")
    parser.add_argument("--quick", action="store_true", help="tiny UNet, small latents, two steps, one run: checks that it runs")
    args = parser.parse_args(argv)

    diffusers.utils.logging.set_verbosity_error()
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = resolve_device(args.device), DTYPES[args.dtype]
    plan, side, timing = (QUICK_PLAN, QUICK_SIDE, QUICK_TIMING) if args.quick else (PLANS[device.type], LATENT_SIDE, TIMING)
    suffix = "" if args.dtype == "float32" else f"-{args.dtype}"
    out = args.out or RESULTS / f"overhead-{device.type}{suffix}.md"
    label, previewer = next((label, p) for label, p in previewers_for("sd1") if p.family == args.family)
    flux_label, flux_previewer = next((label, p) for label, p in previewers_for("flux1") if p.family == args.family)
    layout_previewers = {"sd15": (label, previewer), "flux1": (flux_label, flux_previewer),
                         "wan": (f"{args.family} (default args, 16 ch)", build(args.family, 16))}

    with torch.inference_mode():
        results = [benchmark_unet(name, steps, runs, previewer, device, dtype, side, timing, progress)
                   for name, steps, runs in plan]
        layouts = benchmark_layouts({k: p for k, (_, p) in layout_previewers.items()}, device, dtype, args.quick,
                                    progress)
    for row in layouts:
        row["previewer_label"] = layout_previewers[row["layout"]][0]
    command = "python -m benchmarks.overhead " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(results, label, device, dtype, command.strip(), args.quick, layouts,
                  QUICK_ROUNDS if args.quick else ROUNDS)
    publish(text, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
