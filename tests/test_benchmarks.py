from pathlib import Path

import pytest
import torch

from benchmarks import frontier, overhead, speed, upsampler_frontier
from benchmarks.timing import median_seconds
from previewers import FAMILIES, build
from training.adam import LOSSES

CPU = torch.device("cpu")


class FakeClock:
    """A perf_counter that each call of `step` advances by the next of the given durations."""

    def __init__(self, durations):
        self.now, self.durations, self.calls = 0.0, iter(durations), 0

    def perf_counter(self):
        return self.now

    def step(self):
        self.calls += 1
        self.now += next(self.durations)


@pytest.mark.parametrize("durations, budget_s, calls, median", [
    # a slow call: one warm-up call (it took over a tenth of the budget), then min_repeats (3) timed ones
    ([0.5, 0.3, 0.1, 0.2], 1.0, 1 + 3, 0.2),
    # a fast call: warm-up until a tenth of the budget is spent (2 calls), then budget / seconds per call (15)
    ([0.001, 0.001] + [0.002, 0.001, 0.003] * 5, 0.015, 2 + 15, 0.002),
    # warm-up stops at ten calls however short they were; the repeats stop at max_repeats (20)
    ([1e-6] * 10 + [0.004] * 20, 1.0, 10 + 20, 0.004),
])
def test_median_seconds_is_the_median_of_the_timed_calls_after_warm_up(monkeypatch, durations, budget_s, calls, median):
    from benchmarks import timing

    clock = FakeClock(durations)
    monkeypatch.setattr(timing, "time", clock)
    assert median_seconds(clock.step, CPU, budget_s=budget_s, min_repeats=3, max_repeats=20) == pytest.approx(median)
    assert clock.calls == calls


def test_previewers_for_covers_every_family_of_the_space():
    found = speed.previewers_for("flux2")
    assert {p.family for _, p in found} == set(FAMILIES)
    assert all(p.latent_channels == 32 for _, p in found)


def test_macs_are_counted_from_the_convolutions_and_matmuls():
    x = torch.randn(1, 4, 8, 8)
    assert speed.count_macs(speed.run_model, build("affine", 4), x) == 4 * 3 * 64  # a 4→3 1x1 conv per pixel
    # conv: 4→64 3x3, 64→64 3x3, 64→3 1x1 per pixel
    assert speed.count_macs(speed.run_model, build("conv", 4), x) == (4 * 64 * 9 + 64 * 64 * 9 + 64 * 3) * 64


def test_every_upsampler_design_outputs_the_teachers_full_resolution():
    # the teachers decode 8x; a design that does not cannot be fitted (training.fit.build_for refuses it)
    for channels, context in ((4, 3), (32, 5)):
        for name, (design, loss) in upsampler_frontier.designs(context).items():
            out = build("upsampler", channels, **design)(torch.randn(1, channels, 2, 2))
            assert out.shape == (1, 3, 16, 16), name
            assert loss in LOSSES, name


@pytest.mark.slow
def test_speed_quick_writes_the_table(tmp_path):
    out = tmp_path / "speed.md"
    assert speed.main(["--quick", "--device", "cpu", "--spaces", "sd1", "flux2", "--out", str(out)]) == 0
    text = out.read_text()
    assert "Machine: CPU" in text and "## sd1" in text and "## flux2" in text and "## Targets" in text
    for family in FAMILIES:
        assert f"| {family}" in text or f"| sd1-{family}" in text
    assert "| SD 1.5 AutoencoderKL decode | 8× | 49.5 M |" in text
    assert "FLUX.2 AutoencoderKLFlux2 (32 ch) decode" in text
    if speed.TEACHERS.is_dir():
        assert "| taesd (teacher) |" in text and "| taef2 (teacher) |" in text
    else:
        assert "teacher taesd skipped" in text


@pytest.mark.slow
def test_overhead_quick_writes_the_table(tmp_path):
    out = tmp_path / "overhead.md"
    assert overhead.main(["--quick", "--device", "cpu", "--out", str(out)]) == 0
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| tiny |")]
    assert [row.split(" | ")[3] for row in rows] == ["callback, no files", "callback, PNG per step"]
    assert all(row.rstrip(" |").endswith("%") for row in rows)
    layouts = {line.split(" | ")[0].lstrip("| "): line.split(" | ") for line in text.splitlines()
               if line.startswith(("| SD 1.5 |", "| FLUX.1 |", "| Wan 2.1 |"))}
    assert set(layouts) == {"SD 1.5", "FLUX.1", "Wan 2.1"}
    assert layouts["FLUX.1"][1].startswith("FluxPipeline") and layouts["FLUX.1"][2] == "(1, 64, 64)"
    assert layouts["FLUX.1"][4] in ("flux1-affine", "affine (default args)")  # the shipped one where weights/ is
    assert layouts["Wan 2.1"][1].startswith("WanPipeline") and layouts["Wan 2.1"][2] == "(1, 16, 2, 8, 8)"
    assert layouts["SD 1.5"][6] == "1.00×" and all(cells[5].endswith("%") for cells in layouts.values())
    assert layouts["FLUX.1"][7].endswith("of (1, 16, 16, 16) |") and layouts["Wan 2.1"][7].endswith("of (2, 16, 8, 8) |")
    assert "- Wan 2.1: WanPipeline 64x64, 5 frames, 2 steps: 2 previews" in text


def test_overhead_layouts_are_the_real_latent_shapes():
    """FLUX.1 at 1024²: 4,096 tokens of 2x2 patches of 16-channel 128² latents; Wan 2.1 at 480x832, 81 frames:
    21 latent frames of 60x104 (the narrow VAEs have the real compression)."""
    flux, _ = overhead.build_layout_pipeline("flux1", CPU, torch.float32)
    wan, _ = overhead.build_layout_pipeline("wan", CPU, torch.float32)
    assert overhead.latent_shape("flux1", flux, *overhead.layout_size("flux1", False)) == (1, 4096, 64)
    assert overhead.latent_shape("wan", wan, *overhead.layout_size("wan", False)) == (1, 16, 21, 60, 104)
    assert overhead.latent_pixels("flux1", (1, 4096, 64)) == 128 * 128
    assert overhead.control_shape("flux1", (1, 4096, 64)) == (1, 16, 128, 128)
    assert overhead.control_shape("wan", (1, 16, 21, 60, 104)) == (21, 16, 60, 104)
    assert (flux.vae.config.scaling_factor, flux.vae.config.shift_factor) == (0.3611, 0.1159)


def test_png_run_writes_one_preview_per_step(tmp_path):
    pipe, kwargs = overhead.build_pipeline("tiny", CPU, torch.float32, side=16)
    previewer = build("affine", 4)
    with torch.inference_mode():
        callback = overhead.make_callback("callback, PNG per step", pipe, previewer, tmp_path)
        wall, spent = overhead.run_once(pipe, kwargs, 2, callback, CPU)
    assert len(spent) == pipe.num_timesteps and wall > sum(spent)
    assert len(list(tmp_path.glob("*.png"))) == pipe.num_timesteps


@pytest.mark.slow
def test_methods_quick_writes_one_table_of_every_method(shared, tmp_path):
    from benchmarks import methods

    out = tmp_path / "methods.md"
    assert methods.main(["--quick", "--space", "sd1", "--out", str(out)]) == 0
    rows = {line.split(" | ")[0].lstrip("| "): line for line in out.read_text().splitlines() if line.startswith("| ")}
    assert {"factor table", "conv", "upsampler", "TAESD", "full VAE", "ceiling of any latent-res preview"} <= set(rows)
    assert "| sd1-affine | latent |" in rows["factor table"] and "| taesd_decoder.safetensors | 8× |" in rows["TAESD"]
    assert "reference (is the teacher)" in rows["TAESD"] and rows["full VAE"].endswith("| 1× | 100% |")
    psnr = float(rows["conv"].split(" | ")[5].split(" / ")[0])
    assert 10 < psnr < 60


@pytest.mark.parametrize("channels, context", [(4, 3), (16, 3), (32, 5)])
def test_every_conv_design_builds_at_latent_resolution(channels, context):
    for name, design in frontier.designs(channels, context).items():
        y = build("conv", channels, **design)(torch.randn(1, channels, 12, 10))
        assert y.shape == (1, 3, 12, 10), name


@pytest.mark.slow
def test_frontier_validates_on_the_named_images_and_leaves_them_out_of_training(shared, tmp_path, monkeypatch):
    import training.commands.fit

    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path))  # a small recipe of its own, not the shared cache
    monkeypatch.setitem(frontier.CROPS, "count", 8)
    monkeypatch.setattr(training.commands.fit, "VALIDATION_TILES", 4)
    _, _, pairs, validation, data, context = frontier.space_data("sd1", 2, ("skimage_astronaut*",))
    assert pairs.source["excluded"] == ["skimage_astronaut*"] and len(pairs) == 8
    assert validation.source["only"] == ["skimage_astronaut*"] and validation.source["image_count"] == 1
    assert len(validation) == 2 * 4 and len(data.clean) == 2 and context == 3  # clean and noised tiles
    _, _, everything, none, _, _ = frontier.space_data("sd1", 2)
    assert none is None and everything.source["image_count"] == pairs.source["image_count"] + 1


def test_frontier_refuses_val_images_that_match_no_training_image(shared, capsys):
    with pytest.raises(SystemExit):
        frontier.main(["--space", "sd1", "--val-images", "no_such_image_*"])
    assert "--val-images: " in (err := capsys.readouterr().err) and "none of its images matches no_such_image_*" in err


def test_generalisation_scores_only_clean_samples_of_the_images_the_fit_held_out():
    from benchmarks.generalisation import seen_and_held_out
    from training.adam import split
    from training.data import Pairs

    image = torch.arange(20).repeat_interleave(3)  # 20 images, 3 crops each
    noised = torch.arange(60) % 3 == 0
    pairs = Pairs(torch.zeros(60, 4, 2, 2), torch.zeros(60, 3, 2, 2), torch.zeros(60, 3, 16, 16), noised, image, {})
    seen, held = seen_and_held_out(pairs, {"val_fraction": 0.1, "seed": 3})
    assert not noised[seen].any() and not noised[held].any() and len(seen) + len(held) == 40
    assert set(image[held].tolist()) == set(image[split(image, 0.1, 3)[1]].tolist()) and len(held) == 2 * 2
    assert not set(image[seen].tolist()) & set(image[held].tolist())


def test_generalisation_base_alone_is_the_least_squares_base_and_leaves_the_file_untouched():
    from benchmarks.generalisation import base_alone

    p = build("conv", 4, channels=(8,), kernels=(3, 1), base=3)
    torch.nn.init.normal_(p.body.net[-1].weight)  # a net that changes the output
    x = torch.randn(2, 4, 6, 6)
    with torch.no_grad():
        before = p(x)
        base = base_alone(p)
        expected = p.body.base(x * p.in_scale.view(-1, 1, 1) + p.in_shift.view(-1, 1, 1)).clamp(0, 1)
        torch.testing.assert_close(base(x), expected, atol=1e-6, rtol=0)
        torch.testing.assert_close(p(x), before, atol=0, rtol=0)
    assert not torch.allclose(before, expected)


def test_smoothing_folds_the_blur_into_one_conv_equal_to_the_affine_map_then_the_blur():
    import torch.nn.functional as F

    from benchmarks.smoothing import smoothed

    torch.manual_seed(0)
    ours = build("affine", 4)
    with torch.no_grad():
        for tensor in (ours.body.weight, ours.body.bias, ours.in_scale, ours.in_shift):
            tensor.normal_(0, 0.3)
    kernel = torch.rand(3, 3)
    x = torch.randn(2, 4, 9, 11)
    with torch.no_grad():
        rgb = ours.body(ours.normalise(x))  # the affine map unclamped, display units
        # the tools blur RGB in [-1, 1]: display (k * (2·rgb − 1) + 1) / 2, the conv family's replicate padding
        blurred = F.conv2d(F.pad(2 * rgb - 1, (1, 1, 1, 1), mode="replicate"), kernel.expand(3, 1, 3, 3), groups=3)
        expected = ((blurred + 1) / 2).clamp(0, 1)
        assert torch.allclose(smoothed(ours, kernel)(x), expected, atol=1e-5)


def test_day_one_fit_photos_are_nested_draws_of_the_training_photos(tmp_path):
    from benchmarks.day_one import fit_photos
    from previewers.first_use.fit import HELD_OUT, image_names

    four = {p.stem for p in fit_photos(4, tmp_path / "a").iterdir()}
    eight = {p.stem for p in fit_photos(8, tmp_path / "b").iterdir()}
    assert len(four) == 4 and len(eight) == 8 and four < eight and not eight & set(HELD_OUT)
    assert all((tmp_path / "b" / f"{n}.jpg").resolve().is_file() for n in eight)
    training = len(image_names()) - len(HELD_OUT)
    for bad in (0, training + 1):
        with pytest.raises(SystemExit, match=f"between 1 and {training}"):
            fit_photos(bad, tmp_path / f"bad{bad}")


def test_per_pixel_mix_validates_on_the_photos_validation_images_sh_names():
    import subprocess

    from benchmarks import per_pixel_mix

    script = Path(per_pixel_mix.__file__).parent / "validation_images.sh"
    sourced = subprocess.run(["bash", "-c", f"source {script}; echo \"$flux1_val_images\""],
                             capture_output=True, text=True, check=True).stdout.strip()
    assert per_pixel_mix.validation_globs() == sourced and "skimage_astronaut*" in sourced


def test_per_pixel_mix_names_the_training_mix_from_the_files_metadata():
    import previewers
    from benchmarks.per_pixel_mix import recipe

    data = {"image_count": 39, "noise_mix": 0.5, "crops": {"count": 2048, "dihedral": 0.5, "contrast": 0.5}}
    meta = {"family": "mlp", "args": {"hidden": [32, 32], "base": 2},
            "recipe": {"data": data, "training": {"lr": 2e-3, "steps": 8000}, "result": {"best_step": 1000}}}
    assert recipe(meta) == "mlp 32-32, 39 images, 2048 crops, noise mix 0.5, lr 0.002, best step 1000"
    clean = {**meta, "recipe": {**meta["recipe"], "data": {"image_count": 39, "noise_mix": 0.0,
                                                           "crops": {"count": 512, "dihedral": 0, "contrast": 0}}}}
    assert recipe(clean) == "mlp 32-32, 39 images, 512 crops, noise mix 0.0, no augmentation, lr 0.002, best step 1000"
    untrained = {**meta, "recipe": {**meta["recipe"], "training": {"lr": 2e-3, "steps": 0}}}
    assert recipe(untrained) == "mlp 32-32, 39 images, 2048 crops, noise mix 0.5, 0 Adam steps (its least-squares base)"
    # a shipped closed-form file records no training and no result
    assert recipe(previewers.load("sdxl-quadratic").meta) == "quadratic, 39 images, 2048 crops, noise mix 0.5"


def test_per_pixel_mix_compares_with_per_pixel_peers_only(shared):
    from benchmarks.per_pixel_mix import per_pixel_peers

    assert sorted(per_pixel_peers("sd1")) == ["birchlabs-sd1.4 (peer)", "birchlabs-sd1.5 (peer)"]
    assert per_pixel_peers("sdxl") == {}


def test_per_pixel_mix_refuses_a_file_of_another_space(capsys):
    from benchmarks import per_pixel_mix
    from previewers.models.registry import weights_dir

    with pytest.raises(SystemExit):
        per_pixel_mix.main(["--space", "sdxl", str(weights_dir() / "sd1-mlp.safetensors")])
    assert "not sdxl files: " in capsys.readouterr().err
    with pytest.raises(SystemExit):
        per_pixel_mix.main(["--space", "sdxl", "no/such.safetensors"])
    assert "no such weight file: no/such.safetensors" in capsys.readouterr().err
