"""Self-describing weight files: safetensors whose string metadata carries the whole config.

Metadata key "latent_preview" holds one JSON object, the file's weight card (previewers/models/card.py):
format_version, family, latent_channels, args (the family's constructor arguments), scale, and what the fitter
recorded (space, teacher, recipe, metrics, ...). One file rebuilds the model with no other input.
"""

import json
from pathlib import Path

from safetensors import SafetensorError
from safetensors.torch import load_file as read_tensors
from safetensors.torch import save_file

from previewers.files import atomic_write
from previewers.models.card import WeightCard
from previewers.models.families import FAMILIES, Previewer, build

METADATA_KEY = "latent_preview"


def save(previewer: Previewer, path, **meta) -> Path:
    """Write `previewer` with its config and `meta` (merged over previewer.meta) to `path`."""
    if previewer.family not in FAMILIES:  # e.g. "taesd": load_file could not rebuild it
        raise ValueError(f"a {previewer.family} previewer has no latent-preview weight file; keep its own file "
                         "(previewers.load reads it)")
    path = Path(path)
    config = WeightCard.of(previewer, **meta).to_dict()  # checked before anything is written
    tensors = {k: v.detach().contiguous().cpu() for k, v in previewer.state_dict().items()}
    with atomic_write(path) as tmp:  # never a half-written weight file under the real name
        save_file(tensors, tmp, metadata={METADATA_KEY: json.dumps(config, sort_keys=True)})
    previewer.meta = config
    return path


def read_card(path) -> WeightCard:
    """The weight card of a weight file, without loading tensors. ValueError if it is not ours."""
    path = Path(path)
    header = read_header(path)
    if not is_weight_file(header):
        raise ValueError(f"{path}: a safetensors file, but not a latent-preview weight file (no {METADATA_KEY!r} metadata)")
    try:
        config = json.loads(header["__metadata__"][METADATA_KEY])
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: corrupt latent-preview metadata ({e})") from None
    return WeightCard.from_dict(config, str(path))


def read_header(path) -> dict:
    """The JSON header of a safetensors file (tensor names → dtype/shape/offsets, and "__metadata__"),
    without loading tensors. ValueError if it is not a safetensors file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weight file not found: {path}")
    try:
        with open(path, "rb") as f:
            return _safetensors_header(f, path)
    except OSError as e:
        raise ValueError(f"{path}: cannot read weight file ({e})") from None


def is_weight_file(header: dict) -> bool:
    """Whether a safetensors header (read_header) is a latent-preview weight file's."""
    return METADATA_KEY in (header.get("__metadata__") or {})


def _safetensors_header(f, path: Path) -> dict:
    # safetensors layout: 8-byte little-endian header length, then a JSON header.
    head = f.read(8)
    if len(head) < 8:
        raise ValueError(f"{path}: not a safetensors file (empty or truncated header)")
    n = int.from_bytes(head, "little")
    if n > 100_000_000:
        raise ValueError(f"{path}: not a safetensors file (implausible header length {n})")
    raw = f.read(n)
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise ValueError(f"{path}: not a safetensors file (header is not a JSON object)")
    return header


def load_file(path) -> Previewer:
    """Rebuild a previewer from one weight file; ValueError for anything that is not a valid one."""
    path = Path(path)
    card = read_card(path)
    previewer = build(card.family, card.latent_channels, **card.args)
    try:
        tensors = read_tensors(path)
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path}: corrupt or truncated safetensors file ({e})") from None
    expected = previewer.state_dict()
    if set(tensors) != set(expected):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(f"{path}: tensors do not match family {card.family!r} (missing {missing}, unexpected {extra})")
    for name, t in tensors.items():
        if t.shape != expected[name].shape:
            raise ValueError(f"{path}: tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(expected[name].shape)}")
    dtype = next(iter(tensors.values())).dtype
    previewer.to(dtype).load_state_dict(tensors)
    previewer.meta = card.to_dict()
    return previewer.eval().requires_grad_(False)

