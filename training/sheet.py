"""Comparison sheet: teacher | each previewer on the same held-out tiles, one labelled PNG.

Rows are tiles (clean, then the same tiles noised), columns the teacher's decode followed by each
module's preview, nearest-upscaled to the teacher's size so pixel structure stays visible.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from previewers.images import save_atomic, to_uint8

LABEL = 22  # pixels of label band above each column and left of each row


@torch.inference_mode()
def write_sheet(path, modules: dict, data, count: int = 3) -> Path:
    """Write the sheet for {name: module} on `count` tiles of held-out `data` (training/evaluate.HeldOut)."""
    n = len(data.clean)
    picks = [round(k * (n - 1) / max(1, count - 1)) for k in range(min(count, n))]
    rows = [("clean", data.clean[picks], data.clean_rgb[picks]), ("noised", data.noised[picks], data.noised_rgb[picks])]
    side = data.clean_rgb.shape[-1]
    names = ["teacher", *modules]
    sheet = Image.new("RGB", (LABEL + len(names) * side, LABEL + 2 * len(picks) * side), "white")
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=14)
    for col, name in enumerate(names):
        draw.text((LABEL + col * side + 4, 3), name, fill="black", font=font)
    y = LABEL
    for label, latents, rgb in rows:
        previews = [F.interpolate(m(latents).float(), size=rgb.shape[-2:], mode="nearest") for m in modules.values()]
        columns = [rgb.float(), *previews]
        for i in range(len(picks)):
            draw.text((3, y + 4), label[0], fill="black", font=font)  # "c" clean / "n" noised
            for col, images in enumerate(columns):
                sheet.paste(Image.fromarray(to_uint8(images[i:i + 1])[0].cpu().numpy()), (LABEL + col * side, y))
            y += side
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_atomic(sheet, path)
