"""Fixtures shared by the test modules; the builders they use (tiny pipelines, VAEs, images) are in builders.py.

Tests marked `slow` (torchrun, Adam fits, fits on the shared teachers, whole-pipeline sweeps) are left out of the
quick run, `python -m pytest -m "not slow"`; CI runs everything.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from training.shared_folder import SHARED


@pytest.fixture
def shared() -> Path:
    """The shared folder (training/shared_folder.py: teachers, peers, data); tests needing it skip without it."""
    if not (SHARED / "models" / "teachers").is_dir():
        pytest.skip(f"needs the shared folder (looked in {SHARED})")
    return SHARED


@pytest.fixture
def photos(tmp_path) -> Path:
    """A folder of three random-noise photos (300x200, 160x240, 1200x900) and a file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, size in enumerate([(300, 200), (160, 240), (1200, 900)]):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and far faster when other work shares the CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
