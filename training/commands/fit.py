HELP = "Fit previewer families against a VAE decoder (the teacher) on crops of an image folder and/or saved latents."

ARGS_HELP = (
    "constructor arguments as JSON, e.g. '{\"channels\": [], \"kernels\": [3]}' for a closed-form linear 3x3 conv; "
    "with several families, an object keyed by family name"
)


REQUIRED = ("teacher", "space", "family", "out")  # unless --pipeline
VALIDATION_TILES = 256  # --val-images tiles, spread evenly over the images: a few minutes to encode and decode once


def add_arguments(parser):
    from training.adam import LOSSES

    first_use = parser.add_argument_group("fit on first use")
    first_use.add_argument("--pipeline", metavar="DIR",
                           help="diffusers pipeline folder: fit against its own VAE, offline, the previewer that "
                                "previewer='auto' fits on first use, then train the day-one conv net (the design "
                                "shipped for that latent width) against the same VAE, and store both in the cache, "
                                "where 'auto' takes the one with the higher held-out PSNR (also --out FILE for the "
                                "net, --device, --resume, and --space when its VAE's config does not say which "
                                "shipped space its latents are in); the other options below are then not used. "
                                "A command to leave running: progress bars show the time left")
    first_use.add_argument("--no-net", action="store_true",
                           help="with --pipeline: fit the closed form only (seconds to minutes), no net")
    first_use.add_argument("--upsampler", action="store_true",
                           help="with --pipeline: after the net, also train the day-one upsampler to full resolution "
                                "(the design shipped for that latent width; meant for a GPU: 50 min on a 2-core CPU for a tiny VAE), which "
                                "'auto' takes where its held-out scores beat every upscaled latent-resolution "
                                "preview at its cost; --net-steps, --net-crops, --net-budget and --resume apply to it too")
    first_use.add_argument("--net-steps", type=int,
                           help="with --pipeline: Adam steps of the net (default: training/day_one.py's for the latent width; "
                                "early stopping may end sooner)")
    first_use.add_argument("--net-crops", type=int,
                           help="with --pipeline: crops the VAE encodes and decodes for the net (default: "
                                "training/day_one.py's for the latent width), cached per VAE")
    first_use.add_argument("--net-budget", type=float, metavar="SECONDS",
                           help="with --pipeline: stop the net's fit (pairs included) after this long, keeping its best")
    teacher = parser.add_argument_group("teacher")
    teacher.add_argument("--teacher",
                         help="decoder to imitate: a TAESD-family decoder file (its _encoder sibling is found "
                              "automatically), a diffusers VAE or pipeline folder, or a single-file VAE checkpoint")
    teacher.add_argument("--encoder", help="TAESD encoder file, when it is not the decoder's _encoder sibling")
    teacher.add_argument("--vae-config", help="diffusers VAE config folder, needed to load a single-file checkpoint offline")
    teacher.add_argument("--space", choices=("sd1", "sdxl", "sd3", "flux1", "flux2"),
                         help="latent space: sets the noise trajectory (ddpm for sd1/sdxl, flow otherwise) and the file names")
    data = parser.add_argument_group("data")
    data.add_argument("--images", help="folder of training photos (never the benchmark images)")
    data.add_argument("--latents", help="folder of latents saved from pipeline runs (.safetensors/.pt/.npy, "
                                        "(C, h, w) or (B, C, h, w) in the denoiser convention); needs no encoder")
    data.add_argument("--crops", type=int, default=256, help="number of random crops drawn from --images")
    data.add_argument("--crop-size", type=int, default=256, help="crop side in pixels (a multiple of the VAE's scale factor)")
    data.add_argument("--augment", type=float, default=0.0,
                      help="fraction of crops flipped/rotated by 90°, and (independently) hue-rotated and "
                           "contrast-changed; 0 = none")
    data.add_argument("--hue", type=float,
                      help="fraction of crops hue-rotated (default: the --augment fraction); per-pixel maps fit photos "
                           "better without it")
    data.add_argument("--exclude-images", metavar="GLOBS",
                      help="comma-separated file-name patterns of --images not to fit on, e.g. 'gnome_*,ukui_*'")
    data.add_argument("--val-images", metavar="GLOBS",
                      help="comma-separated file-name patterns of --images kept out of training: the Adam fits "
                           f"validate (early stopping, best state kept) on up to {VALIDATION_TILES} unaugmented "
                           "--crop-size tiles of them at their own scale, clean and noised; default: a random tenth "
                           "of the training crops' images")
    data.add_argument("--noise-mix", type=float, default=0.5,
                      help="fraction of samples moved along the noising trajectory (the rest stay clean)")
    data.add_argument("--seed", type=int, default=0, help="seed for crops, noise, data split and initialisation")
    data.add_argument("--cache", help="folder for cached encoder/decoder pairs (default: $LATENT_PREVIEW_CACHE/pairs, "
                                      "else ~/.cache/latent-preview/pairs)")
    data.add_argument("--no-cache", action="store_true", help="recompute pairs and write no cache")
    data.add_argument("--stream", action="store_true",
                      help="read pairs from the on-disk cache as they are needed instead of holding them in memory "
                           "(pair sets larger than RAM)")
    model = parser.add_argument_group("fitting")
    model.add_argument("--family",
                       help="comma-separated families: linear, affine, quadratic and a one-layer conv (least squares); "
                            "mlp, conv nets and upsampler (Adam)")
    model.add_argument("--args", help=ARGS_HELP)
    model.add_argument("--variant", help="name suffix for the output file: <space>-<family>-<variant>.safetensors")
    model.add_argument("--ridge", type=float, default=1e-5, help="least-squares ridge, relative to the mean diagonal of XᵀX")
    model.add_argument("--reweight", type=int, default=3,
                       help="least-squares rounds reweighting each crop by 1/its error, toward the best mean PSNR "
                            "per image (0 = plain least squares)")
    model.add_argument("--steps", type=int, default=3000,
                       help="Adam step budget (early stopping may end sooner); 0 keeps where the fit starts (a residual "
                            "net's least-squares base, or --init's file): what a validation that never rises above "
                            "the start chooses")
    model.add_argument("--batch", type=int, default=32, help="samples per Adam step")
    model.add_argument("--lr", type=float, default=2e-3, help="peak Adam learning rate (cosine-annealed)")
    model.add_argument("--patience", type=int, default=10,
                       help="validation passes (every 100 steps) without improvement before stopping early")
    model.add_argument("--loss", default="mse", choices=LOSSES,
                       help="Adam's loss: squared display error; L1 plus L1 of its spatial differences (values "
                            "edges); or that plus a 1 − SSIM term; validation and early stopping use PSNR either way")
    model.add_argument("--init", metavar="FILE",
                       help="continue an Adam fit from a finished weight file of the same family and --args (one "
                            "family): its weights replace the fresh start and --steps run a new cosine schedule; its "
                            "recipe is kept in the new file's")
    add_device_argument(model, "device for the teacher and the Adam fits")
    model.add_argument("--resume", action="store_true",
                       help="continue an Adam fit from its checkpoint (OUT.ckpt beside each output file, written "
                            "after every validation pass and removed when the fit ends); without it a fit starts afresh. "
                            "With --pipeline, the cached fits that ended are kept")
    out = parser.add_argument_group("output")
    out.add_argument("--out",
                     help="output .safetensors file (one family) or folder (files named <space>-<family>[-<variant>].safetensors)")
    out.add_argument("--eval-images", help="held-out image folder: score each fit there and store the numbers in its metadata")
    out.add_argument("--eval-tile", type=int, default=256, help="held-out tile side in pixels (as in `latent-preview eval`)")
    out.add_argument("--eval-count", type=int, help="use this many held-out tiles (default: all)")
    out.add_argument("--force", action="store_true", help="overwrite output files that already exist")
    out.add_argument("--why", help="why this design ships (e.g. the frontier run that chose it), stored in each file's "
                                   "recipe as \"why\"")


def add_device_argument(parser, purpose: str) -> None:
    """--device, the same for fit and eval."""
    parser.add_argument("--device", default="auto",
                        help=f"{purpose}: 'auto' (CUDA when available), 'cpu', 'cuda', 'cuda:1', ...")


def check_counts(args) -> None:
    """One clear error for a count or fraction out of range, before anything is loaded."""
    at_least = {"--crops": (args.crops, 1), "--crop-size": (args.crop_size, 1), "--steps": (args.steps, 0),
                "--batch": (args.batch, 1), "--patience": (args.patience, 1), "--reweight": (args.reweight, 0),
                "--eval-tile": (args.eval_tile, 1), "--eval-count": (args.eval_count, 1)}
    for flag, (value, least) in at_least.items():
        if value is not None and value < least:
            raise ValueError(f"{flag} must be at least {least}, got {value}")
    for flag, fraction in (("--noise-mix", args.noise_mix), ("--augment", args.augment), ("--hue", args.hue)):
        if fraction is not None and not 0 <= fraction <= 1:
            raise ValueError(f"{flag} must be between 0 and 1, got {fraction}")
    if args.ridge < 0:
        raise ValueError(f"--ridge must not be negative, got {args.ridge}")
    if args.lr <= 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")


def validation_tiles(teacher, images, only: tuple[str, ...], size: int, cache_dir, teacher_id):
    """The held-out tiles that --val-images validates on (training.evaluate.HeldOut): up to VALIDATION_TILES
    unaugmented size² tiles, clean and noised, of the files in `images` named by the patterns `only`."""
    from training.evaluate import held_out

    return held_out(teacher, images, size=size, count=VALIDATION_TILES, cache_dir=cache_dir, teacher_id=teacher_id,
                    only=only)


def check_val_images(images, exclude: tuple[str, ...], only: tuple[str, ...]) -> None:
    """ValueError unless the patterns `only` name some of the files in `images` (less `exclude`) to validate on and
    leave some to train on; cheap, so callers check before the minutes of encoding pairs."""
    from training.data import image_files

    image_files(images, exclude, only=only)
    image_files(images, exclude + only)


def globs(text: str | None) -> tuple[str, ...]:
    """'a_*, b_*' → ('a_*', 'b_*')."""
    return tuple(p.strip() for p in (text or "").split(",") if p.strip())


def parse_families(text: str) -> list[str]:
    from previewers.models.families import FAMILIES

    families = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in families if f not in FAMILIES]
    if not families or unknown:
        raise ValueError(f"unknown family {', '.join(unknown) or repr(text)}; known: {', '.join(FAMILIES)}")
    return families


def family_args(text: str | None, families: list[str]) -> dict:
    """{family: constructor kwargs} from the --args JSON."""
    import json

    if not text:
        return {f: {} for f in families}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--args is not valid JSON ({e})") from None
    if not isinstance(value, dict):
        raise ValueError("--args must be a JSON object")
    if value and set(value) <= set(families) and all(isinstance(v, dict) for v in value.values()):
        return {f: value.get(f, {}) for f in families}
    if len(families) > 1:
        raise ValueError("with several families, --args must be an object keyed by family name")
    return {families[0]: value}


def open_teacher(args):
    """(teacher, fingerprint) for --teacher/--encoder/--vae-config, checked against --space."""
    from previewers.models.spaces import get_space
    from training.adam import resolve_device
    from training.pair_cache import fingerprint
    from training.teachers import load_teacher

    space = get_space(args.space)
    device = resolve_device(getattr(args, "device", "auto"))
    teacher = load_teacher(args.teacher, encoder=args.encoder, vae_config=args.vae_config, device=device)
    if teacher.latent_channels != space.channels:
        raise ValueError(f"teacher {args.teacher} has {teacher.latent_channels}-channel latents, "
                         f"but space {space.name} has {space.channels}")
    paths = [p for p in (args.teacher, args.encoder, args.vae_config) if p]
    return teacher, fingerprint(*paths)


def output_paths(out: str, space: str, families: list[str], variant: str | None):
    from pathlib import Path

    out = Path(out)
    suffix = f"-{variant}" if variant else ""
    if out.suffix == ".safetensors":
        if len(families) > 1:
            raise ValueError(f"--out {out} is one file, but {len(families)} families are fitted; give a folder")
        return {families[0]: out}
    return {f: out / f"{space}-{f}{suffix}.safetensors" for f in families}


def run(args) -> int:
    """Under torchrun (WORLD_SIZE set) every process runs this; they fit data-parallel and rank 0 writes."""
    from previewers.cli.dependencies import require

    require("diffusers", "tqdm", *(["skimage"] if args.eval_images else []))
    from training.adam import resolve_device
    from training.distributed import launched

    if args.pipeline:
        from training.pipeline_folder import fit_pipeline_folder

        previewer, cached = fit_pipeline_folder(args.pipeline, args.device, args.space, args.out, net=not args.no_net,
                                                net_steps=args.net_steps, net_crops=args.net_crops,
                                                budget_s=args.net_budget, resume=args.resume,
                                                upsampler=args.upsampler)
        from previewers.models.card import WeightCard

        print(f"cached {cached} ({previewer.family}, held-out PSNR {WeightCard.of(previewer).metrics.clean.psnr:.2f} dB)"
              + (f" and wrote {args.out}" if args.out else ""))
        return 0
    for flag, value in (("--no-net", args.no_net), ("--net-steps", args.net_steps), ("--net-crops", args.net_crops),
                        ("--net-budget", args.net_budget), ("--upsampler", args.upsampler)):
        if value not in (None, False):
            raise ValueError(f"{flag} goes with --pipeline DIR")
    missing = [f"--{name}" for name in REQUIRED if not getattr(args, name)]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or fit for a pipeline folder with --pipeline DIR)")
    # every option is checked, and every model built, before the minutes of encoding and decoding pairs
    if not args.images and not args.latents:
        raise ValueError("give --images and/or --latents")
    for flag, value in (("--exclude-images", args.exclude_images), ("--val-images", args.val_images)):
        if value and not args.images:
            raise ValueError(f"{flag} names files of --images; give --images")
        if value is not None and not globs(value):
            raise ValueError(f"{flag} is empty; give comma-separated file-name patterns")
    if args.stream and args.no_cache:
        raise ValueError("--stream reads pairs from the on-disk cache; it cannot go with --no-cache")
    check_counts(args)
    if args.val_images:
        check_val_images(args.images, globs(args.exclude_images), globs(args.val_images))
    with launched(cuda=resolve_device(args.device).type == "cuda") as world:
        return fit_all(args, world)


def fit_all(args, world) -> int:
    from previewers.models.spaces import get_space
    from previewers.models.weightfile import save
    from training.adam import Training
    from training.crops import Crops
    from training.data import make_pairs
    from training.fit import build_for, fit
    from training.pair_cache import default_cache_dir

    families = parse_families(args.family)
    arguments = family_args(args.args, families)
    paths = output_paths(args.out, args.space, families, args.variant)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not args.force:
        raise ValueError(f"{', '.join(existing)} already exists; pass --force to overwrite")
    init = None
    if args.init:
        from previewers.models.weightfile import load_file

        if len(families) != 1:
            raise ValueError(f"--init continues one fit; --family names {len(families)}")
        init = load_file(args.init)
    space = get_space(args.space)
    teacher, teacher_id = open_teacher(args)
    for family in families:
        build_for(teacher, family, arguments[family])
    cache = None if args.no_cache else (args.cache or default_cache_dir())
    validate_on = globs(args.val_images)
    pairs = make_pairs(teacher, space.noise, images=args.images, latents=args.latents,
                       exclude=globs(args.exclude_images) + validate_on,
                       crops=Crops(count=args.crops, size=args.crop_size, seed=args.seed, dihedral=args.augment,
                                   hue=args.augment if args.hue is None else args.hue, contrast=args.augment),
                       noise_mix=args.noise_mix, cache_dir=cache, teacher_id=teacher_id, progress=world.main,
                       stream=args.stream)
    validation = None
    if validate_on:
        from training.evaluate import validation_pairs

        # every process validates (on its share), but rank 0 alone encodes the tiles and writes their cache file
        validation = validation_pairs(world.from_main(lambda: validation_tiles(
            teacher, args.images, validate_on, args.crop_size, cache, teacher_id)))
    held = None
    if args.eval_images and world.main:  # only rank 0 scores and writes
        from training.evaluate import held_out

        held = held_out(teacher, args.eval_images, size=args.eval_tile, count=args.eval_count,
                        cache_dir=cache, teacher_id=teacher_id)
    training = Training(steps=args.steps, batch=args.batch, lr=args.lr, patience=args.patience, seed=args.seed,
                        loss=args.loss)
    for family in families:
        previewer = fit(teacher, family, pairs, space=args.space, args=arguments[family], device=args.device,
                        ridge=args.ridge, reweight=args.reweight, training=training,
                        checkpoint=paths[family].with_name(paths[family].name + ".ckpt"), resume=args.resume,
                        validation=validation, init=init)
        recipe = previewer.meta["recipe"]
        if args.why:
            recipe["why"] = args.why
        line = f"{recipe['seconds']:.1f} s" + (f" on {recipe['world_size']} processes" if recipe["world_size"] > 1 else "")
        if held is not None:
            from training.evaluate import as_metrics, evaluate

            (row,) = evaluate({family: previewer}, held, progress=False)
            previewer.meta["metrics"] = as_metrics(row, held)
            line += (f", held-out PSNR {row.clean['psnr']:.2f} dB clean / {row.noised['psnr']:.2f} dB noised on "
                     f"{len(held.clean)} {args.eval_tile}² tiles of {args.eval_images}, {row.ms:.2f} ms per 64² latent")
            if previewer.scale > 1:
                from training.full_res import full_res_metrics

                full = previewer.meta["metrics"]["full_res"] = full_res_metrics(previewer, teacher, held)
                line += (f"; pooled {full['pooled']['clean']['psnr']:.2f} dB, ceiling of latent-res previews "
                         f"{full['ceiling']['clean']['psnr']:.2f} dB, teacher {full['ceiling']['teacher_ms']:.0f} ms")
        if not world.main:
            continue
        path = save(previewer, paths[family])
        print(f"wrote {path} ({args.space} {family} {previewer.args}, {line})")
    return 0
