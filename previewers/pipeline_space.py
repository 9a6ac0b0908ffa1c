"""Which latent convention a diffusers pipeline uses, and whether shipped previewers fit its VAE.

Works on the pipeline object only (class name, `vae.config`), so it needs no diffusers import of
its own; the conventions themselves are in previewers/conventions.py.
"""

import warnings

from .conventions import CLASS_PREFIXES, CONVENTIONS, Convention, detect_family, get_convention
from .spaces import SPACES


def resolve_convention(pipe, space: str | None = None, convention=None) -> Convention:
    """The convention `pipe` works in: the one stated (a family name or a Convention, or `space`, a
    shipped space name), else the one of its class; ValueError saying what to pass when unknown."""
    if convention is not None:
        return get_convention(convention)
    if space is not None:
        if space not in SPACES:
            raise ValueError(f"unknown latent space {space!r}; known: {', '.join(SPACES)} "
                             f"(for other latents pass convention=, one of {', '.join(CONVENTIONS)})")
        return CONVENTIONS[space]
    family = detect_family(pipe)
    if family is None:
        known = ", ".join(f"{prefix}*" for prefix, f in CLASS_PREFIXES if f is not None)
        raise ValueError(
            f"cannot tell which latent convention {type(pipe).__name__} works in (known pipelines: {known}). "
            f"If its latents are in one of the spaces {', '.join(SPACES)}, say which and give a previewer for it, "
            f"e.g. PreviewCallback.for_pipeline(pipe, space='sd1', previewer='sd1-affine'); if its VAE decodes "
            f"them as a known family's pipeline does, name that family, e.g. convention='wan' (one of "
            f"{', '.join(CONVENTIONS)}), and a previewer is fitted against pipe.vae"
        )
    return CONVENTIONS[family]


def latent_channels(pipe) -> int:
    """Channels of the spatial latent the previewer sees: the VAE's latent channels."""
    vae = getattr(pipe, "vae", None)
    if vae is None:
        raise ValueError(f"{type(pipe).__name__} has no vae; cannot tell its latent channels")
    config = vae.config
    return int(getattr(config, "latent_channels", None) or config.z_dim)


def vae_mismatch(pipe, space: str) -> str | None:
    """Why `pipe.vae` does not scale its latents as `space`'s shipped previewers assume, or None when it does."""
    expected = SPACES[space]
    if latent_channels(pipe) != expected.channels:
        return f"{type(pipe).__name__}'s VAE makes {latent_channels(pipe)}-channel latents, {space} has {expected.channels}"
    if expected.scaling_factor is None:  # FLUX.2: BatchNorm statistics, nothing in the config to compare
        return None
    config = pipe.vae.config
    scale = config.get("scaling_factor")
    shift = config.get("shift_factor") or 0.0
    if scale is None or abs(scale - expected.scaling_factor) > 1e-4 or abs(shift - expected.shift_factor) > 1e-4:
        return (f"{type(pipe).__name__}'s VAE has scaling_factor={scale}, shift_factor={shift}, but {space} previewers "
                f"expect {expected.scaling_factor}, {expected.shift_factor}")
    return None


def check_vae_convention(pipe, space: str) -> None:
    """Warn when the pipeline's VAE scales its latents unlike the space's shipped previewers assume."""
    reason = vae_mismatch(pipe, space)
    if reason is not None:
        warnings.warn(f"{reason}: previews may be off; pass a previewer fitted for this VAE (latent-preview fit)",
                      stacklevel=3)
