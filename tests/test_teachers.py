"""Teachers: TAESD files (architecture, variant detection, reconstruction) and diffusers VAEs in model space."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

diffusers = pytest.importorskip("diffusers")

from previewers.models import taesd  # noqa: E402
from training.teachers import Teacher, load_teacher  # noqa: E402

# name → (file suffix, latent channels, pooled, PSNR floor in dB). Floors sit ~3 dB under the
# measured encode→decode PSNR on the kodim23 crop below (26.8, 26.9, 31.7, 30.0, 32.5 dB).
SHARED_TEACHERS = {
    "taesd": (".safetensors", 4, False, 24.0),
    "taesdxl": (".safetensors", 4, False, 24.0),
    "taesd3": (".safetensors", 16, False, 28.5),
    "taef1": (".safetensors", 16, False, 27.0),
    "taef2": (".pth", 32, True, 29.5),
}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


def kodak_crop(shared) -> torch.Tensor:
    """(1, 3, 256, 256) in [0, 1]: the parrots' heads in kodim23."""
    image = np.asarray(Image.open(shared / "data" / "kodak24" / "kodim23.png").convert("RGB"))[128:384, 256:512]
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.mark.slow
@pytest.mark.parametrize("name", SHARED_TEACHERS)
def test_shared_teacher_loads_and_reconstructs(shared, name):
    suffix, channels, pooled, floor = SHARED_TEACHERS[name]
    folder = shared / "models" / "teachers"
    for role in ("encoder", "decoder"):
        state = taesd.read_state_dict(folder / f"{name}_{role}{suffix}")
        assert taesd.detect(state) == (role, channels, pooled)

    teacher = load_teacher(folder / f"{name}_decoder{suffix}")  # finds the _encoder sibling
    assert (teacher.name, teacher.latent_channels, teacher.scale_factor) == (name, channels, 8)
    assert teacher.has_encoder and teacher.space_info == {"convention": "identity"}

    x = kodak_crop(shared)
    latents = teacher.encode(x)
    assert latents.shape == (1, channels, 32, 32) and latents.dtype == torch.float32
    y = teacher.decode(latents.to(torch.bfloat16))  # any input dtype; output float32 in [0, 1]
    assert y.shape == x.shape and y.dtype == torch.float32 and 0 <= y.min() and y.max() <= 1
    assert psnr(y, x) > floor


def test_role_is_read_from_the_state_dict(shared, tmp_path):
    folder = shared / "models" / "teachers"
    # a decoder under an encoder's name is still a decoder
    renamed = tmp_path / "taesd_encoder.safetensors"
    renamed.write_bytes((folder / "taesd_decoder.safetensors").read_bytes())
    assert taesd.load_model_and_role(renamed)[1] == "decoder"
    with pytest.raises(ValueError, match="is a TAESD decoder, not an encoder"):
        load_teacher(folder / "taesd_decoder.safetensors", encoder=folder / "taesd_decoder.safetensors")
    with pytest.raises(ValueError, match="is a TAESD encoder"):
        load_teacher(folder / "taesd_encoder.safetensors")
    with pytest.raises(ValueError, match="encoder makes 16-channel latents, the decoder takes 4"):
        load_teacher(folder / "taesd_decoder.safetensors", encoder=folder / "taef1_encoder.safetensors")


def test_bad_files_are_refused_by_name(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        taesd.load_model_and_role(tmp_path / "nope.pth")
    for suffix in (".safetensors", ".pth"):
        junk = tmp_path / f"junk{suffix}"
        junk.write_bytes(np.random.default_rng(0).bytes(4096))
        with pytest.raises(ValueError, match=f"junk{suffix}: not a readable state dict"):
            taesd.load_model_and_role(junk)
    other = tmp_path / "other.safetensors"
    save_file(tiny_kl().state_dict(), other)
    with pytest.raises(ValueError, match="other.safetensors: not a TAESD"):
        taesd.load_model_and_role(other)
    truncated = tmp_path / "truncated.pth"
    state = taesd.decoder(4).state_dict()
    del state["19.bias"]
    torch.save(state, truncated)
    with pytest.raises(ValueError, match="truncated.pth: looks like a 4-channel TAESD decoder .*missing 19.bias"):
        taesd.load_model_and_role(truncated)


def test_decoder_without_encoder(tmp_path):
    path = tmp_path / "mine_decoder.safetensors"
    save_file(taesd.decoder(6).state_dict(), path)
    teacher = load_teacher(path)
    assert (teacher.name, teacher.latent_channels, teacher.has_encoder) == ("mine", 6, False)
    assert teacher.decode(torch.randn(1, 6, 3, 5)).shape == (1, 3, 24, 40)
    with pytest.raises(ValueError, match="has no encoder"):
        teacher.encode(torch.rand(1, 3, 24, 40))
    with pytest.raises(ValueError, match=r"decodes \(B, 6, h, w\) latents, got shape \(1, 4, 3, 5\)"):
        teacher.decode(torch.randn(1, 4, 3, 5))


def tiny_kl(**config) -> "diffusers.AutoencoderKL":
    torch.manual_seed(0)
    return diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, **config,
    ).eval()


def check_scale_shift(teacher: Teacher, vae, scale, shift):
    x = torch.rand(2, 3, 16, 24)
    with torch.no_grad():
        z = vae.encode(x * 2 - 1).latent_dist.mode()
        latents = teacher.encode(x)
        torch.testing.assert_close(latents, (z - shift) * scale)
        expected = ((vae.decode(latents / scale + shift).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(teacher.decode(latents.half()), expected, atol=2e-3, rtol=0)
    torch.testing.assert_close(teacher.decode(latents), expected)
    assert (teacher.latent_channels, teacher.scale_factor) == (4, 2)


def test_autoencoder_kl_scale_and_shift_from_config(tmp_path):
    vae = tiny_kl(scaling_factor=0.5, shift_factor=0.1)
    check_scale_shift(Teacher.from_vae(vae, name="tiny"), vae, 0.5, 0.1)

    vae.save_pretrained(tmp_path / "vae")
    teacher = load_teacher(tmp_path / "vae")
    assert teacher.space_info == {"convention": "scale_shift", "scaling_factor": 0.5, "shift_factor": 0.1}
    check_scale_shift(teacher, vae, 0.5, 0.1)
    assert load_teacher(tmp_path).name == tmp_path.name  # a pipeline folder: uses its vae/ subfolder


def test_autoencoder_kl_per_channel_statistics():
    mean, std = [0.1, -0.2, 0.3, 0.0], [0.5, 1.0, 2.0, 4.0]
    vae = tiny_kl(scaling_factor=0.5, latents_mean=mean, latents_std=std)
    view = (1, 4, 1, 1)
    check_scale_shift(Teacher.from_vae(vae), vae, 0.5 / torch.tensor(std).view(view), torch.tensor(mean).view(view))


def test_autoencoder_tiny_latents_are_its_own():
    torch.manual_seed(0)
    vae = diffusers.AutoencoderTiny(
        encoder_block_out_channels=(8, 8), decoder_block_out_channels=(8, 8),
        num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1), latent_channels=4,
    ).eval()
    teacher = Teacher.from_vae(vae)
    x = torch.rand(1, 3, 16, 16)
    latents = teacher.encode(x)
    with torch.no_grad():
        torch.testing.assert_close(latents, vae.encode(x * 2 - 1).latents)  # scaling_factor 1, no shift
        expected = ((vae.decode(latents).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(teacher.decode(latents), expected)
    assert (teacher.latent_channels, teacher.scale_factor) == (4, 2)


def test_flux2_latents_are_what_the_pipeline_hands_its_transformer():
    from diffusers.pipelines.flux2.pipeline_flux2 import Flux2Pipeline

    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLFlux2(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4, layers_per_block=1,
    ).eval()
    vae.bn.running_mean.copy_(torch.randn(16))
    vae.bn.running_var.copy_(torch.rand(16) + 0.5)
    teacher = Teacher.from_vae(vae)
    assert (teacher.latent_channels, teacher.scale_factor) == (4, 2)
    assert teacher.space_info["convention"] == "batchnorm" and teacher.space_info["patch_size"] == 2

    x = torch.rand(2, 3, 16, 24)
    latents = teacher.encode(x)
    assert latents.shape == (2, 4, 8, 12)
    with torch.no_grad():
        # Flux2Pipeline._encode_vae_image + prepare_image_latents
        z = vae.encode(x * 2 - 1).latent_dist.mode()
        patches = Flux2Pipeline._patchify_latents(z)
        bn_std = torch.sqrt(vae.bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps)
        tokens = Flux2Pipeline._pack_latents((patches - vae.bn.running_mean.view(1, -1, 1, 1)) / bn_std)
        torch.testing.assert_close(Flux2Pipeline._pack_latents(Flux2Pipeline._patchify_latents(latents)), tokens)

        # Flux2Pipeline.__call__'s decode path, from the tokens
        ids = Flux2Pipeline._prepare_latent_ids(patches)
        unpacked = Flux2Pipeline._unpack_latents_with_ids(tokens, ids)
        raw = Flux2Pipeline._unpatchify_latents(unpacked * bn_std + vae.bn.running_mean.view(1, -1, 1, 1))
        expected = ((vae.decode(raw).sample + 1) / 2).clamp(0, 1)
    torch.testing.assert_close(teacher.decode(latents), expected)

    with pytest.raises(ValueError, match="multiples of the patch size 2"):
        teacher.encode(torch.rand(1, 3, 18, 16))


def test_diffusers_loading_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing"):
        load_teacher(tmp_path / "missing")
    with pytest.raises(ValueError, match="folder has no config.json"):
        load_teacher(tmp_path)
    for class_name, message in (("NoSuchVAE", "unknown class 'NoSuchVAE'"), ("UNet2DModel", "UNet2DModel is not a supported VAE")):
        folder = tmp_path / class_name
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({"_class_name": class_name}))
        with pytest.raises(ValueError, match=message):
            load_teacher(folder)
    no_weights = tmp_path / "no_weights"
    tiny_kl().save_config(no_weights)
    with pytest.raises(ValueError, match="no_weights: could not load the AutoencoderKL weights"):
        load_teacher(no_weights)
    with pytest.raises(ValueError, match="Linear is not a supported VAE"):
        Teacher.from_vae(torch.nn.Linear(2, 2))


def ldm_key(key: str, up_blocks: int) -> str:
    """A diffusers AutoencoderKL key in the original (LDM) checkpoint layout."""
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample", key)
    key = re.sub(r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{up_blocks - 1 - int(m[1])}.block.", key)
    key = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{up_blocks - 1 - int(m[1])}.upsample", key)
    key = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}", key)
    for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
        key = key.replace(f"mid_block.attentions.0.{new}", f"mid.attn_1.{old}")
    return key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")


def test_single_file_checkpoint(tmp_path):
    vae = tiny_kl(scaling_factor=0.5, shift_factor=0.1)
    vae.save_pretrained(tmp_path / "config")
    state = {}
    for key, value in vae.state_dict().items():
        key = ldm_key(key, len(vae.config.up_block_types))
        state[f"first_stage_model.{key}"] = value[..., None, None] if ".attn_1." in key and value.ndim == 2 else value
    checkpoint = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, checkpoint)

    with pytest.raises(ValueError, match="model.safetensors: not a TAESD file .*needs --vae-config DIR"):
        load_teacher(checkpoint)
    teacher = load_teacher(checkpoint, vae_config=tmp_path / "config")
    assert teacher.name == "model"
    check_scale_shift(teacher, vae, 0.5, 0.1)
