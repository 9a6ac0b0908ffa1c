HELP = "Preview saved latents (.safetensors/.pt with one tensor, or .npy) as PNG images."


def add_arguments(parser):
    parser.add_argument("latents", help="latents file: spatial (C, h, w) or (B, C, h, w) in the space's denoiser "
                                        "convention, or packed FLUX tokens (B, N, 4·C) with --height/--width")
    parser.add_argument("--previewer", required=True,
                        help="registry name (see `latent-preview list`), .safetensors weight file, or a TAESD-family "
                             "decoder file (taesd, taesdxl, taesd3, taef1 .safetensors; taef2 .pth)")
    parser.add_argument("--out", required=True, help="output image (.png, .jpg, .webp, .bmp, .gif, .tif); with several latents in the batch, "
                                           "_0, _1, ... are appended to the name")
    parser.add_argument("--size", type=int, help="upscale so the longer side has this many pixels (default: the previewer's own output size, "
                                               "1/8 of the image for latent-resolution previewers)")
    parser.add_argument("--height", type=int, help="image height in pixels, to unpack FLUX.1/FLUX.2 tokens")
    parser.add_argument("--width", type=int, help="image width in pixels, to unpack FLUX.1/FLUX.2 tokens")
    parser.add_argument("--vae-scale-factor", type=int, default=8, help="pixels per latent pixel, to unpack tokens")
    parser.add_argument("--resample", choices=("nearest", "bilinear"), default="nearest", help="upscaling filter for --size")


def run(args) -> int:
    from pathlib import Path

    import torch
    from PIL import Image

    from previewers.models.card import WeightCard
    from previewers.models.registry import load
    from previewers.outputs.images import image_format, resize, save_atomic, to_uint8
    from previewers.outputs.latents_file import read_latents
    from previewers.pipelines.latents import unpack_tokens
    from previewers.pipelines.nonfinite import warn_nonfinite
    from previewers.plural import plural

    out = Path(args.out)
    image_format(out)
    for flag, value in (("--size", args.size), ("--height", args.height), ("--width", args.width),
                        ("--vae-scale-factor", args.vae_scale_factor)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a positive number of pixels, got {value}")
    if (args.height is None) != (args.width is None):
        raise ValueError("give both --height and --width (the image size the tokens come from)")
    previewer = load(args.previewer)
    space = WeightCard.of(previewer).space_label()
    latents = read_latents(args.latents)
    shape = tuple(latents.shape)
    if args.height is not None:
        if latents.ndim not in (2, 3):
            raise ValueError(f"{args.latents}: --height/--width unpack FLUX tokens (N, 4·C) or (B, N, 4·C), "
                             f"but the file holds shape {shape}")
        try:
            latents = unpack_tokens(latents if latents.ndim == 3 else latents[None], previewer.latent_channels,
                                    args.height, args.width, args.vae_scale_factor)
        except ValueError as e:
            raise ValueError(f"{args.latents}: {e}") from None
    elif latents.ndim == 3:
        latents = latents[None]
    if latents.ndim != 4:
        raise ValueError(f"{args.latents}: expected spatial latents (C, h, w) or (B, C, h, w), got shape {shape}")
    if latents.shape[1] != previewer.latent_channels:
        what = "unpack to" if args.height is not None else "have"
        raise ValueError(
            f"{args.latents}: latents of shape {shape} {what} {plural(latents.shape[1], 'channel')}, but previewer "
            f"{args.previewer!r} ({space}) takes {previewer.latent_channels}"
            + ("" if args.height is not None else "; packed FLUX tokens (B, N, 4·C) need --height and --width")
        )
    warn_nonfinite(latents, f"in {args.latents}")
    with torch.no_grad():
        rgb = previewer(latents)
    if args.size:
        rgb = resize(rgb, args.size, args.resample)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = to_uint8(rgb).cpu().numpy()
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix}") for i in range(len(images))]
    for image, path in zip(images, paths):
        save_atomic(Image.fromarray(image), path)
        print(f"wrote {path} ({image.shape[1]}x{image.shape[0]}, {space} {previewer.family})")
    return 0
