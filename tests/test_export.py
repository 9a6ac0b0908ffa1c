"""Export: factor tables in ComfyUI's convention and JSON reproduce the previewer; clear refusals otherwise."""

import json

import pytest
import torch

import previewers
from previewers.cli import main
from previewers.models.families import affine, quadratic, upsampler


def random_affine():
    torch.manual_seed(0)
    p = affine(4)
    with torch.no_grad():
        p.body.weight.normal_(0, 0.3)
        p.body.bias.normal_(0.5, 0.1)
        p.in_scale.copy_(torch.tensor([2.0, 0.5, 1.5, 1.0]))
        p.in_shift.copy_(torch.tensor([0.1, -0.2, 0.3, 0.0]))
    return p


def pasted(snippet: str) -> dict:
    """The attributes a ComfyUI latent format class gets when the snippet is pasted into its __init__."""
    names = {}
    exec("class Format:\n    def __init__(self):\n" + snippet, names)
    return vars(names["Format"]())


def comfy_preview(x, factors, bias):
    """What ComfyUI shows: ((x @ factors + bias) + 1) / 2, clamped; x (B, C, h, w)."""
    rgb = x.movedim(1, -1).double() @ torch.tensor(factors, dtype=torch.float64)
    if bias is not None:
        rgb = rgb + torch.tensor(bias, dtype=torch.float64)
    return ((rgb + 1) / 2).clamp(0, 1).movedim(-1, 1).float()


def test_affine_export_reproduces_the_previewer(tmp_path, capsys):
    path = previewers.save(random_affine(), tmp_path / "sd1-affine.safetensors", space="sd1", teacher="taesd",
                           metrics={"clean": {"psnr": 25.0}, "noised": {"psnr": 24.0}})
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        want = previewers.load(path)(x)

    assert main(["export", str(path), "--format", "comfyui", "--out", str(tmp_path / "f.py")]) == 0
    snippet = (tmp_path / "f.py").read_text()
    assert "25.00 dB clean" in snippet and "against taesd" in snippet and "in the __init__ of class SD15" in snippet
    names = pasted(snippet)
    assert len(names["latent_rgb_factors"]) == 4 and len(names["latent_rgb_factors_bias"]) == 3
    torch.testing.assert_close(comfy_preview(x, names["latent_rgb_factors"], names["latent_rgb_factors_bias"]), want,
                               atol=1e-5, rtol=0)

    assert main(["export", str(path), "--format", "json", "--out", str(tmp_path / "f.json")]) == 0
    doc = json.loads((tmp_path / "f.json").read_text())
    assert doc["space"] == "sd1" and doc["family"] == "affine" and doc["metrics"]["clean"]["psnr"] == 25.0
    comfy = doc["comfyui"]
    torch.testing.assert_close(comfy_preview(x, comfy["latent_rgb_factors"], comfy["latent_rgb_factors_bias"]), want,
                               atol=1e-5, rtol=0)
    unit = x.movedim(1, -1) @ torch.tensor(doc["unit"]["weight"]) + torch.tensor(doc["unit"]["bias"])
    torch.testing.assert_close(unit.clamp(0, 1).movedim(-1, 1), want, atol=1e-5, rtol=0)
    assert "wrote" in capsys.readouterr().out


def test_published_table_round_trips_to_its_own_numbers(tmp_path):
    published = pytest.importorskip("training.factor_tables")
    table = published.TABLES["sd1/comfyui"]
    path = previewers.save(published.as_previewer(table), tmp_path / "t.safetensors")
    assert main(["export", str(path), "--format", "comfyui", "--out", str(tmp_path / "t.py")]) == 0
    names = pasted((tmp_path / "t.py").read_text())
    assert names["latent_rgb_factors_bias"] is None  # ComfyUI's SD1.5 table has no bias
    torch.testing.assert_close(torch.tensor(names["latent_rgb_factors"]), torch.tensor(table.factors), atol=1e-6, rtol=0)


def test_fitted_linear_exports_without_bias(tmp_path):
    training_fit = pytest.importorskip("training.fit")
    from training.data import Pairs

    class Teacher:
        name, latent_channels, scale_factor, space_info = "t", 4, 8, {}

    x = torch.randn(8, 4, 6, 6)
    w = torch.randn(3, 4) * 0.2
    rgb = 0.5 + torch.einsum("oc,nchw->nohw", w, x)
    pairs = Pairs(x, rgb, torch.zeros(8, 3, 1, 1), torch.zeros(8, dtype=torch.bool), torch.arange(8), {})
    path = previewers.save(training_fit.fit(Teacher(), "linear", pairs, space="sd1", progress=False), tmp_path / "l.safetensors")
    assert main(["export", str(path), "--format", "json", "--out", str(tmp_path / "l.json")]) == 0
    doc = json.loads((tmp_path / "l.json").read_text())
    assert doc["comfyui"]["latent_rgb_factors_bias"] is None
    torch.testing.assert_close(torch.tensor(doc["comfyui"]["latent_rgb_factors"]), 2 * w.T, atol=1e-4, rtol=0)


def test_other_families_are_refused_clearly(tmp_path, capsys):
    quad = previewers.save(quadratic(4), tmp_path / "q.safetensors")
    assert main(["export", str(quad), "--format", "comfyui", "--out", str(tmp_path / "q.py")]) == 2
    assert "not a per-pixel linear map" in capsys.readouterr().err
    up = previewers.save(upsampler(4), tmp_path / "u.safetensors")
    assert main(["export", str(up), "--format", "json", "--out", str(tmp_path / "u.pth")]) == 2
    err = capsys.readouterr().err
    assert "cannot be exported in TAESD format" in err and "64/48/32/16" in err
    assert not (tmp_path / "q.py").exists() and not (tmp_path / "u.pth").exists()
