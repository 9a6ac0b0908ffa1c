"""latent-preview: fast previews of diffusion latents.

    import previewers
    previewers.available()              # shipped previewer names
    p = previewers.load("sd1-affine")   # or a path to a .safetensors weight file
    rgb = p(latents)                    # (B, C, h, w) → (B, 3, h·s, w·s) in [0, 1]
"""

from previewers.models.families import FAMILIES, Previewer, build
from previewers.models.registry import available, load, weights_dir
from previewers.models.spaces import SPACES
from previewers.models.weightfile import save

__version__ = "0.1.0"


def __getattr__(name):
    # The callback pulls in more machinery (threads, image writers); load it on first use.
    if name == "PreviewCallback":
        from previewers.pipelines.callback import PreviewCallback

        return PreviewCallback
    raise AttributeError(f"module 'previewers' has no attribute {name!r}")


__all__ = ["FAMILIES", "Previewer", "PreviewCallback", "SPACES", "available", "build", "load", "save", "weights_dir"]
