"""generate passes the image size, guidance and negative prompt to the pipeline, and upscales previews with --size."""

import pytest
from PIL import Image

pytest.importorskip("diffusers")

from builders import save_tiny_sd_folder  # noqa: E402

from previewers import save  # noqa: E402
from previewers.cli import main  # noqa: E402
from previewers.models.families import affine  # noqa: E402
from previewers.outputs.writer import step_name  # noqa: E402


def test_generate_size_guidance_negative_prompt(tmp_path, capsys):
    model = save_tiny_sd_folder(tmp_path)
    previewer = save(affine(4), tmp_path / "p.safetensors", space="sd1")
    out = tmp_path / "out"
    assert main(["generate", "--model", str(model), "--prompt", "a cat", "--negative-prompt", "a dog", "--steps", "2",
                 "--guidance-scale", "3", "--height", "24", "--width", "32", "--size", "48",
                 "--previewer", str(previewer), "--out", str(out)]) == 0
    with Image.open(out / "final_img0.png") as final:
        assert final.size == (32, 24)
    with Image.open(out / step_name(1, 0)) as preview:  # 16x12 latents, longer side upscaled to 48
        assert preview.size == (48, 36)
    assert main(["generate", "--model", str(model), "--prompt", "x", "--height", "24", "--out", str(out)]) == 2
    assert "--height and --width" in capsys.readouterr().err
