"""The weight card: what a previewer's weight file says about it, typed.

A weight file's metadata (previewers/models/weightfile.py) is one WeightCard as JSON, and a previewer in memory
carries its card's dict form as `meta` (what its file, its fitter or its maker recorded; fitters add to it before
saving). `from_dict` is the one reader and `to_dict` the one writer of that JSON, for the card and each of its
parts: every field is type-checked on reading, so a foreign or damaged file fails with a message naming the field,
and `from_dict(d).to_dict() == d` for every card this package writes (shipped files read back unchanged).

Field rules, the same for every part: a field without a default is required (written even when None); a field
defaulting to None is left out of the dict while None. WeightCard alone keeps keys it does not type, in `extra`.
"""

import types
import typing
from dataclasses import MISSING, dataclass, field, fields

FORMAT_VERSION = 1
FIRST_USE_IMAGES = "previewers/first_use/fit_images"  # where first-use fits take their held-out photos from


class Card:
    """Base of the card's dataclasses: the one checked dict conversion, in both directions."""

    @classmethod
    def from_dict(cls, data, where: str = "metadata"):
        """Read a JSON object; ValueError naming `where` (the file) and the field for anything of the wrong shape."""
        return _read(cls, data, where, "")

    @classmethod
    def upgraded(cls, data):
        """`data` in this part's current shape (a part whose shape changed reads its earlier shape here)."""
        return data

    def to_dict(self) -> dict:
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            elif value is not None or f.default is not None:
                out[f.name] = value.to_dict() if isinstance(value, Card) else value
        return out


@dataclass(frozen=True)
class Scores(Card):
    """One module's means over the held-out tiles."""
    psnr: float  # dB against the teacher's decode
    ssim: float | None = None  # 0..1
    ciede2000: float | None = None  # mean ΔE00 colour difference
    s: float | None = None  # noised scores: the noise level, z_s = (1 − s)·z + s·ε


@dataclass(frozen=True)
class Scored(Card):
    """Scores on clean latents and, where measured, on noised ones."""
    clean: Scores
    noised: Scores | None = None


@dataclass(frozen=True)
class Ceiling(Card):
    """The teacher's decode area-pooled to latent resolution and upscaled back: the best any upscaled
    latent-resolution preview can score, and the teacher's own cost."""
    clean: Scores
    teacher_ms: float  # the teacher's milliseconds per 64² latent, one CPU thread (day-one fits: the VAE's device)
    noised: Scores | None = None


@dataclass(frozen=True)
class FullRes(Card):
    """A full-resolution previewer beside the latent-resolution ones, on the same tiles (training/full_res.py)."""
    pooled: Scored  # its output area-pooled to latent resolution: its colours alone
    ceiling: Ceiling


@dataclass(frozen=True)
class HeldOutSet(Card):
    """What a previewer's metrics were measured on, never seen in its fit."""
    images: str  # the image folder
    image_count: int  # images scored
    tile: int  # side of each scored square, pixels
    count: int | None  # squares scored (None: every non-overlapping tile of every image)
    seed: int  # of the squares' placement and the noise
    only: list[str] | None = None  # the folder's files (or globs) scored, where not all of them

    @classmethod
    def upgraded(cls, data):
        if isinstance(data, dict) and "crops" in data:  # first-use fits before the one shape: photo names, crops, tile
            names = data.get("images") or []
            return {"images": FIRST_USE_IMAGES, "image_count": len(names), "tile": data.get("tile"),
                    "count": data["crops"], "seed": 0, "only": [f"{n}.jpg" for n in names]}
        return data


@dataclass(frozen=True)
class Metrics(Card):
    """A previewer's held-out scores against its teacher (training/evaluate.py as_metrics, first-use fits)."""
    clean: Scores
    noised: Scores | None = None
    ms_per_64x64: float | None = None  # median milliseconds per 1×C×64×64 preview, one CPU thread (day-one fits: the VAE's device)
    tiles: int | None = None  # squares scored
    held_out: HeldOutSet | None = None
    constant_colour: Scores | None = None  # first-use fits: the best constant colour, the floor a fit must beat
    full_res: FullRes | None = None  # previewers with output above latent resolution


@dataclass(frozen=True)
class WeightCard(Card):
    """A weight file's metadata: enough to rebuild the previewer (family, latent_channels, args) and to say what
    it is for and how good it is."""
    family: str  # a previewers.models.families builder ("taesd", "vae": previewers that have no weight file)
    latent_channels: int
    args: dict  # the family's constructor keyword arguments, as families.stored_args keeps them
    scale: int  # output pixels per latent pixel
    space: str | None = None  # the latent space fitted for: a shipped space, or a pipeline's convention name
    spaces: list[str] | None = None  # TAESD-family decoders: the shipped spaces their shape fits, when not one
    teacher: str | None = None  # the decoder it was fitted against
    teacher_space: dict | None = None  # how the teacher's latents relate to the denoiser's
    recipe: dict | None = None  # how it was fitted: method, data, training settings, result (a free-form record)
    metrics: Metrics | None = None
    extra: dict = field(default_factory=dict)  # keys it does not type (a factor table's tool, ...), kept as written

    @classmethod
    def from_dict(cls, data, where: str = "metadata"):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: latent-preview metadata is not a JSON object")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"{where}: unsupported weight file format version {version!r} "
                             f"(this version reads {FORMAT_VERSION})")
        return super().from_dict({k: v for k, v in data.items() if k != "format_version"}, where)

    @classmethod
    def of(cls, previewer, **changes) -> "WeightCard":
        """The card of a previewer in memory: its `meta` and `changes` over its own family, channels, args and
        scale (what `weightfile.save` writes)."""
        return cls.from_dict({**previewer.meta, **changes, "format_version": FORMAT_VERSION, "family": previewer.family,
                              "latent_channels": previewer.latent_channels, "args": getattr(previewer, "args", {}),
                              "scale": previewer.scale}, f"{previewer.family} previewer's meta")

    def to_dict(self) -> dict:
        return {"format_version": FORMAT_VERSION, **super().to_dict()}

    def space_label(self) -> str:
        """The space(s) it is for, for messages: "sd1", "sd3/flux1" (a TAESD decoder's shape fits both) or "?"."""
        return self.space or "/".join(self.spaces or ()) or "?"


def _read(cls, data, where: str, path: str):
    data = cls.upgraded(data)
    if not isinstance(data, dict):
        raise ValueError(f"{where}: latent-preview metadata {path.rstrip('.') or cls.__name__!r} is not a JSON object")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in fields(cls) if f.name != "extra"}
    unknown = [k for k in data if k not in known]
    if unknown and "extra" not in hints:
        raise ValueError(f"{where}: latent-preview metadata has an unknown key {path + unknown[0]!r}")
    values = {"extra": {k: data[k] for k in unknown}} if "extra" in hints else {}
    for name, f in known.items():
        if name in data:
            values[name] = _value(data[name], hints[name], where, path + name)
        elif f.default is MISSING and f.default_factory is MISSING:
            raise ValueError(f"{where}: latent-preview metadata lacks {path + name!r}")
    return cls(**values)


CHECKS = {int: lambda v: isinstance(v, int) and not isinstance(v, bool),
          float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          str: lambda v: isinstance(v, str),
          dict: lambda v: isinstance(v, dict),
          list[str]: lambda v: isinstance(v, list) and all(isinstance(s, str) for s in v)}


def _value(value, hint, where: str, path: str):
    """`value` checked against a field's type: a Card part, one of CHECKS, or either | None."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    (kind,) = (o for o in options if o is not type(None))
    if typing.get_origin(kind) is None and issubclass(kind, Card):
        return _read(kind, value, where, path + ".")
    if not CHECKS[kind](value):
        name = kind.__name__ if typing.get_origin(kind) is None else str(kind)
        raise ValueError(f"{where}: latent-preview metadata has {path} = {value!r}, expected {name}")
    return value
