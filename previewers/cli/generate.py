HELP = "Run a local diffusers pipeline and write a preview of every step, an animation, a sheet and the final image."


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="diffusers pipeline folder (with model_index.json) or Hugging Face model id")
    parser.add_argument("--prompt", required=True, help="text prompt")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, help="sampling steps; None: the pipeline's own default")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--every", type=int, default=1, help="preview every K-th step")
    parser.add_argument("--height", type=int, help="image height in pixels (default: the pipeline's own)")
    parser.add_argument("--width", type=int, help="image width in pixels (default: the pipeline's own)")
    parser.add_argument("--guidance-scale", type=float, help="classifier-free guidance scale (default: the pipeline's own)")
    parser.add_argument("--negative-prompt", help="what the image should not show (pipelines that take one)")
    parser.add_argument("--size", type=int, help="upscale step previews so the longer side has this many pixels "
                                                 "(default: the previewer's output, 1/8 of the image at latent resolution)")
    parser.add_argument("--preview", "--previewer", dest="previewer", default="auto", metavar="METHOD",
                        help="how steps are previewed (README, 'Choosing a preview method'): auto (the preferred shipped "
                             "previewer for the model's latent space, else one fitted against the model's VAE on first "
                             "use, cached); fit (refit that one); a family shipped for the space: affine (a factor "
                             "table), conv, upsampler, linear, quadratic, mlp; a TAESD-family decoder file (taesd, "
                             "taesdxl, taesd3, taef1 .safetensors, taef2 .pth); vae (the model's own VAE, exact and "
                             "costly: use a large --every); or a registry name or .safetensors weight file")
    parser.add_argument("--source", choices=("auto", "x0", "latents"), default="auto",
                        help="preview the denoised estimate x0, the noisy latents, or x0 where the scheduler gives it exactly")
    parser.add_argument("--allow-download", action="store_true",
                        help="let diffusers download the model from the Hugging Face Hub")


def load_pipeline(model: str, allow_download: bool, dtype):
    """DiffusionPipeline.from_pretrained, offline unless allowed; one clear message when the files are missing."""
    from pathlib import Path

    from diffusers import DiffusionPipeline
    from huggingface_hub.constants import HF_HUB_CACHE

    try:
        return DiffusionPipeline.from_pretrained(model, dtype=dtype, local_files_only=not allow_download)
    except (OSError, ValueError) as e:
        if Path(model).is_dir():
            raise ValueError(f"{model}: not a loadable diffusers pipeline folder ({e})") from None
        where = f"it is not a local folder, and not in the Hugging Face cache ({HF_HUB_CACHE})"
        hint = "pass --model /path/to/pipeline-folder (a diffusers folder with model_index.json)"
        if not allow_download:
            hint += ", or add --allow-download to fetch it"
        raise FileNotFoundError(f"no diffusers model {model!r}: {where} ({type(e).__name__}); {hint}") from None


def run(args) -> int:
    import inspect
    from pathlib import Path

    import torch

    from previewers.cli.dependencies import require

    require("diffusers", "transformers")
    from previewers.pipelines.callback import PreviewCallback

    for flag, value in (("--every", args.every), ("--steps", args.steps), ("--height", args.height),
                        ("--width", args.width), ("--size", args.size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}")
    if (args.height is None) != (args.width is None):
        raise ValueError("give both --height and --width, or neither")
    if args.previewer == "taesd":  # the family's own files are the previewers; none of ours is named after it
        raise ValueError("--preview taesd needs the decoder file: pass its path, e.g. --preview taesd_decoder.safetensors "
                         "(taesd for SD 1.x/2.x, taesdxl, taesd3, taef1, taef2 for FLUX.2)")
    if torch.cuda.is_available():
        device, dtype = "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        device, dtype = "cpu", torch.float32
    pipe = load_pipeline(args.model, args.allow_download, dtype).to(device)
    out = Path(args.out)
    options = {"num_inference_steps": args.steps, "height": args.height, "width": args.width,
               "guidance_scale": args.guidance_scale, "negative_prompt": args.negative_prompt}
    options = {k: v for k, v in options.items() if v is not None}
    accepted = inspect.signature(pipe.__call__).parameters
    flags = {"negative_prompt": "--negative-prompt", "guidance_scale": "--guidance-scale"}
    for key in options:
        if key not in accepted:
            raise ValueError(f"{type(pipe).__name__} takes no {flags.get(key, key)}")
    cb = PreviewCallback.for_pipeline(pipe, previewer=args.previewer, every=args.every, out_dir=out,
                                      source=args.source, height=args.height, width=args.width, size=args.size)
    if "callback_on_step_end" in accepted:
        options.update(callback_on_step_end=cb, callback_on_step_end_tensor_inputs=cb.tensor_inputs)
    elif "callback" in accepted:  # the older step API (PixArt, DeepFloyd IF, Kandinsky 2.1, ...)
        options.update(callback=cb, callback_steps=1)
    else:
        cb.close()
        raise ValueError(f"{type(pipe).__name__} calls no step callback: there are no steps to preview")
    generator = torch.Generator(device).manual_seed(args.seed)
    try:
        images = pipe(args.prompt, generator=generator, **options).images
    finally:
        cb.close()
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(out / f"final_img{i}.png")
    previews = len(list(out.glob("step_*.png")))
    print(f"{type(pipe).__name__} ({args.model}) on {device}: {previews} step previews, preview.gif, sheet.png and "
          f"{len(images)} final image(s) in {out}")
    return 0
