"""The shared folder: teacher decoders, peer previewers, image sets and diffusers' test fixtures that the fits,
benchmarks and tests read in place and never copy into the project (models/teachers, models/peers, data/train,
data/kodak24, diffusers-tests).

It is ../shared beside the checkout, or the folder $LATENT_PREVIEW_SHARED names (a machine where the checkout's
parent is not writable, or another layout).
"""

import os
from pathlib import Path

SHARED = Path(os.environ.get("LATENT_PREVIEW_SHARED") or Path(__file__).resolve().parents[2] / "shared")
