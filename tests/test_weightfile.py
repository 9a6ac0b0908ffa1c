import json
import struct

import pytest
import torch
from safetensors.torch import save_file

import previewers
from previewers import FAMILIES, build, save
from previewers.models.weightfile import METADATA_KEY, load_file, read_card


def randomised(family, latent_channels=4, **args):
    p = build(family, latent_channels, **args)
    g = torch.Generator().manual_seed(1)
    for t in p.state_dict().values():
        t.copy_(torch.randn(t.shape, generator=g))
    return p


@pytest.mark.parametrize("family, args", [(f, {}) for f in FAMILIES]
                         + [("conv", {"channels": [8, 8], "kernels": [1, 3, 3], "base": 3, "dilations": [1, 2, 1]})])
def test_save_load_is_bit_identical(tmp_path, family, args):
    p = randomised(family, 16, **args)
    path = save(p, tmp_path / f"x-{family}.safetensors", space="sd3", teacher="taesd3", metrics={"clean": {"psnr": 30.0}})
    q = previewers.load(path)
    assert q.family == family and q.latent_channels == 16 and q.scale == p.scale and q.args == p.args
    for k, v in p.state_dict().items():
        assert torch.equal(v, q.state_dict()[k]), k
    x = torch.randn(2, 16, 8, 8)
    assert torch.equal(p(x), q(x))
    assert q.meta["space"] == "sd3" and q.meta["metrics"]["clean"]["psnr"] == 30.0 and q.meta["format_version"] == 1


def test_half_precision_file_keeps_its_dtype(tmp_path):
    p = randomised("conv").half()
    q = previewers.load(save(p, tmp_path / "h.safetensors"))
    assert next(q.parameters()).dtype == torch.float16
    assert q(torch.randn(1, 4, 8, 8)).dtype == torch.float16


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="weight file not found"):
        previewers.load(tmp_path / "nope.safetensors")


def test_empty_file(tmp_path):
    (tmp_path / "e.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="e.safetensors: not a safetensors file"):
        load_file(tmp_path / "e.safetensors")


def test_random_bytes(tmp_path):
    path = tmp_path / "r.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(ValueError, match="r.safetensors: not a safetensors file"):
        load_file(path)


def test_truncated_file(tmp_path):
    path = save(randomised("mlp"), tmp_path / "t.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(ValueError, match="t.safetensors: corrupt or truncated"):
        load_file(path)


def test_foreign_safetensors_without_our_metadata(tmp_path):
    save_file({"weight": torch.zeros(3, 4)}, tmp_path / "f.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="f.safetensors: a safetensors file, but not a latent-preview weight file"):
        load_file(tmp_path / "f.safetensors")


def rewrite_config(path, **changes):
    config = read_card(path).to_dict()
    config.update(changes)
    from safetensors.torch import load_file as read

    save_file(read(path), path, metadata={METADATA_KEY: json.dumps(config)})


def test_unknown_family_and_version(tmp_path):
    path = save(randomised("affine"), tmp_path / "a.safetensors")
    rewrite_config(path, family="spline")
    with pytest.raises(ValueError, match="unknown previewer family 'spline'"):
        load_file(path)
    path = save(randomised("affine"), tmp_path / "b.safetensors")
    rewrite_config(path, format_version=99)
    with pytest.raises(ValueError, match="unsupported weight file format version 99"):
        load_file(path)


def test_tensors_that_do_not_fit_the_family(tmp_path):
    path = save(randomised("affine"), tmp_path / "a.safetensors")
    rewrite_config(path, latent_channels=16)
    with pytest.raises(ValueError, match="tensor 'body.weight' has shape"):
        load_file(path)


def test_corrupt_metadata_json(tmp_path):
    path = tmp_path / "c.safetensors"
    save_file({"w": torch.zeros(1)}, path, metadata={METADATA_KEY: "{not json"})
    with pytest.raises(ValueError, match="corrupt latent-preview metadata"):
        load_file(path)


def test_header_length_lie(tmp_path):
    path = tmp_path / "h.safetensors"
    path.write_bytes(struct.pack("<Q", 10**12) + b"{}")
    with pytest.raises(ValueError, match="implausible header length"):
        load_file(path)


def test_save_is_atomic_and_leaves_no_temp_file(tmp_path):
    save(randomised("linear"), tmp_path / "w" / "l.safetensors")
    assert [p.name for p in (tmp_path / "w").iterdir()] == ["l.safetensors"]
