"""The per-run sheet.png labels each tile with its step."""

import numpy as np
import torch
from PIL import Image

from previewers import PreviewCallback
from previewers.models.families import affine
from previewers.outputs.writer import GAP


def test_run_sheet_labels_every_tile_with_its_step(tmp_path):
    p = affine(4)
    with torch.no_grad():
        p.body.weight.zero_()
        p.body.bias.fill_(1.0)  # white previews: the only dark pixels are labels
    cb = PreviewCallback(p, out_dir=tmp_path, size=64, every=2)
    for step in range(6):
        cb(None, step, 1.0, {"latents": torch.zeros(1, 4, 8, 8)})
    cb.close()
    sheet = np.asarray(Image.open(tmp_path / "sheet.png").convert("L"))
    assert sheet.shape == (2 * 64 + GAP, 2 * 64 + GAP)  # steps 0, 2, 4 on a 2x2 grid
    for row, col in [(0, 0), (0, 1), (1, 0)]:
        tile = sheet[row * (64 + GAP):row * (64 + GAP) + 64, col * (64 + GAP):col * (64 + GAP) + 64]
        assert (tile[:12, :30] < 128).mean() > 0.3  # a dark caption box in the corner
        assert (tile[32:] == 255).all()  # the preview itself is untouched below it
    with Image.open(tmp_path / "preview.gif") as gif:  # the animation shows the previews as they are
        assert (np.asarray(gif.convert("L")) == 255).all()
