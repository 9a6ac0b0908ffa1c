"""Training data: crop planning, noise trajectories, pairs from images and saved latents, the cache."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

pytest.importorskip("diffusers")

from builders import fake_teacher  # noqa: E402

from training import data as data_module  # noqa: E402
from training.data import Crops, image_files, make_pairs, plan_crops, render_crops  # noqa: E402
from training.noise import ddpm_alphas_cumprod, eval_noise, trajectory_noise  # noqa: E402


def test_crop_plan_is_deterministic_balanced_and_multiscale(photos):
    sizes = [(300, 200), (160, 240), (1200, 900)]
    crops = Crops(count=60, size=64, seed=3)
    plan = plan_crops(sizes, crops)
    assert plan == plan_crops(sizes, crops) and plan != plan_crops(sizes, Crops(count=60, size=64, seed=4))
    assert [sum(c.image == i for c in plan) for i in range(3)] == [20, 20, 20]
    for c in plan:
        left, top, right, bottom = c.box
        w, h = sizes[c.image]
        assert right - left == bottom - top and 0 <= left and right <= w and 0 <= top and bottom <= h
    big = [c.box[2] - c.box[0] for c in plan if c.image == 2]
    # the 900-pixel short side is shown whole-ish (side ~ 900) down to 4x detail (side 225)
    assert min(big) < 300 and max(big) > 600
    assert any(c.gray for c in plan) and any(c.saturation > 1 for c in plan)


def test_rendered_crops_include_grayscale(photos):
    files = image_files(photos)
    assert [f.name for f in files] == ["p0.png", "p1.png", "p2.png"]
    plan = plan_crops([(300, 200), (160, 240), (1200, 900)], Crops(count=30, size=32, gray=0.5))
    pixels = render_crops(files, plan, 32, progress=False)
    assert pixels.shape == (30, 3, 32, 32) and pixels.dtype == torch.uint8
    gray = [p for c, p in zip(plan, pixels) if c.gray]
    colour = [p for c, p in zip(plan, pixels) if not c.gray]
    assert gray and all((p[0] == p[1]).all() and (p[1] == p[2]).all() for p in gray)  # R = G = B
    assert not any((p[0] == p[1]).all() for p in colour)


def test_noise_follows_the_schedules():
    z = torch.ones(512, 1, 1, 1)
    alphas = ddpm_alphas_cumprod()
    assert alphas.shape == (1000,) and alphas[0] > 0.999 and alphas[-1] < 0.01  # SD's scaled_linear schedule
    torch.testing.assert_close(alphas[500], torch.tensor(0.2763), atol=1e-3, rtol=0)
    g = torch.Generator().manual_seed(0)
    flow = trajectory_noise(z, "flow", g)
    # (1 − σ)·1 + σ·ε: mean of (1 − σ) over uniform σ is 0.5
    assert abs(flow.mean().item() - 0.5) < 0.1
    ddpm = trajectory_noise(z, "ddpm", g)
    assert ddpm.shape == z.shape and not torch.equal(ddpm, flow)
    with pytest.raises(ValueError, match="unknown noising trajectory"):
        trajectory_noise(z, "edm", g)
    torch.testing.assert_close(eval_noise(z, torch.Generator().manual_seed(1)),
                               0.5 * z + 0.5 * torch.randn(z.shape, generator=torch.Generator().manual_seed(1)))


def test_pairs_targets_are_the_teachers_decodes(photos):
    teacher = fake_teacher()
    pairs = make_pairs(teacher, "flow", images=photos, crops=Crops(count=20, size=32), noise_mix=0.5, progress=False)
    assert pairs.latents.shape == (20, 4, 4, 4) and pairs.small.shape == (20, 3, 4, 4) and pairs.full.shape == (20, 3, 32, 32)
    assert pairs.full.dtype == torch.float16 and 3 <= int(pairs.noised.sum()) <= 17
    torch.testing.assert_close(pairs.full.float(), teacher.decoder(pairs.latents), atol=1e-3, rtol=0)
    torch.testing.assert_close(pairs.small, F.avg_pool2d(teacher.decoder(pairs.latents), 8))
    clean = pairs.latents[~pairs.noised]
    torch.testing.assert_close(clean[:, 3], clean[:, :3].mean(1))  # untouched encoder output
    assert pairs.source["noise_mix"] == 0.5 and pairs.source["crops"]["count"] == 20


def test_cache_hit_gives_identical_pairs_without_decoding(photos, tmp_path):
    calls = []
    teacher = fake_teacher(calls)
    options = dict(images=photos, crops=Crops(count=70, size=32, seed=1), cache_dir=tmp_path / "cache", teacher_id="abc",
                   progress=False)
    first = make_pairs(teacher, "ddpm", **options)
    assert sum(calls) == 70 and len(list((tmp_path / "cache").rglob("shard-*.safetensors"))) == 2
    calls.clear()
    second = make_pairs(teacher, "ddpm", **options)
    assert calls == []
    for name in ("latents", "small", "full", "noised"):
        assert torch.equal(getattr(first, name), getattr(second, name))
    # a different teacher fingerprint is a different cache entry
    make_pairs(teacher, "ddpm", **{**options, "teacher_id": "xyz"})
    assert sum(calls) == 70
    # a folder copied anew (new modification times, same contents) still hits; changed contents miss
    calls.clear()
    for f in photos.iterdir():
        os.utime(f, (1e9, 1e9))
    make_pairs(teacher, "ddpm", **options)
    assert calls == []
    Image.fromarray(np.zeros((200, 300, 3), dtype=np.uint8)).save(photos / "p0.png")
    make_pairs(teacher, "ddpm", **options)
    assert sum(calls) == 70


def test_pairs_from_saved_latents_need_no_encoder(tmp_path):
    folder = tmp_path / "latents"
    folder.mkdir()
    save_file({"latents": torch.randn(2, 4, 8, 10)}, folder / "a.safetensors")
    torch.save(torch.randn(4, 6, 6), folder / "b.pt")
    np.save(folder / "c.npy", np.random.default_rng(0).normal(size=(4, 9, 9)).astype(np.float32))
    teacher = fake_teacher()
    teacher.encoder = None
    pairs = make_pairs(teacher, "ddpm", latents=folder, crops=Crops(size=48), noise_mix=0.0, progress=False)
    assert pairs.latents.shape == (4, 4, 6, 6) and not pairs.noised.any()
    with pytest.raises(ValueError, match="has no encoder"):
        make_pairs(teacher, "ddpm", images=folder, progress=False)
    torch.save(torch.randn(16, 6, 6), folder / "d.pt")
    with pytest.raises(ValueError, match="C = 4"):
        make_pairs(teacher, "ddpm", latents=folder, crops=Crops(size=48), progress=False)


def test_bad_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        image_files(tmp_path / "missing")
    with pytest.raises(ValueError, match="no images"):
        image_files(tmp_path)
    with pytest.raises(ValueError, match="not a multiple"):
        make_pairs(fake_teacher(), "ddpm", images=tmp_path, crops=Crops(size=30), progress=False)


def test_augmentation_is_planned_independently_and_applied_exactly(photos):
    from training.crops import augment

    sizes = [(300, 200), (160, 240), (1200, 900)]
    plain = plan_crops(sizes, Crops(count=40, size=32))
    augmented = plan_crops(sizes, Crops(count=40, size=32, dihedral=0.5, hue=0.5, contrast=0.5))
    # turning augmentation on changes no crop's place, only what is done to it
    assert [(c.image, c.box, c.gray) for c in plain] == [(c.image, c.box, c.gray) for c in augmented]
    assert all(c.dihedral == 0 and c.hue == 0 and c.contrast == 1 for c in plain)
    assert 5 < sum(c.dihedral > 0 for c in augmented) < 35 and 5 < sum(c.hue > 0 for c in augmented) < 35
    assert 5 < sum(c.contrast != 1 for c in augmented) < 35
    assert not any(c.gray and c.hue for c in augmented)

    rng = np.random.default_rng(1)
    piece = Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    base = data_module.Crop(0, (0, 0, 8, 8), False, 1.0)
    array = np.array(piece)
    rot90 = np.array(augment(piece, data_module.Crop(0, (0, 0, 8, 8), False, 1.0, dihedral=3)))
    np.testing.assert_array_equal(rot90, np.rot90(array))  # ROTATE_90 is counter-clockwise
    mirrored = np.array(augment(piece, data_module.Crop(0, (0, 0, 8, 8), False, 1.0, dihedral=1)))
    np.testing.assert_array_equal(mirrored, array[:, ::-1])
    np.testing.assert_array_equal(np.array(augment(piece, base)), array)
    # a third of a turn maps pure red to pure green
    red = Image.new("RGB", (4, 4), (255, 0, 0))
    shifted = np.array(augment(red, data_module.Crop(0, (0, 0, 4, 4), False, 1.0, hue=1 / 3)))
    assert shifted[0, 0, 1] > 240 and shifted[0, 0, 0] < 15 and shifted[0, 0, 2] < 15


def test_pairs_record_each_samples_source_image(photos):
    pairs = make_pairs(fake_teacher(), "flow", images=photos, crops=Crops(count=9, size=32), progress=False)
    assert pairs.image.tolist() == [c.image for c in plan_crops([(300, 200), (160, 240), (1200, 900)],
                                                                 Crops(count=9, size=32))]


def test_excluded_images_are_never_cropped(photos, tmp_path):
    assert [f.name for f in image_files(photos, exclude=("p1*", "*.jpg"))] == ["p0.png", "p2.png"]
    assert [f.name for f in image_files(photos, exclude=("p0*",), only=("p0*", "p2*"))] == ["p2.png"]
    with pytest.raises(ValueError, match="leaves none of its 3 images"):
        image_files(photos, exclude=("p*",))
    options = dict(images=photos, crops=Crops(count=8, size=32), cache_dir=tmp_path / "cache", teacher_id="abc",
                   progress=False)
    kept = make_pairs(fake_teacher(), "ddpm", exclude=("p1.png",), **options)
    everything = make_pairs(fake_teacher(), "ddpm", **options)  # a different listing is a different cache entry
    assert kept.source["excluded"] == ["p1.png"] and kept.source["image_count"] == 2 and "excluded" not in everything.source
    assert kept.image.tolist() == [c.image for c in plan_crops([(300, 200), (1200, 900)], Crops(count=8, size=32))]
    assert not torch.equal(kept.latents, everything.latents)


def test_streamed_pairs_read_the_same_samples_from_the_shard_cache(photos, tmp_path):
    from training.streamed import ShardColumn

    options = dict(images=photos, crops=Crops(count=70, size=32, seed=2), cache_dir=tmp_path / "cache",
                   teacher_id="abc", progress=False)
    held = make_pairs(fake_teacher(), "ddpm", **options)
    streamed = make_pairs(fake_teacher(), "ddpm", stream=True, **options)
    assert isinstance(streamed.latents, ShardColumn) and len(streamed) == 70
    assert streamed.full.shape == held.full.shape and streamed.full.dtype == torch.float16
    pick = torch.tensor([69, 3, 64, 63, 3])  # across both shards, unordered, repeated
    for name in ("latents", "small", "full"):
        assert torch.equal(getattr(streamed, name)[pick], getattr(held, name)[pick])
        assert torch.equal(getattr(streamed, name)[60:68], getattr(held, name)[60:68])
    assert torch.equal(streamed.noised, held.noised) and torch.equal(streamed.image, held.image)
    assert (next((tmp_path / "cache").iterdir()) / "index.json").is_file()
    with pytest.raises(ValueError, match="needs a cache folder"):
        make_pairs(fake_teacher(), "ddpm", images=photos, stream=True, progress=False)
