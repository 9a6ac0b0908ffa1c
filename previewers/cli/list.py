HELP = "List the shipped previewers with their space, family, size and held-out quality."


def add_arguments(parser):
    parser.add_argument("--space", help="only previewers for this latent space (sd1, sdxl, sd3, flux1, flux2)")


def run(args) -> int:
    from previewers.models.registry import available, weights_dir
    from previewers.models.spaces import get_space
    from previewers.models.weightfile import read_card

    if args.space is not None:
        get_space(args.space)
    rows = []
    for name in available():
        card = read_card(weights_dir() / f"{name}.safetensors")
        if args.space and card.space != args.space:
            continue
        rows.append((name, card.space_label(), card.family, str(card.latent_channels), f"{card.scale}x",
                     "-" if card.metrics is None else f"{card.metrics.clean.psnr:.1f}"))
    header = ("name", "space", "family", "channels", "output", "PSNR dB (clean)")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return 0
