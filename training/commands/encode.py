from training.commands.fit import add_device_argument

HELP = ("Encode an image into a latents file (what the denoiser holds) with a TAESD-family encoder or a diffusers VAE, "
        "to try `decode` and `eval` on your own pictures.")


def add_arguments(parser):
    parser.add_argument("image", help="image file (png, jpg, webp, ...)")
    parser.add_argument("--teacher", required=True,
                        help="TAESD-family decoder file whose _encoder sibling encodes (or give --encoder), or a "
                             "diffusers VAE or pipeline folder")
    parser.add_argument("--encoder", help="TAESD encoder file, when it is not the decoder's _encoder sibling")
    parser.add_argument("--vae-config", help="diffusers VAE config folder, needed to load a single-file checkpoint offline")
    parser.add_argument("--out", required=True, help="latents file to write (.safetensors, .pt or .npy), shape (1, C, h, w)")
    parser.add_argument("--size", type=int,
                        help="first resize the image so its longer side has this many pixels (default: as it is); "
                             "either way it is centre-cropped to a multiple of the VAE's scale factor")
    add_device_argument(parser, "device for the encoder")


def run(args) -> int:
    from previewers.cli.dependencies import require

    require("diffusers")
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    from previewers.outputs.latents_file import write_latents
    from training.adam import resolve_device
    from training.teachers import load_teacher

    if args.size is not None and args.size < 1:
        raise ValueError(f"--size must be a positive number of pixels, got {args.size}")
    try:
        with Image.open(args.image) as im:
            image = ImageOps.exif_transpose(im).convert("RGB")
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {args.image}") from None
    except OSError as e:
        raise ValueError(f"{args.image}: not a readable image ({e})") from None
    teacher = load_teacher(args.teacher, encoder=args.encoder, vae_config=args.vae_config,
                           device=resolve_device(args.device))
    if not teacher.has_encoder:
        raise ValueError(f"{args.teacher} has no encoder beside it; pass the TAESD encoder file as --encoder")
    if args.size is not None:
        factor = args.size / max(image.size)
        image = image.resize((max(1, round(image.width * factor)), max(1, round(image.height * factor))),
                             Image.Resampling.LANCZOS)
    s = teacher.scale_factor
    w, h = image.width // s * s, image.height // s * s
    if not w or not h:
        raise ValueError(f"{args.image}: {image.width}x{image.height} pixels is smaller than one {s}x{s} latent pixel")
    left, top = (image.width - w) // 2, (image.height - h) // 2
    image = image.crop((left, top, left + w, top + h))
    pixels = torch.from_numpy(np.asarray(image)).permute(2, 0, 1)[None].float() / 255  # (1, 3, H, W) in [0, 1]
    latents = teacher.encode(pixels).cpu()
    path = write_latents(latents, args.out, source=str(args.image), teacher=teacher.name, pixels=f"{w}x{h}")
    print(f"wrote {path}: latents {tuple(latents.shape)} of a {w}x{h} crop of {args.image}, encoded by {teacher.name} "
          f"(try: latent-preview decode {path} --previewer NAME --out preview.png)")
    return 0
