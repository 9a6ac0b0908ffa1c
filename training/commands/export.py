HELP = "Export a fitted linear/affine previewer as ComfyUI-style latent_rgb_factors (Python) or JSON for other tools."

FORMATS = ("comfyui", "json")

# Why an upsampler cannot be written for TAESD-style loaders either (taesd.py's Decoder and its ports):
TAESD_MISMATCH = (
    "TAESD-style loaders build one fixed decoder (a tanh clamp, 64-channel 3x3 convs in residual Blocks, 3-1-3-3 "
    "blocks around three upsampling stages) and load weights by its nn.Sequential indices; the upsampler family is "
    "a different, much smaller network (plain convs at {widths} channels, no residual blocks, no input clamp), so "
    "its weights have no place in that layout. Load it with previewers.load instead."
)


def add_arguments(parser):
    parser.add_argument("previewer", help="registry name (see `latent-preview list`) or .safetensors path")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="comfyui: the self.latent_rgb_factors / self.latent_rgb_factors_bias lines of a "
                             "ComfyUI latent format class, ready to paste; json: the same numbers plus the [0, 1] form")
    parser.add_argument("--out", required=True, help="file to write")


def run(args) -> int:
    from pathlib import Path

    from previewers.models.registry import load
    from training.export import comfyui_snippet, factors, json_export

    previewer = load(args.previewer)
    if previewer.family == "upsampler":
        widths = "/".join(str(w) for w in (previewer.args["width"], *previewer.args["stages"]))
        raise ValueError(f"{args.previewer} is an upsampler: a network, not a factor table (comfyui and json need "
                         "a linear or affine previewer), and it cannot be exported in TAESD format either: "
                         + TAESD_MISMATCH.format(widths=widths))
    name = Path(args.previewer).stem if str(args.previewer).endswith(".safetensors") else args.previewer
    text = comfyui_snippet(previewer, name) if args.format == "comfyui" else json_export(previewer, name)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    weight, bias = factors(previewer)
    print(f"wrote {out} ({args.format}: {weight.shape[0]}x3 factors{'' if bias is None else ' + bias'})")
    return 0
