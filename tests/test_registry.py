import pytest
import torch

import previewers
from previewers.models.weightfile import read_card


def test_available_lists_shipped_files():
    names = previewers.available()
    assert "sd1-affine" in names
    assert names == sorted(names)
    assert all(p.stem in names for p in previewers.weights_dir().glob("*.safetensors"))


@pytest.mark.parametrize("name", previewers.available())
def test_every_shipped_previewer_loads_and_runs(name):
    p = previewers.load(name)
    card = read_card(previewers.weights_dir() / f"{name}.safetensors")
    space, family = name.split("-")[:2]
    assert card.space == space and p.family == family
    assert {"teacher", "recipe", "metrics"} <= set(p.meta)
    c = previewers.SPACES[space].channels
    assert p.latent_channels == c
    y = p(torch.randn(1, c, 32, 32))
    assert y.shape == (1, 3, 32 * p.scale, 32 * p.scale)
    assert y.min() >= 0 and y.max() <= 1


def test_unknown_name_lists_what_exists():
    with pytest.raises(ValueError, match="unknown previewer 'sd9-affine'.*sd1-affine"):
        previewers.load("sd9-affine")
