import numpy as np
import pytest
import torch
from PIL import Image

from previewers import save
from previewers.cli import main
from previewers.models.families import affine


def planted_file(tmp_path):
    p = affine(4)
    p.body.weight.data.zero_()
    p.body.bias.data = torch.tensor([1.0, 0.5, 0.0])
    return save(p, tmp_path / "planted.safetensors", space="sd1")


def test_help_lists_runtime_commands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "list" in out and "decode" in out


def test_list_shows_shipped(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "sd1-affine" in out and "PSNR" in out


@pytest.mark.parametrize("suffix", [".pt", ".npy", ".safetensors"])
def test_decode_writes_planted_colour(tmp_path, suffix, capsys):
    weights = planted_file(tmp_path)
    lat = torch.randn(2, 4, 8, 6)
    path = tmp_path / f"lat{suffix}"
    if suffix == ".pt":
        torch.save(lat, path)
    elif suffix == ".npy":
        np.save(path, lat.numpy())
    else:
        from safetensors.torch import save_file

        save_file({"latents": lat}, path)
    assert main(["decode", str(path), "--previewer", str(weights), "--out", str(tmp_path / "o.png"), "--size", "24"]) == 0
    for i in range(2):
        img = np.asarray(Image.open(tmp_path / f"o_{i}.png"))
        assert img.shape == (24, 18, 3)  # (h, w) = (8, 6), longer side upscaled to 24
        assert (img == [255, 128, 0]).all()


def test_decode_errors_are_one_line(tmp_path, capsys):
    weights = planted_file(tmp_path)
    torch.save(torch.randn(1, 16, 8, 8), tmp_path / "wrong.pt")
    assert main(["decode", str(tmp_path / "wrong.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "have 16 channels" in err and "takes 4" in err and "Traceback" not in err
    torch.save(torch.randn(1, 12, 16), tmp_path / "tokens.pt")
    assert main(["decode", str(tmp_path / "tokens.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png"),
                 "--height", "64", "--width", "64"]) == 2
    assert "12 tokens do not tile a 64x64 image" in capsys.readouterr().err
    assert main(["decode", str(tmp_path / "missing.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png")]) == 2
    assert "latents file not found" in capsys.readouterr().err
    (tmp_path / "junk.pt").write_bytes(b"junk" * 10)
    assert main(["decode", str(tmp_path / "junk.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png")]) == 2
    assert "cannot read latents" in capsys.readouterr().err


def test_decode_unpacks_flux_tokens(tmp_path):
    from previewers.models.families import affine
    from previewers.pipelines.latents import unpack_tokens

    p = affine(4)
    torch.nn.init.normal_(p.body.weight, std=0.3)
    weights = save(p, tmp_path / "p.safetensors")
    tokens = torch.randn(1, 6, 16)  # a 48x32 image at vae scale 8: 6x4 latents, 3x2 tokens of 2x2 patches
    torch.save(tokens, tmp_path / "tokens.pt")
    assert main(["decode", str(tmp_path / "tokens.pt"), "--previewer", str(weights), "--out", str(tmp_path / "o.png"),
                 "--height", "48", "--width", "32"]) == 0
    expected = (p(unpack_tokens(tokens, 4, 48, 32, 8)) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    assert (np.asarray(Image.open(tmp_path / "o.png")) == expected).all()
