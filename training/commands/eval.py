from training.commands.fit import add_device_argument

HELP = "Score previewers (and optionally published tables and peer models) against a VAE decoder on held-out images."


def add_arguments(parser):
    parser.add_argument("--teacher", required=True,
                        help="decoder the previews are compared with: TAESD-family decoder file, diffusers VAE or "
                             "pipeline folder, or single-file VAE checkpoint (with --vae-config)")
    parser.add_argument("--encoder", help="TAESD encoder file, when it is not the decoder's _encoder sibling")
    parser.add_argument("--vae-config", help="diffusers VAE config folder, needed to load a single-file checkpoint offline")
    parser.add_argument("--space", required=True, choices=("sd1", "sdxl", "sd3", "flux1", "flux2"), help="latent space")
    parser.add_argument("--images", required=True, help="held-out image folder (e.g. ../shared/data/kodak24); never fit on it")
    parser.add_argument("--previewer", help="comma-separated registry names (see `latent-preview list`), .safetensors "
                                            "weight files or TAESD-family decoder files (.safetensors/.pth)")
    parser.add_argument("--baselines", action="store_true",
                        help="also score the published factor tables and peer models of --space")
    parser.add_argument("--tile", type=int, default=256, help="held-out tile side in pixels (non-overlapping tiles of each image)")
    parser.add_argument("--count", type=int, help="use this many tiles spread over the folder (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise for the noised (s = 0.5) latents")
    parser.add_argument("--report", help="write the results as a markdown table to this file")
    parser.add_argument("--sheet", help="write a comparison PNG (teacher | each previewer, same tiles) to this file")
    parser.add_argument("--sheet-tiles", type=int, default=3, help="tiles shown on the sheet (each clean and noised)")
    parser.add_argument("--cache", help="folder for the cached held-out decodes (default: $LATENT_PREVIEW_CACHE/pairs, "
                                        "else ~/.cache/latent-preview/pairs)")
    parser.add_argument("--no-cache", action="store_true", help="recompute the held-out decodes and write no cache")
    add_device_argument(parser, "device for the teacher (previews are timed on the CPU)")


def labels(names: list[str]) -> list[str]:
    """Row labels for --previewer entries: registry names as they are, weight files by their stem, or by the
    path as given where the stem would be taken twice (my/sd1-conv.safetensors beside the shipped sd1-conv)."""
    from pathlib import Path

    stems = [Path(n).stem if n.endswith((".safetensors", ".pth", ".pt")) else n for n in names]
    return [n if stems.count(stem) > 1 and n != stem else stem for n, stem in zip(names, stems)]


def run(args) -> int:
    from pathlib import Path

    from previewers.cli.dependencies import require

    require("diffusers", "tqdm", "skimage")

    from previewers.models.registry import load
    from training.commands.fit import open_teacher
    from training.evaluate import baselines, evaluate, held_out, markdown
    from training.pair_cache import default_cache_dir
    from training.sheet import write_sheet

    names = [n.strip() for n in (args.previewer or "").split(",") if n.strip()]
    if not names and not args.baselines:
        raise ValueError("give --previewer NAME[,NAME...] and/or --baselines")
    modules = {}
    for name, label in zip(names, labels(names)):
        module = load(name)
        space = module.meta.get("space")
        if space is not None and space != args.space:
            raise ValueError(f"previewer {name} is for space {space}, not {args.space}")
        modules[label] = module
    if args.baselines:
        modules.update(baselines(args.space))
    teacher, teacher_id = open_teacher(args)
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    data = held_out(teacher, args.images, size=args.tile, count=args.count, seed=args.seed,
                    cache_dir=cache, teacher_id=teacher_id)
    rows = evaluate(modules, data)
    note = (f"Against {teacher.name} on {len(data.clean)} {args.tile}² tiles of {args.images}; clean latents and "
            f"noised z = 0.5·z + 0.5·ε; latent-resolution outputs against the decode area-pooled to their size; "
            f"time = median of 1×{teacher.latent_channels}×64×64 previews on one CPU thread.")
    table = markdown(rows, title=f"{args.space}: previewers against {teacher.name}", note=note)
    print(table)
    if args.report:
        Path(args.report).parent.mkdir(parents=True, exist_ok=True)
        Path(args.report).write_text(table)
        print(f"wrote {args.report}")
    if args.sheet:
        print(f"wrote {write_sheet(args.sheet, modules, data, count=args.sheet_tiles)}")
    return 0
