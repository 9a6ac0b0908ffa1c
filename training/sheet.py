"""Comparison sheet: teacher | each previewer on the same held-out tiles, one labelled PNG.

Rows are tiles (clean, then the same tiles noised), columns the teacher's decode followed by each
module's preview, nearest-upscaled to the teacher's size so pixel structure stays visible.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from previewers.outputs.images import save_atomic, to_uint8

LABEL = 22  # pixels of the label band above each column
ROWS = ("clean", "noised")
FONT = ImageFont.load_default(size=14)
LEFT = 8 + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(r, font=FONT)) for r in ROWS)  # row label band


@torch.inference_mode()
def write_sheet(path, modules: dict, data, count: int = 3) -> Path:
    """Write the sheet for {name: module} on `count` tiles of held-out `data` (training/evaluate.HeldOut)."""
    n = len(data.clean)
    picks = [round(k * (n - 1) / max(1, count - 1)) for k in range(min(count, n))]
    rows = zip(ROWS, (data.clean[picks], data.noised[picks]), (data.clean_rgb[picks], data.noised_rgb[picks]))
    side = data.clean_rgb.shape[-1]
    names = ["teacher", *modules]
    left, font = LEFT, FONT
    sheet = Image.new("RGB", (left + len(names) * side, LABEL + 2 * len(picks) * side), "white")
    draw = ImageDraw.Draw(sheet)
    for col, name in enumerate(names):
        draw.text((left + col * side + 4, 3), name, fill="black", font=font)
    y = LABEL
    for label, latents, rgb in rows:
        previews = [F.interpolate(m(latents).float(), size=rgb.shape[-2:], mode="nearest") for m in modules.values()]
        columns = [rgb.float(), *previews]
        for i in range(len(picks)):
            draw.text((4, y + 4), label, fill="black", font=font)
            for col, images in enumerate(columns):
                sheet.paste(Image.fromarray(to_uint8(images[i:i + 1])[0].cpu().numpy()), (left + col * side, y))
            y += side
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_atomic(sheet, path)
