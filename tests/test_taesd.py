"""TAESD-family decoders as previewers: files (.safetensors/.pth), diffusers AutoencoderTiny, the callback, decode, generate."""

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

import previewers
from previewers.cli import main
from previewers.models import taesd

diffusers = pytest.importorskip("diffusers")

from builders import latent_side, run, save_tiny_sd_folder, tiny_pipeline, write_images  # noqa: E402

from previewers import PreviewCallback  # noqa: E402
from training.teachers import load_teacher  # noqa: E402


def teacher_file(shared, name, suffix=".safetensors"):
    return shared / "models" / "teachers" / f"{name}_decoder{suffix}"


@pytest.mark.parametrize("name, suffix, channels, spaces", [
    ("taesd", ".safetensors", 4, ["sd1", "sdxl"]),
    ("taef1", ".safetensors", 16, ["sd3", "flux1"]),
    ("taef2", ".pth", 32, ["flux2"]),
])
def test_shared_decoder_files_are_previewers_equal_to_the_teacher(shared, name, suffix, channels, spaces):
    path = teacher_file(shared, name, suffix)
    p = previewers.load(path)
    assert (p.family, p.latent_channels, p.scale, p.args["pooled"]) == ("taesd", channels, 8, name == "taef2")
    assert p.meta["spaces"] == spaces and p.meta["source"] == str(path)
    # a space only where the variant names one: 4 and 16 channels are ambiguous, the caller's space wins
    assert p.meta.get("space") == (spaces[0] if len(spaces) == 1 else None)
    z = (torch.randn(2, channels, 6, 5, generator=torch.Generator().manual_seed(0)) * 2).to(torch.bfloat16)
    with torch.no_grad():
        y = p(z)  # any input dtype
    assert y.shape == (2, 3, 48, 40) and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    torch.testing.assert_close(y, load_teacher(path).decode(z), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind, name, suffix", [("sd", "taesd", ".safetensors"), ("flux2", "taef2", ".pth")])
def test_tiny_pipeline_with_the_shared_decoder_file_gives_8x_previews(shared, tmp_path, kind, name, suffix):
    pipe, kwargs = tiny_pipeline(kind)
    pipe.set_progress_bar_config(disable=True)
    cb = PreviewCallback.for_pipeline(pipe, previewer=teacher_file(shared, name, suffix), out_dir=tmp_path, keep=True,
                                      height=16, width=16)
    reference = run(pipe, kwargs)
    images = run(pipe, kwargs, cb, output_type="np")
    cb.close()
    assert (images == reference).all()  # the pipeline's result is untouched
    side = 8 * latent_side(pipe)
    assert sorted(cb.images) == [0, 1, 2, 3]
    assert all(im.size == (side, side) for ims in cb.images.values() for im in ims)
    with Image.open(tmp_path / "step_0003_img0.png") as png:
        assert png.size == (side, side)


def test_bad_taesd_inputs_give_one_clear_error_each(shared, tmp_path):
    pipe, _ = tiny_pipeline("sd")
    with pytest.raises(ValueError, match="taef1_decoder.safetensors' takes 16-channel latents, but StableDiffusionPipeline's "
                                         "latents have 4 channels"):
        PreviewCallback.for_pipeline(pipe, previewer=teacher_file(shared, "taef1"))
    encoder = shared / "models" / "teachers" / "taesd_encoder.safetensors"
    with pytest.raises(ValueError, match=r"taesd_encoder.safetensors: is a TAESD encoder .*needs the decoder file "
                                         r"\(e.g. taesd_decoder.safetensors\)"):
        PreviewCallback.for_pipeline(pipe, previewer=encoder)
    truncated = tmp_path / "taesd_decoder.pth"
    torch.save(taesd.decoder(4).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:100_000])
    with pytest.raises(ValueError, match="taesd_decoder.pth: not a readable state dict"):
        PreviewCallback.for_pipeline(pipe, previewer=truncated)
    foreign = tmp_path / "vae.safetensors"
    save_file({"decoder.conv_in.weight": torch.zeros(2, 2)}, foreign)
    with pytest.raises(ValueError, match="vae.safetensors: a safetensors file, but neither a latent-preview weight file "
                                         ".* nor a TAESD-family decoder"):
        previewers.load(foreign)
    with pytest.raises(ValueError, match="a Linear is not a previewer"):
        previewers.load(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="a taesd previewer has no latent-preview weight file"):
        previewers.save(previewers.load(teacher_file(shared, "taesd")), tmp_path / "t.safetensors")


def test_autoencoder_tiny_decodes_as_its_pipeline_would():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderTiny(latent_channels=16, scaling_factor=1.5305, shift_factor=0.0609).eval()
    p = previewers.load(vae)
    assert (p.family, p.latent_channels, p.scale, p.meta["spaces"]) == ("taesd", 16, 8, ["sd3", "flux1"])
    latents = torch.randn(1, 16, 4, 6)
    with torch.no_grad():
        expected = ((vae.decode(latents / 1.5305 + 0.0609).sample + 1) / 2).clamp(0, 1)  # as StableDiffusion3Pipeline
        torch.testing.assert_close(p(latents), expected, atol=1e-5, rtol=0)
    pipe, _ = tiny_pipeline("sd3")
    assert PreviewCallback.for_pipeline(pipe, previewer=vae, height=16, width=16).previewer.family == "taesd"


def test_decode_command_takes_a_taesd_file(shared, tmp_path, capsys):
    latents = tmp_path / "z.safetensors"
    save_file({"latents": torch.randn(1, 4, 5, 7)}, latents)
    out = tmp_path / "o.png"
    assert main(["decode", str(latents), "--previewer", str(teacher_file(shared, "taesd")), "--out", str(out)]) == 0
    with Image.open(out) as png:
        assert png.size == (56, 40)
    assert "sd1/sdxl taesd" in capsys.readouterr().out


def test_generate_preview_methods(shared, tmp_path, capsys):
    model = save_tiny_sd_folder(tmp_path)
    out = tmp_path / "out"
    assert main(["generate", "--model", str(model), "--prompt", "a cat", "--steps", "2",
                 "--preview", str(teacher_file(shared, "taesd")), "--out", str(out)]) == 0
    with Image.open(out / "step_0001_img0.png") as step, Image.open(out / "final_img0.png") as final:
        assert step.size == (64, 64) and final.size == (16, 16)  # the tiny VAE decodes at 2x, TAESD at 8x
    vae_out = tmp_path / "vae"
    assert main(["generate", "--model", str(model), "--prompt", "a cat", "--steps", "2", "--preview", "vae",
                 "--out", str(vae_out)]) == 0
    with Image.open(vae_out / "step_0001_img0.png") as step:
        assert step.size == (16, 16)  # the pipeline's own VAE: the final image's size
    assert main(["generate", "--model", str(model), "--prompt", "a cat", "--steps", "1", "--preview", "taesd",
                 "--out", str(out)]) == 2
    assert "--preview taesd needs the decoder file" in capsys.readouterr().err


def test_a_family_name_is_the_previewer_shipped_for_the_space():
    from previewers.pipelines.latents import bind
    from previewers.pipelines.resolve import shipped_name

    pipe, _ = tiny_pipeline("sdxl")
    latents = bind(pipe)
    assert shipped_name("affine", latents, "p") == "sdxl-affine"
    assert shipped_name("upsampler", latents, "p") == "sdxl-upsampler"
    assert shipped_name("sd1-conv", latents, "p") == "sd1-conv"
    cb = PreviewCallback.for_pipeline(pipe, previewer="affine")
    assert (cb.previewer.family, cb.previewer.meta["space"]) == ("affine", "sdxl")


@pytest.mark.slow
def test_eval_scores_a_taesd_file_beside_our_previewers(shared, tmp_path, capsys):
    images = write_images(tmp_path / "images", count=2, size=(64, 64))
    teacher = teacher_file(shared, "taesd")
    report = tmp_path / "report.md"
    assert main(["eval", "--teacher", str(teacher), "--space", "sd1", "--images", str(images), "--tile", "32",
                 "--previewer", f"{teacher},sd1-affine", "--report", str(report), "--no-cache"]) == 0
    rows = [line for line in report.read_text().splitlines() if line.startswith("| taesd_decoder |")]
    assert len(rows) == 1 and "| taesd | 8x |" in rows[0]
    assert float(rows[0].split(" | ")[4]) > 40  # the teacher itself, up to the float16-stored decode
    assert main(["eval", "--teacher", str(teacher), "--space", "sd1", "--images", str(images), "--tile", "32",
                 "--previewer", str(teacher_file(shared, "taef2", ".pth")), "--no-cache"]) == 2
    assert "is for space flux2, not sd1" in capsys.readouterr().err
