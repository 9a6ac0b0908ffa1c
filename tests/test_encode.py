"""encode: an image → a latents file that decode and eval read."""

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from builders import tiny_vae_folder  # noqa: E402

from previewers.cli import main  # noqa: E402
from previewers.outputs.latents_file import read_latents  # noqa: E402
from training.teachers import load_teacher  # noqa: E402


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".npy"])
def test_encode_writes_the_teachers_latents(tmp_path, capsys, suffix):
    vae = tiny_vae_folder(tmp_path / "vae")  # scale factor 2
    rgb = np.random.default_rng(0).integers(0, 256, (11, 14, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    out = tmp_path / f"lat{suffix}"
    assert main(["encode", str(tmp_path / "photo.png"), "--teacher", str(vae), "--out", str(out), "--device", "cpu"]) == 0
    latents = read_latents(out)
    assert latents.shape == (1, 4, 5, 7)  # 10x14 centre crop at scale 2
    crop = torch.from_numpy(rgb[0:10, 0:14]).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(latents, load_teacher(str(vae)).encode(crop))
    assert "wrote" in capsys.readouterr().out
    assert main(["decode", str(out), "--previewer", "sd1-affine", "--out", str(tmp_path / "p.png")]) == 0


def test_encode_errors_are_one_line(tmp_path, capsys):
    vae = tiny_vae_folder(tmp_path / "vae")
    assert main(["encode", str(tmp_path / "none.png"), "--teacher", str(vae), "--out", str(tmp_path / "x.pt")]) == 2
    assert "image not found" in capsys.readouterr().err
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert main(["encode", str(tmp_path / "a.png"), "--teacher", str(vae), "--out", str(tmp_path / "x.png")]) == 2
    assert "unsupported latents file type '.png'" in capsys.readouterr().err
