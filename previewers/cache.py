"""The cache root: training pairs (`pairs/`), previewers fitted on first use and anything else the tools
keep between runs, in one folder: $LATENT_PREVIEW_CACHE, else $XDG_CACHE_HOME/latent-preview, else
~/.cache/latent-preview."""

import os
from pathlib import Path


def cache_root() -> Path:
    root = os.environ.get("LATENT_PREVIEW_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latent-preview"
    return Path(root)


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) of everything under `folder`."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)
