"""Shipped previewers: the `weights/` folder, by registry name `<space>-<family>[-<variant>]`; and `load`,
which also takes any weight file, a TAESD-family decoder file or a diffusers AutoencoderTiny."""

from pathlib import Path

import torch

from previewers.models import taesd
from previewers.models.families import Previewer
from previewers.models.weightfile import METADATA_KEY, is_weight_file, load_file, read_header

_HERE = Path(__file__).resolve().parents[1]  # the package folder: weights/ sits here in a wheel, one up in a checkout
STATE_DICT_SUFFIXES = (".pth", ".pt")  # torch state dicts: TAESD's own format for taef2


def weights_dir() -> Path:
    """`previewers/weights` inside an installed wheel, else `weights/` of the source checkout."""
    for candidate in (_HERE / "weights", _HERE.parent / "weights"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"no weights folder found (looked in {_HERE / 'weights'} and {_HERE.parent / 'weights'})")


def available() -> list[str]:
    """Registry names of the shipped previewers, sorted."""
    return sorted(p.stem for p in weights_dir().glob("*.safetensors"))


def load(name_or_path) -> Previewer:
    """A shipped previewer by registry name; a path to a weight file (ours, or a TAESD-family decoder
    as .safetensors or .pth); or a diffusers AutoencoderTiny object (its decoder)."""
    if isinstance(name_or_path, torch.nn.Module):
        if type(name_or_path).__name__ != "AutoencoderTiny":
            raise ValueError(f"a {type(name_or_path).__name__} is not a previewer: pass a Previewer, a diffusers "
                             "AutoencoderTiny, a registry name or a weight file")
        return taesd.from_autoencoder_tiny(name_or_path)
    path = Path(name_or_path)
    if path.suffix in STATE_DICT_SUFFIXES:
        return taesd.load_previewer(path)
    if path.suffix == ".safetensors" or path.exists():
        header = read_header(path)
        if is_weight_file(header):
            return load_file(path)
        if not taesd.sequential_keys(k for k in header if k != "__metadata__"):
            raise ValueError(f"{path}: a safetensors file, but neither a latent-preview weight file (no "
                             f"{METADATA_KEY!r} metadata) nor a TAESD-family decoder (keys are not nn.Sequential indices)")
        return taesd.load_previewer(path)
    names = available()
    if str(name_or_path) not in names:
        raise ValueError(f"unknown previewer {name_or_path!r}: not a file, and not one of: {', '.join(names)}")
    return load_file(weights_dir() / f"{name_or_path}.safetensors")
