HELP = "Preview saved latents (.safetensors/.pt with one tensor, or .npy) as PNG images."


def add_arguments(parser):
    parser.add_argument("latents", help="latents file: spatial (C, h, w) or (B, C, h, w) in the space's denoiser "
                                        "convention, or packed FLUX tokens (B, N, 4·C) with --height/--width")
    parser.add_argument("--previewer", required=True,
                        help="registry name (see `latent-preview list`), .safetensors weight file, or a TAESD-family "
                             "decoder file (taesd, taesdxl, taesd3, taef1 .safetensors; taef2 .pth)")
    parser.add_argument("--out", required=True, help="output PNG path; with several latents in the batch, _0, _1, ... are appended")
    parser.add_argument("--size", type=int, help="upscale so the longer side has this many pixels")
    parser.add_argument("--height", type=int, help="image height in pixels, to unpack FLUX.1/FLUX.2 tokens")
    parser.add_argument("--width", type=int, help="image width in pixels, to unpack FLUX.1/FLUX.2 tokens")
    parser.add_argument("--vae-scale-factor", type=int, default=8, help="pixels per latent pixel, to unpack tokens")
    parser.add_argument("--resample", choices=("nearest", "bilinear"), default="nearest", help="upscaling filter for --size")


def run(args) -> int:
    from pathlib import Path

    import torch

    from PIL import Image

    from ..images import resize, save_atomic, to_uint8
    from ..latents_io import read_latents
    from ..packing import unpack_tokens
    from ..registry import load

    previewer = load(args.previewer)
    space = previewer.meta.get("space") or "/".join(previewer.meta.get("spaces", ())) or "?"
    latents = read_latents(args.latents)
    shape = tuple(latents.shape)
    if (args.height is None) != (args.width is None):
        raise ValueError("give both --height and --width (the image size the tokens come from)")
    if args.height is not None:
        latents = unpack_tokens(latents if latents.ndim == 3 else latents[None], args.height, args.width,
                                args.vae_scale_factor)
    elif latents.ndim == 3:
        latents = latents[None]
    if latents.ndim != 4:
        raise ValueError(f"{args.latents}: expected spatial latents (C, h, w) or (B, C, h, w), got shape {shape}")
    if latents.shape[1] != previewer.latent_channels:
        raise ValueError(
            f"{args.latents}: latents of shape {shape} have {latents.shape[1]} channels, but previewer "
            f"{args.previewer!r} ({space}) takes {previewer.latent_channels}; "
            "packed FLUX tokens (B, N, 4·C) need --height and --width"
        )
    with torch.no_grad():
        rgb = previewer(latents)
    if args.size:
        rgb = resize(rgb, args.size, args.resample)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = to_uint8(rgb).cpu().numpy()
    paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}_{i}{out.suffix or '.png'}") for i in range(len(images))]
    for image, path in zip(images, paths):
        save_atomic(Image.fromarray(image), path)
        print(f"wrote {path} ({image.shape[1]}x{image.shape[0]}, {space} {previewer.family})")
    return 0
