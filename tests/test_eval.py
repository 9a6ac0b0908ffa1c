"""Evaluation: targets pooled to each module's resolution, metrics, the markdown report, the sheet, the CLI."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("diffusers")

from builders import fake_teacher, tiny_vae_folder, write_images  # noqa: E402

import previewers  # noqa: E402
from previewers.cli import main  # noqa: E402
from previewers.models.families import affine, upsampler  # noqa: E402
from training.evaluate import evaluate, held_out, markdown  # noqa: E402
from training.sheet import LABEL, LEFT, write_sheet  # noqa: E402


def exact_affine():
    """Reproduces the fake teacher exactly at latent resolution: RGB = (latent[:3] + 1) / 2."""
    p = affine(4)
    with torch.no_grad():
        p.body.weight.zero_()
        p.body.weight[[0, 1, 2], [0, 1, 2]] = 0.5
        p.body.bias.fill_(0.5)
    return p


def test_scores_pool_the_teacher_to_each_output_size(photos):
    data = held_out(fake_teacher(), photos, size=64, progress=False)
    # 300x200 → 4x3 tiles, 160x240 → 2x3, 1200x900 → 18x14
    assert data.clean.shape == (12 + 6 + 252, 4, 8, 8) and data.clean_rgb.shape == (270, 3, 64, 64)
    assert 0 <= data.noised_rgb.min() and data.noised_rgb.max() <= 1
    assert held_out(fake_teacher(), photos, size=64, count=5, progress=False).clean.shape[0] == 5

    grey = affine(4)
    with torch.no_grad():
        grey.body.weight.zero_()
        grey.body.bias.fill_(0.5)
    up = upsampler(4, width=8, depth=0, stages=(8, 8, 8))
    rows = evaluate({"exact": exact_affine(), "grey": grey, "up": up}, held_out(fake_teacher(), photos, size=64, count=6,
                                                                                  progress=False), progress=False)
    exact, grey_row, up_row = rows
    # equal up to the float16 precision of the stored decodes
    assert exact.clean["psnr"] > 70 and exact.clean["ssim"] == pytest.approx(1, abs=1e-5)
    assert exact.clean["ciede2000"] < 0.05 and exact.noised["psnr"] > 70
    assert grey_row.clean["psnr"] < 35 and grey_row.params == 15 and grey_row.kind == "affine"
    assert up_row.scale == 8 and up_row.ms > 0 and math.isfinite(up_row.clean["psnr"])

    table = markdown(rows, title="t", note="n")
    lines = table.splitlines()
    assert lines[0] == "## t" and lines[2] == "n" and "PSNR clean" in lines[4]
    assert lines[6].startswith("| exact |")  # best first


def test_sheet_has_a_labelled_column_per_module(photos, tmp_path):
    data = held_out(fake_teacher(), photos, size=64, count=4, progress=False)
    path = write_sheet(tmp_path / "s.png", {"a": exact_affine(), "b": upsampler(4, width=8, depth=0)}, data, count=2)
    sheet = Image.open(path)
    assert sheet.size == (LEFT + 3 * 64, LABEL + 4 * 64)  # teacher | a | b; 2 tiles clean + 2 noised
    # the exact previewer's tile equals the teacher's (nearest-upscaled latent-resolution preview)
    teacher_tile = sheet.crop((LEFT, LABEL, LEFT + 64, LABEL + 64))
    exact_tile = sheet.crop((LEFT + 64, LABEL, LEFT + 128, LABEL + 64))
    difference = np.abs(np.asarray(teacher_tile, dtype=int) - np.asarray(exact_tile, dtype=int))
    assert difference.max() <= 1  # float16-stored decode vs float32 preview: at most one level apart


@pytest.mark.slow
def test_eval_cli_writes_report_and_sheet(tmp_path, capsys):
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images", count=2, size=(64, 64))
    ours = previewers.save(exact_affine(), tmp_path / "ours.safetensors", space="sd1")
    report, sheet = tmp_path / "r" / "report.md", tmp_path / "sheet.png"
    code = main(["eval", "--teacher", str(vae), "--space", "sd1", "--images", str(images), "--previewer", str(ours),
                 "--baselines", "--tile", "32", "--report", str(report), "--sheet", str(sheet), "--sheet-tiles", "2",
                 "--cache", str(tmp_path / "cache")])
    assert code == 0
    text = report.read_text()
    assert "| ours | affine | 1x |" in text and "| comfyui table | table |" in text and "sdcpp table" in text
    assert text in capsys.readouterr().out
    columns = 1 + text.count("\n| ") - 1  # teacher + one per row (the header row is not a module)
    assert Image.open(sheet).size == (LEFT + columns * 32, LABEL + 4 * 32)

    assert main(["eval", "--teacher", str(vae), "--space", "sd1", "--images", str(images), "--no-cache"]) == 2
    assert "--previewer" in capsys.readouterr().err
    flux = previewers.save(affine(16), tmp_path / "flux.safetensors", space="flux1")
    assert main(["eval", "--teacher", str(vae), "--space", "sd1", "--images", str(images), "--previewer", str(flux),
                 "--no-cache"]) == 2
    assert "is for space flux1, not sd1" in capsys.readouterr().err


def test_eval_keeps_a_shipped_previewer_beside_a_file_of_the_same_name(tmp_path, capsys):
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images", count=1, size=(32, 32))
    mine = previewers.save(exact_affine(), tmp_path / "my-previewers" / "sd1-affine.safetensors", space="sd1")
    sheet = tmp_path / "sheet.png"
    assert main(["eval", "--teacher", str(vae), "--space", "sd1", "--images", str(images), "--tile", "32",
                 "--previewer", f"{mine},sd1-affine", "--sheet", str(sheet), "--no-cache"]) == 0
    out = capsys.readouterr().out
    assert f"| {mine} | affine |" in out and "| sd1-affine | affine |" in out
    assert main(["eval", "--teacher", str(vae), "--space", "sd1", "--images", str(images), "--tile", "32",
                 "--previewer", "sd1-affine", "--sheet", str(tmp_path / "one.png"), "--no-cache"]) == 0
    assert Image.open(sheet).size[0] - Image.open(tmp_path / "one.png").size[0] == 32  # one column more


def test_eval_sheet_labels_rows_in_words(photos, tmp_path):
    from PIL import ImageDraw, ImageFont

    data = held_out(fake_teacher(), photos, size=64)
    sheet = Image.open(write_sheet(tmp_path / "s.png", {"a": exact_affine()}, data, count=1))
    word = int(ImageDraw.Draw(sheet).textlength("noised", font=ImageFont.load_default(size=14)))
    band = np.asarray(sheet.convert("L"))[LABEL + 64:, :LEFT]  # the noised row's label band
    dark = np.nonzero((band < 128).any(0))[0]
    assert dark.max() - dark.min() >= word - 4  # the whole word is written, not an initial


@pytest.mark.slow
def test_full_res_comparison_rows_put_a_full_res_previewer_in_context():
    import torch.nn.functional as F

    from training.evaluate import HeldOut, evaluate
    from training.full_res import CEILING, comparison

    class Teacher:
        scale_factor = 8

        def decode(self, z):  # smooth colours at full resolution: the ceiling is near exact
            return F.interpolate(torch.sigmoid(z[:, :3]), scale_factor=8, mode="bilinear").clamp(0, 1)

    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 4, 4, 4, generator=g)
    rgb = Teacher().decode(z)
    data = HeldOut(z, z, rgb, rgb, {})
    half = upsampler(4, width=8, depth=0, stages=(8,))  # a 2x previewer, like A1111's Approx NN
    modules = {"aff": affine(4), "up": upsampler(4, width=8, depth=0, stages=(8, 8, 8)), "half": half}
    rows = evaluate(modules, data, progress=False)
    extra = {r.name: r for r in comparison(rows, modules, Teacher(), data, progress=False)}
    assert set(extra) == {"up, pooled", "half, pooled", "half, bicubic ×4", "aff, bicubic ×8", CEILING}
    assert extra["up, pooled"].scale == 1 and extra["aff, bicubic ×8"].scale == 8
    assert extra["half, bicubic ×4"].scale == 8  # scored against the full-resolution decode
    assert {name: r.shows for name, r in extra.items()} == {"up, pooled": "up", "half, pooled": "half",
                                                           "half, bicubic ×4": "half", "aff, bicubic ×8": "aff",
                                                           CEILING: None}
    assert extra[CEILING].clean["psnr"] > extra["aff, bicubic ×8"].clean["psnr"] + 3
    assert comparison([r for r in rows if r.name == "aff"], modules, Teacher(), data, progress=False) == []


def test_quality_summary_puts_full_res_previewers_beside_the_upscale_and_the_ceiling():
    from benchmarks.quality import summary
    from training.evaluate import Row

    def row(name, kind, scale, psnr, shows=None):
        m = {"psnr": psnr, "ssim": 0.8, "ciede2000": 3.0}
        return Row(name, kind, scale, 10, m, m, 1.0, shows)

    rows = [row("sd1-conv", "conv", 1, 29.0), row("sd1-upsampler", "upsampler", 8, 27.5),
            row("sd1-upsampler, pooled", "pooled", 1, 28.9, "sd1-upsampler"),
            row("sd1-conv, bicubic ×8", "bicubic upscale", 8, 23.1, "sd1-conv"),
            row("ceiling: teacher pooled, bicubic back", "ceiling", 8, 23.6)]
    line = summary({"sd1": (rows, "")}).splitlines()[-1]
    assert "27.50 dB, SSIM 0.800 / 28.90 (sd1-upsampler" in line
    assert "23.10 / 23.10 (sd1-conv, bicubic ×8)" in line and "23.60 / 23.60 (ceiling" in line
    assert "29.00 / 29.00 (sd1-conv" in line  # the pooled upsampler is not a latent-res previewer

    # a 2x previewer's own row is against the decode pooled to 2x: the full-res cell shows its bicubic upscale
    rows += [row("approx", "peer", 2, 30.0), row("approx, pooled", "pooled", 1, 28.0, "approx"),
             row("approx, bicubic ×4", "bicubic upscale", 8, 24.0, "approx")]
    line = summary({"sd1": (rows, "")}).splitlines()[-1]
    assert "24.00 dB, SSIM 0.800 / 28.00 (approx at 2x, bicubic ×4" in line and "30.00 dB" not in line
    assert "23.10 / 23.10 (sd1-conv, bicubic ×8)" in line
    assert "| 28.00 / 28.00 (approx, pooled) |" in line  # best peer, compared at latent resolution
