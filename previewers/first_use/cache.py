"""Where latent-preview caches what it computes, and the hashes that name its entries.

The cache lives in $LATENT_PREVIEW_CACHE, else $XDG_CACHE_HOME/latent-preview (~/.cache/latent-preview). Training
pairs live under pairs/, previewers fitted on first use under fitted/. An entry is named by a hash of everything
that determines it, so a changed input is a new entry, never a stale hit.
"""

import hashlib
import json
import os
from pathlib import Path

import torch


def cache_root() -> Path:
    root = os.environ.get("LATENT_PREVIEW_CACHE")
    if not root:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latent-preview"
    return Path(root)


def folder_size(folder: Path) -> tuple[int, int]:
    """(bytes, files) of everything under `folder`."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files), len(files)


def key_digest(key: dict) -> str:
    """A short stable name for a JSON-serialisable cache key: 20 hex digits of the sha256 of its sorted JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def weights_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's class name and its parameters and buffers (names, shapes, dtypes, bytes), read on the CPU:
    names a VAE's weights in first-use cache keys and a fit's starting weights in checkpoint keys."""
    digest = hashlib.sha256(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
