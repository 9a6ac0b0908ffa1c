"""The real decoder a previewer imitates (and the encoder that makes its training latents).

A `Teacher` maps images (B, 3, H, W) in [0, 1] to latents (B, C, H/s, W/s) in the denoiser's
convention ("model space", DESIGN.md, "Latent spaces") and back, whatever model is behind it:
- a TAESD-family file pair (already works in model space),
- a diffusers VAE (folder, pipeline folder, single-file checkpoint or in-memory object), whose
  raw latent z is mapped to model space with the conventions in its own config:
  AutoencoderKL/AutoencoderTiny (z - shift) * scale, AutoencoderKLFlux2 the BatchNorm-normalised
  patchified latent, unpatchified back to C channels at H/s.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import diffusers
import torch

from previewers.models import taesd
from previewers.pipelines.latents import bind_vae

SCALE_SHIFT_CLASSES = (diffusers.AutoencoderKL, diffusers.AutoencoderTiny)
BATCHNORM_CLASSES = (diffusers.AutoencoderKLFlux2,)
SUPPORTED = ", ".join(c.__name__ for c in SCALE_SHIFT_CLASSES + BATCHNORM_CLASSES)
SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


@dataclass(eq=False)
class Teacher:
    """A decoder (and maybe encoder) working in a latent space's denoiser convention.

    `encoder`/`decoder` are the raw maps on float32 tensors on `device`: images in [0, 1] →
    model-space latents, and model-space latents → RGB roughly in [0, 1] (unclamped).
    `space_info` says how model-space latents relate to the model (JSON-serialisable).
    """

    name: str
    latent_channels: int
    scale_factor: int  # pixels per latent along each side
    space_info: dict
    decoder: Callable[[torch.Tensor], torch.Tensor]
    encoder: Callable[[torch.Tensor], torch.Tensor] | None
    device: torch.device

    @property
    def has_encoder(self) -> bool:
        return self.encoder is not None

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1], H and W multiples of scale_factor → (B, C, H/s, W/s) float32 model-space latents."""
        if self.encoder is None:
            raise ValueError(f"teacher {self.name!r} has no encoder: pass one (e.g. --encoder FILE) to make latents from images")
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"teacher {self.name!r} encodes (B, 3, H, W) images, got shape {tuple(images.shape)}")
        if images.shape[-2] % self.scale_factor or images.shape[-1] % self.scale_factor:
            raise ValueError(f"teacher {self.name!r}: image height and width must be multiples of "
                             f"{self.scale_factor}, got {tuple(images.shape[-2:])}")
        return self.encoder(images.to(self.device, torch.float32))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) model-space latents, any float dtype → (B, 3, h·s, w·s) float32 RGB in [0, 1]."""
        if latents.ndim != 4 or latents.shape[1] != self.latent_channels:
            raise ValueError(f"teacher {self.name!r} decodes (B, {self.latent_channels}, h, w) latents, "
                             f"got shape {tuple(latents.shape)}")
        return self.decoder(latents.to(self.device, torch.float32)).clamp(0, 1)

    @classmethod
    def from_vae(cls, vae, name: str | None = None) -> "Teacher":
        """Wrap an in-memory diffusers VAE; it is switched to float32 eval mode in place."""
        if not isinstance(vae, SCALE_SHIFT_CLASSES + BATCHNORM_CLASSES):
            raise ValueError(f"{type(vae).__name__} is not a supported VAE (supported: {SUPPORTED})")
        vae = vae.to(torch.float32).eval().requires_grad_(False)
        config = vae.config
        # the SD3/FLUX.1 pipelines' (z - shift) · scale, SDXL's per-channel statistics when the config has them,
        # or FLUX.2's BatchNorm statistics: as a pipeline holding this VAE would normalise (previewers/pipelines/conventions.py)
        latents = bind_vae(vae)
        factor = latents.factor
        space_info = batchnorm_space(vae) if isinstance(vae, BATCHNORM_CLASSES) else scale_shift_space(vae)
        return cls(
            name=name or type(vae).__name__,
            latent_channels=int(config.latent_channels),
            scale_factor=factor,
            space_info=space_info,
            decoder=lambda x: latents.decode_unclamped(x[:, None])[:, 0],
            encoder=lambda images: latents.encode(images)[:, 0],
            device=vae.device,
        )


def scale_shift_space(vae) -> dict:
    """Model space = (z - shift) * scale, per channel (B, C, h, w).

    shift/scale come from vae.config: scaling_factor and shift_factor (SD, SDXL, SD3, FLUX.1),
    or latents_mean/latents_std when the config has them (the SDXL pipeline then uses
    (z - mean) * scaling_factor / std).
    """
    config = vae.config
    info = {"convention": "scale_shift", "scaling_factor": float(config.scaling_factor),
            "shift_factor": float(getattr(config, "shift_factor", None) or 0.0)}
    mean, std = getattr(config, "latents_mean", None), getattr(config, "latents_std", None)
    if mean is not None and std is not None:
        info.update(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])
    return info


def batchnorm_space(vae) -> dict:
    """FLUX.2: model space = the latent the transformer holds, unpatchified.

    As in Flux2Pipeline, z (B, C, h, w) is patchified to (B, C·4, h/2, w/2) (channel index
    c·4 + dy·2 + dx, i.e. pixel_unshuffle), normalised with vae.bn's running statistics,
    (x - running_mean) / sqrt(running_var + batch_norm_eps), and here unpatchified back to
    (B, C, h, w) so previewers see a spatial latent at H/s (previewers/pipelines/conventions.py).
    """
    patch = vae.config.patch_size
    p = patch if isinstance(patch, int) else patch[0]
    if (patch if isinstance(patch, int) else tuple(patch)) not in (2, (2, 2)):
        raise ValueError(f"{type(vae).__name__}: patch_size {patch} is not the 2x2 the FLUX.2 pipelines patchify with")
    return {"convention": "batchnorm", "patch_size": p, "batch_norm_eps": float(vae.config.batch_norm_eps),
            "statistics": "vae.bn running_mean / running_var"}


def load_teacher(decoder, encoder=None, vae_config=None, device="cpu") -> Teacher:
    """A Teacher from a TAESD decoder file, a diffusers VAE or pipeline folder, or a single-file VAE checkpoint.

    decoder: TAESD-family decoder (.safetensors/.pth; its `_encoder` sibling is used when
    present and `encoder` is None), diffusers VAE folder (config.json + weights) or pipeline
    folder with vae/, or a single-file AutoencoderKL checkpoint (.safetensors/.ckpt, needs
    `vae_config`, a diffusers VAE config folder, since nothing is downloaded).
    """
    path = Path(decoder)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder")
    if path.is_dir():
        if encoder is not None:
            raise ValueError(f"{path}: a diffusers VAE has its own encoder; a separate encoder is for TAESD decoders only")
        folder = vae_folder(path)
        vae_class = diffusers_class(folder)
        try:
            vae = vae_class.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as e:
            raise ValueError(f"{folder}: could not load the {vae_class.__name__} weights ({e})") from e
        name = path.resolve().name
        return Teacher.from_vae(vae.to(device), name=name)
    try:
        model, role = taesd.load_model_and_role(path)
    except ValueError as e:
        if path.suffix not in SINGLE_FILE_SUFFIXES:
            raise
        return single_file_teacher(path, vae_config, device, reason=str(e).removeprefix(f"{path}: "))
    if role != "decoder":
        raise ValueError(f"{path}: is a TAESD encoder; pass the decoder file as the teacher")
    channels = model[1].in_channels
    if encoder is None:
        sibling = path.with_name(path.name.replace("_decoder", "_encoder"))
        encoder = sibling if "_decoder" in path.name and sibling.is_file() else None
    encoder_model = taesd_encoder(encoder, channels) if encoder is not None else None
    if encoder_model is not None:
        encoder_model = encoder_model.to(device).requires_grad_(False)
    return Teacher(
        name=path.stem.replace("_decoder", ""),
        latent_channels=channels,
        scale_factor=2 ** sum(isinstance(m, torch.nn.Upsample) for m in model),
        space_info={"convention": "identity"},  # TAESD nets take and give model-space latents
        decoder=model.to(device).requires_grad_(False),
        encoder=encoder_model,
        device=torch.device(device),
    )


def taesd_encoder(path, channels: int) -> torch.nn.Sequential:
    """The TAESD encoder in `path`, checked to be an encoder for `channels`-channel latents."""
    model, role = taesd.load_model_and_role(path)
    if role != "encoder":
        raise ValueError(f"{path}: is a TAESD {role}, not an encoder")
    if model[-1].out_channels != channels:
        raise ValueError(f"{path}: encoder makes {model[-1].out_channels}-channel latents, the decoder takes {channels}")
    return model


def vae_folder(path: Path) -> Path:
    """The diffusers VAE folder: `path` itself, or the vae/ subfolder of a pipeline folder."""
    for folder in (path, path / "vae"):
        if (folder / "config.json").is_file():
            return folder
    raise ValueError(f"{path}: folder has no config.json (nor vae/config.json); expected a diffusers VAE or pipeline folder")


def diffusers_class(folder: Path):
    """The supported diffusers VAE class named by folder/config.json's `_class_name`."""
    try:
        name = json.loads((folder / "config.json").read_text()).get("_class_name")
    except (OSError, ValueError, AttributeError) as e:
        raise ValueError(f"{folder / 'config.json'}: not a readable diffusers config ({e})") from e
    vae_class = getattr(diffusers, name, None) if isinstance(name, str) else None
    if vae_class is None:
        raise ValueError(f"{folder / 'config.json'}: unknown class {name!r} (not in diffusers {diffusers.__version__})")
    if vae_class not in SCALE_SHIFT_CLASSES + BATCHNORM_CLASSES:
        raise ValueError(f"{folder / 'config.json'}: {name} is not a supported VAE (supported: {SUPPORTED})")
    return vae_class


def single_file_teacher(path: Path, vae_config, device, reason: str) -> Teacher:
    """An AutoencoderKL from an original-format (or diffusers-format) single checkpoint file."""
    if vae_config is None:
        raise ValueError(f"{path}: not a TAESD file ({reason}); loading it as a single-file VAE checkpoint "
                         "offline needs --vae-config DIR (a diffusers VAE config folder)")
    folder = vae_folder(Path(vae_config))
    if diffusers_class(folder) is not diffusers.AutoencoderKL:
        raise ValueError(f"{folder}: single-file loading supports AutoencoderKL configs only")
    try:
        vae = diffusers.AutoencoderKL.from_single_file(str(path), config=str(folder), local_files_only=True)
    except Exception as e:  # diffusers raises many types here; the user needs one line naming the file
        raise ValueError(f"{path}: could not load as a single-file AutoencoderKL with config {folder} ({e})") from e
    return Teacher.from_vae(vae.to(device), name=path.stem)
