HELP = ("List or clear what latent-preview keeps between runs (cached training pairs and held-out decodes, "
        "previewers fitted on first use) under $LATENT_PREVIEW_CACHE, else ~/.cache/latent-preview.")


def add_arguments(parser):
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="show each cache folder with its size")
    action.add_argument("--clear", action="store_true", help="delete every cache folder (asks nothing) and say what went")


def human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000


def run(args) -> int:
    import shutil

    from previewers.first_use.cache import cache_root, folder_size
    from previewers.plural import plural

    root = cache_root()
    entries = sorted(root.iterdir()) if root.is_dir() else []
    if not entries:
        print(f"{root}: no cache")
        return 0
    total = 0
    for entry in entries:
        size, files = folder_size(entry) if entry.is_dir() else (entry.stat().st_size, 1)
        total += size
        if args.clear:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            print(f"removed {entry} ({human(size)}, {plural(files, 'file')})")
        else:
            print(f"{entry}  {human(size)}  {plural(files, 'file')}")
    print(f"{'freed' if args.clear else 'total'} {human(total)} in {root}")
    return 0
