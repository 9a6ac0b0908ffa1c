HELP = "Run a local diffusers pipeline and write a preview of every step, an animation, a sheet and the final image."


def add_arguments(parser):
    parser.add_argument("--model", required=True,
                        help="diffusers pipeline folder (with model_index.json) or Hugging Face model id")
    parser.add_argument("--prompt", required=True, help="text prompt")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--steps", type=int, help="sampling steps; None: the pipeline's own default")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--every", type=int, default=1, help="preview every K-th step")
    parser.add_argument("--previewer", default="auto",
                        help="registry name or .safetensors path; auto: the shipped one for the model's latent space, "
                             "else one fitted against the model's VAE on first use (cached); fit: refit that one; "
                             "vae: the model's own VAE (exact, costly)")
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
    from pathlib import Path

    import torch

    try:
        import diffusers  # noqa: F401
    except ModuleNotFoundError:
        raise SystemExit("latent-preview generate: needs diffusers and transformers "
                         "(pip install diffusers transformers)") from None
    from ..callback import PreviewCallback

    if args.every < 1:
        raise ValueError(f"--every must be at least 1, got {args.every}")
    if torch.cuda.is_available():
        device, dtype = "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    else:
        device, dtype = "cpu", torch.float32
    pipe = load_pipeline(args.model, args.allow_download, dtype).to(device)
    out = Path(args.out)
    cb = PreviewCallback.for_pipeline(pipe, previewer=args.previewer, every=args.every, out_dir=out, source=args.source)
    steps = {"num_inference_steps": args.steps} if args.steps else {}
    generator = torch.Generator(device).manual_seed(args.seed)
    try:
        images = pipe(args.prompt, generator=generator, callback_on_step_end=cb,
                      callback_on_step_end_tensor_inputs=cb.tensor_inputs, **steps).images
    finally:
        cb.close()
    out.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(out / f"final_img{i}.png")
    previews = len(list(out.glob("step_*.png")))
    print(f"{type(pipe).__name__} ({args.model}) on {device}: {previews} step previews, preview.gif, sheet.png and "
          f"{len(images)} final image(s) in {out}")
    return 0
