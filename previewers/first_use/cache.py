"""Where latent-preview caches what it computes: $LATENT_PREVIEW_CACHE, else $XDG_CACHE_HOME/latent-preview
(~/.cache/latent-preview). Training pairs live under pairs/, previewers fitted on first use under fitted/."""

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
