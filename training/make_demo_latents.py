"""Make previewers/cli/demo_latents.safetensors, the example latents `latent-preview demo` runs on.

Two public-domain photos that ship inside scikit-image (astronaut: NASA, public domain; coffee:
Rachel Michetti, CC0), centre-cropped to squares, resized to 512x512 and encoded by the taesd
encoder into SD 1.x latents (2, 4, 64, 64), stored as float16 (64 KiB).

    python -m training.make_demo_latents [--teachers ../shared/models/teachers]
"""

import argparse
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from training.shared_folder import SHARED
from training.teachers import load_teacher

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "previewers" / "cli" / "demo_latents.safetensors"
PIXELS = 512
IMAGES = {
    "astronaut": "scikit-image data.astronaut(): Eileen Collins, NASA, public domain",
    "coffee": "scikit-image data.coffee(): Rachel Michetti, CC0",
}


def square(array: np.ndarray, size: int) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, size, size) float in [0, 1], centre crop then Lanczos resize."""
    h, w = array.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = Image.fromarray(array[top:top + side, left:left + side]).resize((size, size), Image.LANCZOS)
    return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255


def main(argv=None) -> int:
    import skimage.data

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teachers", type=Path, default=SHARED / "models" / "teachers",
                        help="folder with taesd_decoder.safetensors and taesd_encoder.safetensors")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    teacher = load_teacher(args.teachers / "taesd_decoder.safetensors")
    images = torch.stack([square(getattr(skimage.data, name)(), PIXELS) for name in IMAGES])
    latents = teacher.encode(images).half()  # (2, 4, 64, 64), SD 1.x denoiser convention
    metadata = {
        "space": "sd1",
        "teacher": "taesd",
        "names": ",".join(IMAGES),
        "sources": "; ".join(IMAGES.values()),
        "made_by": "training/make_demo_latents.py",
    }
    save_file({"latents": latents.contiguous()}, args.out, metadata=metadata)
    print(f"wrote {args.out}: {tuple(latents.shape)} {latents.dtype}, {args.out.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
