"""What a new user trips on: bad input gets one clear line before any long work, never a traceback or a silent
wrong answer."""


import pytest
import torch
from PIL import Image

import previewers
from previewers.cli import main
from previewers.models.families import affine


def planted_file(tmp_path, name="planted"):
    p = affine(4)
    p.body.weight.data.zero_()
    p.body.bias.data = torch.tensor([1.0, 0.5, 0.0])
    return previewers.save(p, tmp_path / f"{name}.safetensors", space="sd1")


def decode(tmp_path, *extra, latents=None):
    weights = planted_file(tmp_path)
    path = tmp_path / "lat.pt"
    torch.save(torch.randn(1, 4, 8, 6) if latents is None else latents, path)
    return main(["decode", str(path), "--previewer", str(weights), *extra])


@pytest.mark.parametrize("suffix", ["jpg", "jpeg", "JPG", "png", "webp", "bmp", "gif", "tif", "tiff"])
def test_decode_writes_every_common_image_format(tmp_path, suffix):
    out = tmp_path / f"o.{suffix}"
    assert decode(tmp_path, "--out", str(out), "--size", "16") == 0
    with Image.open(out) as image:
        assert image.size == (12, 16)


def test_decode_refuses_unknown_formats_before_work(tmp_path, capsys):
    assert decode(tmp_path, "--out", str(tmp_path / "o.xyz")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'.xyz'" in err and "jpg" in err and "tiff" in err
    assert not list(tmp_path.glob("o*"))


@pytest.mark.parametrize("size", ["0", "-5"])
def test_decode_size_must_be_positive(tmp_path, capsys, size):
    assert decode(tmp_path, "--out", str(tmp_path / "o.png"), "--size", size) == 2
    assert f"--size must be a positive number of pixels, got {size}" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_decode_warns_about_non_finite_latents(tmp_path):
    latents = torch.randn(1, 4, 8, 6)
    latents[0, :, :2] = float("nan")
    latents[0, 0, 2, 0] = float("inf")
    with pytest.warns(RuntimeWarning, match=r"NaN or inf in 25\.5% of the latent values") as caught:
        assert decode(tmp_path, "--out", str(tmp_path / "o.png"), latents=latents) == 0
    assert len([w for w in caught if "NaN" in str(w.message)]) == 1


def test_decode_wording(tmp_path, capsys):
    assert decode(tmp_path, "--out", str(tmp_path / "o.png"), latents=torch.randn(1, 1, 8, 8)) == 2
    assert "have 1 channel," in capsys.readouterr().err
    # a spatial file given --height/--width is reported with the shape in the file, and the flags by name
    assert decode(tmp_path, "--out", str(tmp_path / "o.png"), "--height", "64", "--width", "64") == 2
    err = capsys.readouterr().err
    assert "(1, 4, 8, 6)" in err and "(1, 1, 4, 8, 6)" not in err
    assert decode(tmp_path, "--out", str(tmp_path / "o.png"), "--height", "64", "--width", "64",
                  latents=torch.randn(1, 12, 16)) == 2
    err = capsys.readouterr().err
    assert "--height/--width" in err


def test_unreadable_and_multi_entry_latents_files_get_one_sentence(tmp_path, capsys):
    import datetime

    weights = planted_file(tmp_path)
    torch.save({"latents": torch.zeros(1), "when": datetime.date(2026, 1, 1)}, tmp_path / "pickled.pt")  # needs pickle
    torch.save({"a": torch.zeros(1), "b": torch.zeros(1)}, tmp_path / "pair.pt")
    assert main(["decode", str(tmp_path / "pickled.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights_only" not in err and "cannot read latents" in err
    assert main(["decode", str(tmp_path / "pair.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png")]) == 2
    assert "found 2 entries" in capsys.readouterr().err


def test_list_refuses_an_unknown_space(capsys):
    assert main(["list", "--space", "foo"]) == 2
    err = capsys.readouterr().err
    assert "foo" in err and "sd1" in err and "flux2" in err


def test_export_offers_only_what_works(tmp_path, capsys):
    from previewers.models.families import upsampler

    with pytest.raises(SystemExit):
        main(["export", str(tmp_path / "x.safetensors"), "--format", "taesd", "--out", str(tmp_path / "x")])
    assert "invalid choice: 'taesd'" in capsys.readouterr().err
    up = previewers.save(upsampler(4), tmp_path / "u.safetensors")
    assert main(["export", str(up), "--format", "comfyui", "--out", str(tmp_path / "u.py")]) == 2
    assert "64/48/32/16" in capsys.readouterr().err
