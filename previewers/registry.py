"""Shipped previewers: the `weights/` folder, by registry name `<space>-<family>[-<variant>]`."""

from pathlib import Path

from .families import Previewer
from .weightfile import load_file

_HERE = Path(__file__).resolve().parent


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
    """A shipped previewer by registry name, or any weight file by path."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists():
        return load_file(path)
    names = available()
    if str(name_or_path) not in names:
        raise ValueError(f"unknown previewer {name_or_path!r}: not a file, and not one of: {', '.join(names)}")
    return load_file(weights_dir() / f"{name_or_path}.safetensors")
