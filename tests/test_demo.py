import numpy as np
import pytest
import torch
from PIL import Image

import previewers.models.registry
from previewers import save
from previewers.cli.demo import PIXELS, STEPS, demo_latents
from previewers.models.families import affine
from previewers.outputs.writer import step_name

pytest.importorskip("diffusers")


def test_demo_latents_are_small_sd1_examples():
    latents, meta = demo_latents()
    assert latents.shape == (2, 4, 64, 64)
    assert meta["space"] == "sd1" and meta["teacher"] == "taesd" and "public domain" in meta["sources"]
    assert 0.5 < latents.std() < 2  # SD 1.x denoiser-convention latents, not raw VAE ones (×5.5)


def test_demo_writes_every_step_animations_and_sheet_offline(tmp_path, monkeypatch, capsys):
    # A weights folder with one sd1 previewer stands in for whatever is shipped.
    weights = tmp_path / "weights"
    previewer = affine(4)
    torch.nn.init.normal_(previewer.body.weight, std=0.2)
    save(previewer, weights / "sd1-affine.safetensors", space="sd1")
    monkeypatch.setattr(previewers.models.registry, "weights_dir", lambda: weights)
    from previewers.cli import main

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "simulated sampling (diffusers EulerDiscreteScheduler" in printed and str(out / "sheet.png") in printed
    for folder in ("sd1-affine", "sd1-affine-latents"):
        steps = sorted(p.name for p in (out / folder).glob("step_*.png"))
        assert steps == sorted(step_name(s, i) for s in range(STEPS) for i in range(2))
        with Image.open(out / folder / "preview.gif") as gif:
            assert gif.is_animated and gif.size == (2 * PIXELS + 2, PIXELS)
        assert (out / folder / "sheet.png").is_file()
    assert (out / "sheet.png").is_file()

    # The simulated run ends at the example latents: the last x0 preview is the previewer's view of them.
    latents, _ = demo_latents()
    with torch.no_grad():
        expected = previewer(latents)[0]
    expected = np.asarray(Image.fromarray((expected * 255).round().byte().permute(1, 2, 0).numpy()).resize((PIXELS, PIXELS), Image.NEAREST))
    last = np.asarray(Image.open(out / "sd1-affine" / step_name(STEPS - 1, 0))).astype(int)
    assert np.abs(last - expected).mean() < 2
    first = np.asarray(Image.open(out / "sd1-affine" / step_name(0, 0))).astype(int)
    assert np.abs(first - expected).mean() > 10  # and it started from noise
