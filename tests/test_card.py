"""The weight card: the one reader and writer of weight-file metadata."""

import json

import pytest
import torch
from safetensors.torch import load_file as read_tensors
from safetensors.torch import save_file

import previewers
from previewers.first_use.fit import first_use_metrics
from previewers.models.card import HeldOutSet, Metrics, WeightCard
from previewers.models.families import affine
from previewers.models.weightfile import METADATA_KEY, load_file, read_header, save


def raw_metadata(path) -> dict:
    return json.loads(read_header(path)["__metadata__"][METADATA_KEY])


@pytest.mark.parametrize("name", previewers.available())
def test_every_shipped_card_reads_back_as_written(name):
    raw = raw_metadata(previewers.weights_dir() / f"{name}.safetensors")
    card = WeightCard.from_dict(raw, name)
    assert card.to_dict() == raw
    assert card.space == name.split("-")[0] and card.metrics.clean.psnr > 0


def test_a_previewer_card_round_trips_through_its_file(tmp_path):
    metrics = first_use_metrics(30.0, 12.0, 8, 128)
    path = save(affine(4), tmp_path / "a.safetensors", space="sd1", teacher="t", metrics=metrics, tool="x")
    assert raw_metadata(path) == load_file(path).meta
    card = WeightCard.of(load_file(path))
    assert (card.metrics.clean.psnr, card.metrics.held_out.count, card.extra) == (30.0, 8, {"tool": "x"})


def test_first_use_metrics_have_the_one_held_out_shape_and_earlier_files_read_into_it():
    held_out = first_use_metrics(30.0, 12.0, 8, 128)["held_out"]
    assert {"images", "image_count", "tile", "count", "seed"} <= set(held_out)  # training.evaluate.as_metrics's keys
    earlier = {"clean": {"psnr": 30.0}, "held_out": {"images": ["coffee", "rocket"], "crops": 8, "tile": 128}}
    assert Metrics.from_dict(earlier).held_out == HeldOutSet.from_dict(held_out)


@pytest.mark.parametrize("change, message", [
    (dict(metrics={"clean": {"psnr": "high"}}), r"metrics\.clean\.psnr = 'high', expected float"),
    (dict(metrics={"clean": {"psnr": 30.0}, "lpips": 0.1}), r"an unknown key 'metrics\.lpips'"),
    (dict(metrics={"noised": {"psnr": 30.0}}), r"lacks 'metrics\.clean'"),
    (dict(space=["sd1"]), r"space = \['sd1'\], expected str"),
    (dict(latent_channels=True), r"latent_channels = True, expected int"),
])
def test_a_damaged_card_is_refused_naming_the_file_and_the_field(tmp_path, change, message):
    path = save(affine(4), tmp_path / "a.safetensors")
    save_file(read_tensors(path), path, metadata={METADATA_KEY: json.dumps({**raw_metadata(path), **change})})
    with pytest.raises(ValueError, match=r"a\.safetensors: latent-preview metadata (has )?" + message):
        load_file(path)


def test_save_checks_the_card_before_writing(tmp_path):
    with pytest.raises(ValueError, match="metrics.clean.psnr"):
        save(affine(4), tmp_path / "a.safetensors", metrics={"clean": {"psnr": None}})
    assert not list(tmp_path.iterdir())


def test_previewers_without_a_weight_file_have_cards_too():
    p = affine(4)
    assert WeightCard.of(p).to_dict() == {"format_version": 1, "family": "affine", "latent_channels": 4, "args": {},
                                          "scale": 1}
    assert torch.equal(p.in_scale, torch.ones(4))  # reading a card changes nothing
