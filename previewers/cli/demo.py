HELP = ("Offline demo: a simulated 20-step sampling run from noise to two example images, previewed at every step "
        "by each shipped SD 1.x previewer (PNGs, animations and a side-by-side sheet).")

STEPS = 20
SEED = 0
PIXELS = 256  # display size of every preview; latent-resolution previews are upscaled (nearest)
SHEET_STEPS = 6  # columns of the side-by-side sheet
CELL = 128  # pixels per image in the sheet


def add_arguments(parser):
    parser.add_argument("--out", default="latent-preview-demo", help="output folder")


def demo_latents():
    """The shipped example latents (2, 4, 64, 64) float32 and their metadata (training/make_demo_latents.py)."""
    from pathlib import Path

    from safetensors import safe_open

    path = Path(__file__).resolve().parent / "demo_latents.safetensors"
    with safe_open(path, "pt") as f:
        return f.get_tensor("latents").float(), f.metadata()


def stand_in_denoiser(target):
    """A model that has learned exactly `target`: from its (VP-scaled) input at noise level σ it
    predicts ε as if the clean image were `target` low-passed by a Gaussian of width σ latent pixels,
    so early steps see coarse structure and detail arrives as σ falls, as with a trained model."""
    import math

    import torch

    h, w = target.shape[-2:]
    f2 = torch.fft.fftfreq(h)[:, None] ** 2 + torch.fft.rfftfreq(w)[None, :] ** 2  # cycles per latent pixel, squared
    spectrum = torch.fft.rfft2(target)

    def predict_noise(model_input, sigma):
        x = model_input * math.sqrt(sigma**2 + 1)  # undo scale_model_input: x = z + σε
        x0 = torch.fft.irfft2(spectrum * torch.exp(-2 * math.pi**2 * sigma**2 * f2), s=(h, w))
        return (x - x0) / sigma

    return predict_noise


def sd1_euler():
    """diffusers' Euler sampler with the SD 1.x noise schedule, set up for STEPS steps."""
    from diffusers import EulerDiscreteScheduler

    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1, timestep_spacing="leading")
    scheduler.set_timesteps(STEPS)
    return scheduler


def simulate(scheduler, target, callbacks) -> None:
    """Sample from seeded noise with the stand-in denoiser for `target`, calling `callbacks` after
    every step as a diffusers pipeline does."""
    import torch

    model = stand_in_denoiser(target)
    latents = torch.randn(target.shape, generator=torch.Generator().manual_seed(SEED)) * scheduler.init_noise_sigma
    for i, t in enumerate(scheduler.timesteps):
        model_input = scheduler.scale_model_input(latents, t)
        noise = model(model_input, float(scheduler.sigmas[scheduler.step_index]))
        latents = scheduler.step(noise, t, latents).prev_sample
        for cb in callbacks:
            cb(None, i, t, {"latents": latents})


def side_by_side(runs: dict, steps: list[int]):
    """Rows: runs (label → callback), columns: `steps`; each cell the batch side by side, labelled."""
    from PIL import Image

    from previewers.outputs.writer import caption, grid

    cells = []
    for name, cb in runs.items():
        for step in steps:
            images = [im.resize((CELL, CELL), Image.BILINEAR) for im in cb.images[step]]
            cells.append(caption(grid(images, columns=len(images)), f"{name}  step {step}"))
    return grid(cells, columns=len(steps))


def run(args) -> int:
    from pathlib import Path

    from previewers.cli.dependencies import require

    require("diffusers")  # its EulerDiscreteScheduler drives the simulated run
    from previewers.models.registry import available, load
    from previewers.outputs.images import save_atomic
    from previewers.pipelines.callback import PreviewCallback
    from previewers.pipelines.x0 import make_source

    names = [n for n in available() if n.startswith("sd1-")]
    if not names:
        raise ValueError("no shipped SD 1.x previewers (sd1-*) to demonstrate; see `latent-preview list`")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create the output folder {out} ({e})") from None
    target, meta = demo_latents()
    scheduler = sd1_euler()
    # label → (previewer, folder, source): x0 with every previewer, and the noisy latents with the first one
    plan = {name: (name, name, "auto") for name in names}
    plan[f"{names[0]} latents"] = (names[0], f"{names[0]}-latents", "latents")
    runs = {label: PreviewCallback(load(name), make_source(scheduler, source), out_dir=out / folder, size=PIXELS,
                                   keep=True)
            for label, (name, folder, source) in plan.items()}
    simulate(scheduler, target, list(runs.values()))
    for cb in runs.values():
        cb.close()
    sheet_steps = sorted({round(i * (STEPS - 1) / (SHEET_STEPS - 1)) for i in range(SHEET_STEPS)})
    save_atomic(side_by_side(runs, sheet_steps), out / "sheet.png")

    print(f"latent-preview demo: simulated sampling (diffusers {type(scheduler).__name__}, SD 1.x noise schedule, "
          f"{STEPS} steps) from seeded noise to {len(target)} example latents ({meta.get('sources', '?')}; encoded "
          f"by {meta.get('teacher', '?')}), with a stand-in denoiser that sees coarse structure first. "
          "Previews of every step:")
    width = max(map(len, plan))
    for label, (_, folder, source) in plan.items():
        what = "noisy latents x_t / sqrt(sigma^2 + 1)" if source == "latents" else "denoised estimate x0 (step 0: latents)"
        print(f"  {label.ljust(width)}  {what}: {out / folder}/step_0000_img0.png ... step_{STEPS - 1:04d}_img1.png, "
              "preview.gif, sheet.png")
    print(f"side-by-side sheet: {out / 'sheet.png'} (rows: {', '.join(plan)}; "
          f"columns: steps {', '.join(map(str, sheet_steps))})")
    return 0
