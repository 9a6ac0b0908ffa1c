"""Saved latents: a .safetensors or .pt file holding one tensor, or a .npy array."""

import pickle
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from previewers.plural import plural

SUFFIXES = (".safetensors", ".pt", ".pth", ".npy")


def read_latents(path) -> torch.Tensor:
    """The one tensor stored in `path`, as saved (any shape, any float dtype)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latents file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            tensors = list(load_file(path).values())
        elif path.suffix in (".pt", ".pth"):
            obj = torch.load(path, map_location="cpu", weights_only=True)
            tensors = list(obj.values()) if isinstance(obj, dict) else [obj]
        elif path.suffix == ".npy":
            tensors = [torch.from_numpy(np.load(path, allow_pickle=False))]
        else:
            raise ValueError(f"{path}: unsupported latents file type {path.suffix!r} (use {', '.join(SUFFIXES)})")
    except pickle.UnpicklingError:  # torch's text for this is a page on weights_only; one sentence says it
        raise ValueError(f"{path}: cannot read latents: the file holds Python objects, not only tensors "
                         "(save a tensor with torch.save(tensor, path) or safetensors)") from None
    except (SafetensorError, OSError, RuntimeError, EOFError) as e:
        raise ValueError(f"{path}: cannot read latents ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    except Exception as e:  # torch.load's unpickler raises an open set of types for foreign or corrupt files
        if isinstance(e, ValueError):
            raise
        raise ValueError(f"{path}: cannot read latents ({type(e).__name__}: {e})") from None
    if len(tensors) != 1 or not isinstance(tensors[0], torch.Tensor):
        raise ValueError(f"{path}: expected exactly one tensor, found {plural(len(tensors), 'entry', 'entries')}")
    latents = tensors[0]
    if not latents.is_floating_point():
        raise ValueError(f"{path}: latents must be floating point, got {latents.dtype}")
    return latents


def write_latents(latents: torch.Tensor, path, **metadata: str) -> Path:
    """Write one tensor as `read_latents` reads it, by suffix; safetensors files keep `metadata`."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported latents file type {path.suffix or '(none)'!r} (use {', '.join(SUFFIXES)})")
    path.parent.mkdir(parents=True, exist_ok=True)
    latents = latents.detach().cpu().contiguous()
    if path.suffix == ".safetensors":
        save_file({"latents": latents}, path, metadata=metadata or None)
    elif path.suffix == ".npy":
        np.save(path, latents.numpy())
    else:
        torch.save(latents, path)
    return path
