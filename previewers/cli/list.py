HELP = "List the shipped previewers with their space, family, size and held-out quality."


def add_arguments(parser):
    parser.add_argument("--space", help="only previewers for this latent space (sd1, sdxl, sd3, flux1, flux2)")


def run(args) -> int:
    from previewers.models.registry import available, weights_dir
    from previewers.models.spaces import get_space
    from previewers.models.weightfile import read_config

    if args.space is not None:
        get_space(args.space)
    rows = []
    for name in available():
        config = read_config(weights_dir() / f"{name}.safetensors")
        if args.space and config.get("space") != args.space:
            continue
        clean = config.get("metrics", {}).get("clean", {}).get("psnr")
        rows.append((name, config.get("space", "?"), config["family"], str(config["latent_channels"]),
                     f"{config['scale']}x", "-" if clean is None else f"{clean:.1f}"))
    header = ("name", "space", "family", "channels", "output", "PSNR dB (clean)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0
