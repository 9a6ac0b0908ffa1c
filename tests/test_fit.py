"""Fitting: planted maps recovered exactly, end to end against a tiny diffusers VAE, and a real fit on taesd."""

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers")

from builders import tiny_vae_folder, write_images  # noqa: E402

import previewers  # noqa: E402
from previewers.cli import main  # noqa: E402
from training.adam import Training  # noqa: E402
from training.data import Crops, Pairs, make_pairs  # noqa: E402
from training.evaluate import evaluate, held_out  # noqa: E402
from training.export import unit_factors  # noqa: E402
from training.fit import fit  # noqa: E402
from training.teachers import load_teacher  # noqa: E402


class PlantedTeacher:
    """Just what fit() reads from a teacher."""

    name, latent_channels, scale_factor, space_info = "planted", 4, 8, {}


def planted_pairs(latents: torch.Tensor, rgb: torch.Tensor) -> Pairs:
    n = len(latents)
    return Pairs(latents, rgb, torch.zeros(n, 3, 1, 1), torch.zeros(n, dtype=torch.bool), torch.arange(n), {"planted": True})


def latents(n=24, side=8, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # off-centre, unequal channel scales: normalisation must be undone exactly
    return torch.randn(n, 4, side, side, generator=g) * torch.tensor([0.5, 1.0, 2.0, 0.7]).view(1, 4, 1, 1) + 0.3


def test_planted_affine_is_recovered():
    x = latents()
    w = torch.tensor([[0.3, -0.2, 0.1, 0.05], [0.1, 0.25, -0.15, 0.0], [-0.2, 0.05, 0.2, 0.1]])
    b = torch.tensor([0.4, 0.5, 0.6])
    rgb = torch.einsum("oc,nchw->nohw", w, x) + b.view(1, 3, 1, 1)
    p = fit(PlantedTeacher(), "affine", planted_pairs(x, rgb), space="sd1", progress=False)
    weight, bias = unit_factors(p)
    torch.testing.assert_close(weight.T.float(), w, atol=1e-4, rtol=0)
    torch.testing.assert_close(bias.float(), b, atol=1e-4, rtol=0)
    assert p.meta["recipe"]["method"] == "least squares" and p.meta["space"] == "sd1"


def test_planted_linear_keeps_the_tools_display_offset():
    # published no-bias tables show (x·F + 1)/2: our linear is 0.5 + W·x, exportable with bias 0
    x = latents()
    w = torch.tensor([[0.3, -0.2, 0.1, 0.05], [0.1, 0.25, -0.15, 0.0], [-0.2, 0.05, 0.2, 0.1]])
    rgb = 0.5 + torch.einsum("oc,nchw->nohw", w, x)
    p = fit(PlantedTeacher(), "linear", planted_pairs(x, rgb), space="sd1", progress=False)
    weight, bias = unit_factors(p)
    torch.testing.assert_close(weight.T.float(), w, atol=1e-4, rtol=0)
    torch.testing.assert_close(bias.float(), torch.full((3,), 0.5), atol=1e-4, rtol=0)


def test_planted_quadratic_is_recovered():
    x = latents()
    g = torch.Generator().manual_seed(1)
    # small enough that outputs stay (mostly) inside the display range, as a preview's do
    q = torch.randn(3, 4, 4, generator=g) * 0.01
    w, b = torch.randn(3, 4, generator=g) * 0.05, torch.tensor([0.5, 0.4, 0.3])

    def planted(z):
        return (torch.einsum("nihw,oij,njhw->nohw", z, q, z) + torch.einsum("oc,nchw->nohw", w, z)
                + b.view(1, 3, 1, 1))

    p = fit(PlantedTeacher(), "quadratic", planted_pairs(x, planted(x)), space="sd1", progress=False)
    fresh = latents(n=4, seed=5)
    with torch.no_grad():
        torch.testing.assert_close(p.body(p.normalise(fresh)), planted(fresh), atol=1e-4, rtol=0)


def test_planted_linear_conv_is_recovered_with_replicate_borders():
    x = latents(side=12)
    kernel, bias = torch.randn(3, 4, 3, 3, generator=torch.Generator().manual_seed(2)) * 0.03, torch.tensor([0.5, 0.5, 0.5])
    rgb = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), kernel, bias)
    p = fit(PlantedTeacher(), "conv", planted_pairs(x, rgb), space="sd1", args={"channels": [], "kernels": [3]}, progress=False)
    fresh = latents(n=4, side=12, seed=6)
    want = F.conv2d(F.pad(fresh, (1, 1, 1, 1), mode="replicate"), kernel, bias)
    with torch.no_grad():
        torch.testing.assert_close(p.body(p.normalise(fresh)), want, atol=1e-4, rtol=0)


def test_gradient_fit_learns_a_planted_nonlinear_map(one_thread):
    x = latents(n=40)
    rgb = torch.sigmoid(torch.stack([x[:, 0] * x[:, 1], x[:, 2], -x[:, 3]], 1))
    pairs = planted_pairs(x, rgb)
    p = fit(PlantedTeacher(), "mlp", pairs, space="sd1", device="cpu",
            training=Training(steps=150, eval_every=50, lr=2e-2), progress=False)
    with torch.no_grad():
        mse = (p(x) - rgb).square().mean().item()
    constant = (rgb - rgb.mean((0, 2, 3), keepdim=True)).square().mean().item()
    assert mse < constant / 10
    assert p.meta["recipe"]["method"] == "Adam" and p.meta["recipe"]["result"]["best_step"] > 0


@pytest.mark.slow
def test_fit_cli_against_a_tiny_diffusers_vae(tmp_path, capsys, one_thread):
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images")
    out = tmp_path / "out"
    start = time.perf_counter()
    code = main(["fit", "--teacher", str(vae), "--space", "sd1", "--family", "linear,affine,quadratic,mlp,conv,upsampler",
                 "--args", '{"upsampler": {"width": 8, "depth": 0, "stages": [8]}, "conv": {"channels": [8], "kernels": [3, 1]}}',
                 "--images", str(images), "--crops", "12", "--crop-size", "32", "--steps", "30", "--batch", "4",
                 "--device", "cpu", "--cache", str(tmp_path / "cache"), "--out", str(out),
                 "--eval-images", str(images), "--eval-tile", "32", "--eval-count", "2"])
    elapsed = time.perf_counter() - start
    assert code == 0
    seconds = []
    for family in ("linear", "affine", "quadratic", "mlp", "conv", "upsampler"):
        p = previewers.load(out / f"sd1-{family}.safetensors")
        recipe = p.meta["recipe"]
        assert p.meta["space"] == "sd1" and p.meta["teacher"] == "vae"
        assert recipe["data"]["crops"]["count"] == 12 and recipe["samples"] == 12 and recipe["torch"] == torch.__version__
        assert recipe["device"].startswith("cpu")
        seconds.append(recipe["seconds"])
        assert set(p.meta["metrics"]["clean"]) == {"psnr", "ssim", "ciede2000"}
        with torch.no_grad():
            assert p(torch.randn(1, 4, 16, 16)).shape == (1, 3, 16 * p.scale, 16 * p.scale)
    assert previewers.load(out / "sd1-upsampler.safetensors").scale == 2
    # each file records the wall time of its own fit: together no more than the command took (to 0.01 s each)
    assert all(isinstance(s, float) for s in seconds) and sum(seconds) <= elapsed + 0.01 * len(seconds)
    assert "wrote" in capsys.readouterr().out


def test_fit_cli_on_saved_latents_only(tmp_path):
    vae = tiny_vae_folder(tmp_path / "vae")
    latents_dir = tmp_path / "latents"
    latents_dir.mkdir()
    torch.save(torch.randn(3, 4, 20, 20), latents_dir / "run0.pt")  # (B, C, h, w) saved from a pipeline
    np.save(latents_dir / "run1.npy", np.random.default_rng(0).normal(size=(4, 18, 24)).astype(np.float32))
    out = tmp_path / "sd1-affine.safetensors"
    assert main(["fit", "--teacher", str(vae), "--space", "sd1", "--family", "affine", "--latents", str(latents_dir),
                 "--crop-size", "32", "--no-cache", "--out", str(out), "--why", "frontier run X chose it"]) == 0
    recipe = previewers.load(out).meta["recipe"]
    assert recipe["samples"] == 4 and recipe["data"]["latent_files"] == 2 and recipe["data"]["images"] is None
    assert recipe["why"] == "frontier run X chose it"


def test_fit_cli_rejects_bad_input(tmp_path, capsys):
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images", count=1)
    base = ["fit", "--teacher", str(vae), "--images", str(images), "--crop-size", "32", "--crops", "2", "--no-cache"]
    assert main([*base, "--space", "sd3", "--family", "affine", "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "4-channel latents, but space sd3 has 16" in capsys.readouterr().err
    assert main([*base, "--space", "sd1", "--family", "affine,cubic", "--out", str(tmp_path)]) == 2
    assert "unknown family cubic" in capsys.readouterr().err
    assert main([*base, "--space", "sd1", "--family", "affine,linear", "--out", str(tmp_path / "a.safetensors")]) == 2
    assert "give a folder" in capsys.readouterr().err


@pytest.mark.slow
def test_affine_fitted_on_taesd_beats_a_constant_colour_on_kodak(shared, tmp_path):
    teachers = shared / "models" / "teachers"
    teacher = load_teacher(teachers / "taesd_decoder.safetensors")
    pairs = make_pairs(teacher, "ddpm", images=shared / "data" / "train", crops=Crops(count=12, size=128), progress=False)
    path = previewers.save(fit(teacher, "affine", pairs, space="sd1", progress=False), tmp_path / "sd1-affine.safetensors")
    p = previewers.load(path)
    assert p.family == "affine" and p.meta["teacher"] == "taesd"

    class MeanColour(torch.nn.Module):
        """Zero-information baseline: the training targets' mean colour everywhere."""

        scale, meta = 1, {}

        def forward(self, x):
            mean = pairs.small.clamp(0, 1).mean((0, 2, 3)).view(1, 3, 1, 1)
            return mean.expand(x.shape[0], 3, *x.shape[-2:])

    data = held_out(teacher, shared / "data" / "kodak24", size=128, count=8, progress=False)
    ours, baseline = evaluate({"ours": p, "mean": MeanColour()}, data, progress=False)
    assert ours.clean["psnr"] > baseline.clean["psnr"] + 5
    assert ours.noised["psnr"] > baseline.noised["psnr"] + 3
    assert ours.clean["ciede2000"] < baseline.clean["ciede2000"]


def test_reweighting_ignores_what_the_display_clamp_hides():
    # targets clipped by the display: plain least squares bends the map toward the clipped values,
    # the clamp-aware rounds find the planted map again (zero error after the clamp)
    x = latents(n=32)
    w = torch.tensor([[0.3, -0.2, 0.1, 0.05], [0.1, 0.25, -0.15, 0.0], [-0.2, 0.05, 0.2, 0.1]])
    planted = torch.einsum("oc,nchw->nohw", w, x) + 0.5
    clipped = planted.clamp(0, 1)
    assert 0.05 < (clipped != planted).float().mean() < 0.3
    pairs = planted_pairs(x, clipped)
    errors = []
    for rounds in (0, 3, 16):
        with torch.no_grad():
            errors.append((fit(PlantedTeacher(), "affine", pairs, space="sd1", reweight=rounds, progress=False)(x)
                           - clipped).abs().max().item())
    assert errors[0] > 0.1 and errors[0] > errors[1] > errors[2] and errors[2] < 1e-3


def no_pairs(*args, **kwargs):
    raise AssertionError("training pairs were built before the options were checked")


@pytest.mark.parametrize("option, value, message", [
    ("--crops", "0", "--crops must be at least 1, got 0"),
    ("--steps", "-1", "--steps must be at least 0, got -1"),
    ("--batch", "0", "--batch must be at least 1, got 0"),
    ("--noise-mix", "1.5", "--noise-mix must be between 0 and 1, got 1.5"),
    ("--augment", "-0.1", "--augment must be between 0 and 1, got -0.1"),
    ("--hue", "2", "--hue must be between 0 and 1, got 2.0"),
    ("--val-images", "photo_*", "none of its images matches photo_*"),
    ("--val-images", "img*", "excluding img* leaves none of its 1 images"),
    ("--val-images", " , ", "--val-images is empty"),
    ("--args", '{"kernels": [2]}', "odd kernels"),
    ("--args", '{"width": 8}', "bad arguments for family 'conv'"),
])
def test_fit_checks_every_option_before_any_data_work(tmp_path, capsys, monkeypatch, option, value, message):
    monkeypatch.setattr("training.data.make_pairs", no_pairs)
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images", count=1)
    assert main(["fit", "--teacher", str(vae), "--space", "sd1", "--family", "conv", "--images", str(images),
                 "--crop-size", "32", "--no-cache", "--out", str(tmp_path / "c.safetensors"), option, value]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("option", ["--exclude-images", "--val-images"])
def test_image_patterns_without_an_image_folder_are_an_error(tmp_path, capsys, monkeypatch, option):
    monkeypatch.setattr("training.data.make_pairs", no_pairs)
    assert main(["fit", "--teacher", "t", "--space", "sd1", "--family", "conv", "--latents", str(tmp_path),
                 "--out", str(tmp_path / "c.safetensors"), option, "a_*"]) == 2
    assert f"{option} names files of --images; give --images" in capsys.readouterr().err


def test_fit_refuses_to_overwrite_without_force(tmp_path, capsys):
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images", count=1)
    out = previewers.save(previewers.models.families.affine(4), tmp_path / "sd1-affine.safetensors")
    before = out.read_bytes()
    base = ["fit", "--teacher", str(vae), "--space", "sd1", "--family", "affine", "--images", str(images),
            "--crop-size", "32", "--crops", "2", "--no-cache", "--out", str(out)]
    assert main(base) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--force" in err
    assert out.read_bytes() == before
    assert main([*base, "--force"]) == 0
    assert out.read_bytes() != before


@pytest.mark.parametrize("command", ["fit", "eval"])
def test_missing_train_extras_say_what_to_install(tmp_path, capsys, monkeypatch, command):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if diffusers were not installed
    argv = [command, "--teacher", "t", "--space", "sd1", "--images", str(tmp_path)]
    argv += ["--family", "affine", "--out", str(tmp_path / "o")] if command == "fit" else ["--previewer", "sd1-affine"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "needs diffusers" in err and "pip install 'latent-preview[train]'" in err and "Traceback" not in err


def test_validation_holds_out_whole_images():
    from training.adam import split

    groups = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, -1, -1])
    train, val = split(groups, 0.3, seed=0)
    assert sorted(train.tolist() + val.tolist()) == list(range(12)) and len(val) > 0
    assert not set(groups[train].tolist()) & set(groups[val][groups[val] >= 0].tolist())


def test_adam_fits_validate_on_the_validation_samples_and_train_on_every_pair(one_thread):
    from previewers.metrics import psnr_from_mse
    from training.adam import display_loss
    from training.evaluate import HeldOut, validation_pairs

    x, rgb, pairs = residual_case()
    other, other_rgb, _ = residual_case()
    other, other_rgb = other[:6] * 1.5, other_rgb[:6].flip(1)  # not like the training pairs
    validation = validation_pairs(HeldOut(other[:3], other[3:], other_rgb[:3], other_rgb[3:], {"tiles": "planted"}))
    assert validation.noised.tolist() == [False] * 3 + [True] * 3
    untrained = fit(PlantedTeacher(), "mlp", pairs, space="sd1", args={"hidden": [16], "base": 2}, device="cpu",
                    training=Training(steps=0), progress=False, validation=validation)
    with torch.no_grad():  # scored as validation scores: unclamped output, errors the clamp hides left out
        expected = float(psnr_from_mse(display_loss(untrained.body(untrained.normalise(other)), other_rgb).item()))
    recipe = untrained.meta["recipe"]
    assert recipe["result"]["start_val_psnr"] == pytest.approx(expected, abs=1e-3)
    assert recipe["validation"] == {"tiles": "planted"}
    trained = fit(PlantedTeacher(), "mlp", pairs, space="sd1", args={"hidden": [16], "base": 2}, device="cpu",
                  training=Training(steps=100, eval_every=50, lr=1e-2), progress=False,
                  validation=validation_pairs(HeldOut(x[:20], x[20:], rgb[:20], rgb[20:], {})))
    result = trained.meta["recipe"]["result"]  # validating on the training map itself: it improves
    assert result["val_psnr"] > result["start_val_psnr"] and result["best_step"] > 0


def test_fit_validates_on_tiles_of_the_named_images_and_never_trains_on_them(tmp_path, one_thread):
    vae = tiny_vae_folder(tmp_path / "vae")
    images = write_images(tmp_path / "images", count=3, size=(96, 64))
    out = tmp_path / "sd1-mlp.safetensors"
    assert main(["fit", "--teacher", str(vae), "--space", "sd1", "--family", "mlp", "--images", str(images),
                 "--crops", "6", "--crop-size", "32", "--steps", "20", "--batch", "4", "--device", "cpu",
                 "--cache", str(tmp_path / "cache"), "--out", str(out), "--val-images", "img1*"]) == 0
    recipe = previewers.load(out).meta["recipe"]
    assert recipe["data"]["image_count"] == 2 and recipe["data"]["excluded"] == ["img1*"]
    assert recipe["validation"]["image_count"] == 1 and recipe["validation"]["only"] == ["img1*"]
    assert recipe["validation"]["tile"] == 32  # the 96x64 image gives six 32² tiles, each clean and noised
    assert recipe["samples"] == 6


def residual_case():
    x = latents(n=40)
    rgb = torch.sigmoid(torch.stack([x[:, 0] * x[:, 1], x[:, 2], -x[:, 3]], 1))
    return x, rgb, planted_pairs(x, rgb)


@pytest.mark.parametrize("family,args", [("mlp", {"hidden": [16], "base": 1}), ("mlp", {"hidden": [16], "base": 2}),
                                         ("conv", {"channels": [8], "kernels": [3, 1], "base": 3})])
def test_residual_nets_start_at_their_closed_form_base_and_only_improve(one_thread, tmp_path, family, args):
    x, rgb, pairs = residual_case()
    base_family, base_args = {(True, 1): ("affine", {}), (True, 2): ("quadratic", {}),
                              (False, 3): ("conv", {"channels": [], "kernels": [3]})}[family == "mlp", args["base"]]
    base = fit(PlantedTeacher(), base_family, pairs, space="sd1", args=base_args, progress=False)
    untrained = fit(PlantedTeacher(), family, pairs, space="sd1", args=args, device="cpu",
                    training=Training(steps=0, eval_every=50), progress=False)
    torch.testing.assert_close(untrained(x), base(x), atol=1e-5, rtol=0)  # step 0 is the least-squares previewer
    trained = fit(PlantedTeacher(), family, pairs, space="sd1", args=args, device="cpu",
                  training=Training(steps=200, eval_every=50, lr=1e-2), progress=False)
    result = trained.meta["recipe"]["result"]
    assert result["val_psnr"] >= result["start_val_psnr"]
    assert (trained(x) - rgb).square().mean() < (base(x) - rgb).square().mean()
    assert previewers.load(previewers.save(trained, tmp_path / "r.safetensors")).args == trained.args


@pytest.mark.parametrize("args", [{"hidden": [16]}, {"channels": [8], "kernels": [3, 1]}])
def test_zero_steps_is_refused_for_a_net_with_no_base_to_keep(args):
    _, _, pairs = residual_case()
    family = "conv" if "kernels" in args else "mlp"
    with pytest.raises(ValueError, match=f"0 Adam steps keeps where a fit starts: .* {family} .* has neither"):
        fit(PlantedTeacher(), family, pairs, space="sd1", args=args, device="cpu", training=Training(steps=0),
            progress=False)


def test_an_interrupted_fit_resumes_to_the_same_result(one_thread, tmp_path, monkeypatch):
    from training import adam as gradient

    x, rgb, pairs = residual_case()
    settings = Training(steps=300, eval_every=50, lr=1e-2, patience=100)
    kwargs = dict(space="sd1", args={"hidden": [16]}, device="cpu", training=settings, progress=False)
    straight = fit(PlantedTeacher(), "mlp", pairs, **kwargs)

    checkpoint = tmp_path / "mlp.safetensors.ckpt"
    calls, loss = [0], gradient.display_loss

    def interrupted(*a):
        calls[0] += 1
        if calls[0] == 180:  # past the checkpoints at steps 50, 100 and 150
            raise KeyboardInterrupt
        return loss(*a)

    monkeypatch.setattr(gradient, "display_loss", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fit(PlantedTeacher(), "mlp", pairs, checkpoint=checkpoint, **kwargs)
    monkeypatch.setattr(gradient, "display_loss", loss)
    assert checkpoint.is_file()
    resumed = fit(PlantedTeacher(), "mlp", pairs, checkpoint=checkpoint, resume=True, **kwargs)
    assert resumed.meta["recipe"]["result"]["resumed_from"] in (100, 150)
    assert not checkpoint.exists()  # removed once the fit ended
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)

    # a checkpoint of another fit is refused, not mixed in
    gradient.save_checkpoint(checkpoint, {"key": {"family": "conv"}})
    with pytest.raises(ValueError, match="checkpoint of a different fit"):
        fit(PlantedTeacher(), "mlp", pairs, checkpoint=checkpoint, resume=True, **kwargs)


@pytest.mark.slow
def test_a_short_upsampler_fit_improves_full_resolution_psnr_over_its_start(shared, one_thread):
    teacher = load_teacher(shared / "models" / "teachers" / "taesd_decoder.safetensors")
    pairs = make_pairs(teacher, "ddpm", images=shared / "data" / "train", crops=Crops(count=24, size=64), progress=False)
    args = {"width": 16, "depth": 1, "stages": [8, 8, 8], "upsample": "shuffle", "base": 3}
    p = fit(teacher, "upsampler", pairs, space="sd1", args=args, device="cpu", progress=False,
            training=Training(steps=120, batch=8, crop=8, eval_every=40, lr=3e-3, patience=100))
    result = p.meta["recipe"]["result"]
    # the start is the least-squares 3x3 conv upscaled bilinearly; validation PSNR is at full resolution
    assert result["val_psnr"] > result["start_val_psnr"] + 0.2 and result["best_step"] > 0
    assert p.scale == 8 and p.meta["recipe"]["training"]["loss"] == "mse"


def test_the_edge_loss_is_l1_plus_l1_of_the_error_differences():
    from previewers.metrics import ssim
    from training.adam import SSIM_WEIGHT, training_loss

    target = torch.zeros(1, 3, 4, 4)
    target[..., 2:] = 1.0  # a vertical edge
    blurred = target.clone()
    blurred[..., 1:3] = 0.5  # the same edge spread over two more columns
    e = blurred - target  # nothing is clipped: the display clamp hides no error here
    expected = e.abs().mean() + (e[..., 1:] - e[..., :-1]).abs().mean() + (e[..., 1:, :] - e[..., :-1, :]).abs().mean()
    torch.testing.assert_close(training_loss(blurred, target, "l1-gradient"), expected)
    assert training_loss(target, target, "l1-gradient") == 0
    # the SSIM loss adds SSIM_WEIGHT · (1 − SSIM) of the clamped output; identical images cost nothing
    target = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    structure = SSIM_WEIGHT * (1 - ssim(blurred, target).mean().item())
    assert training_loss(blurred, target, "l1-gradient-ssim").item() == pytest.approx(
        training_loss(blurred, target, "l1-gradient").item() + structure, rel=1e-5)
    assert training_loss(target, target, "l1-gradient-ssim").item() == pytest.approx(0, abs=1e-6)
    with pytest.raises(ValueError, match="unknown loss 'ssim'"):
        fit(PlantedTeacher(), "mlp", planted_pairs(latents(n=4), torch.rand(4, 3, 8, 8)), space="sd1", device="cpu",
            training=Training(steps=1, loss="ssim"), progress=False)


def test_fits_on_streamed_pairs_equal_fits_in_memory(one_thread, tmp_path):
    from safetensors.torch import save_file

    from training.streamed import ShardColumn

    x, rgb, pairs = residual_case()
    files = []
    for j, (a, b) in enumerate([(0, 16), (16, 40)]):  # two shards, as the cache writes them
        files.append(tmp_path / f"shard-{j}.safetensors")
        save_file({"latents": x[a:b].contiguous(), "small": rgb[a:b].contiguous()}, files[-1])
    streamed = Pairs(ShardColumn(files, "latents"), ShardColumn(files, "small"), pairs.full, pairs.noised,
                     pairs.image, pairs.source)
    for family, settings in (("affine", Training()), ("mlp", Training(steps=60, eval_every=20))):
        a = fit(PlantedTeacher(), family, pairs, space="sd1", device="cpu", training=settings, progress=False)
        b = fit(PlantedTeacher(), family, streamed, space="sd1", device="cpu", training=settings, progress=False)
        for name, value in a.state_dict().items():
            torch.testing.assert_close(b.state_dict()[name], value, atol=1e-6, rtol=0)


def test_dead_relus_finds_a_stage_that_outputs_zero_everywhere():
    from previewers.models.families import upsampler
    from training.fit import dead_relus

    p = upsampler(4, width=8, depth=1, stages=(8, 8, 8), upsample="shuffle", base=3).eval()
    z = torch.randn(4, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert dead_relus(p, z) == []
    last_stage = [m for m in p.body.net if isinstance(m, torch.nn.Conv2d)][-2]  # the conv before the last ReLU
    with torch.no_grad():
        last_stage.bias.fill_(-1e3)
    relus = [m for m in p.modules() if isinstance(m, torch.nn.ReLU)]
    assert dead_relus(p, z) == [len(relus) - 1]


def test_a_fit_continues_from_a_finished_file_and_keeps_its_recipe(one_thread, tmp_path):
    x, rgb, pairs = residual_case()
    kwargs = dict(space="sd1", args={"hidden": [16], "base": 1}, device="cpu", progress=False)
    first = fit(PlantedTeacher(), "mlp", pairs, training=Training(steps=100, eval_every=50, lr=1e-2), **kwargs)
    start = previewers.load(previewers.save(first, tmp_path / "first.safetensors"))
    untrained = fit(PlantedTeacher(), "mlp", pairs, training=Training(steps=0), init=start, **kwargs)
    for name, value in start.state_dict().items():  # the start is the file, not a fresh closed-form solution
        torch.testing.assert_close(untrained.state_dict()[name], value, atol=0, rtol=0)
    more = fit(PlantedTeacher(), "mlp", pairs, training=Training(steps=200, eval_every=50, lr=1e-2), init=start, **kwargs)
    recipe = more.meta["recipe"]
    assert recipe["init"] == first.meta["recipe"]
    assert recipe["result"]["start_val_psnr"] == pytest.approx(first.meta["recipe"]["result"]["val_psnr"], abs=1e-3)
    assert recipe["result"]["val_psnr"] > recipe["result"]["start_val_psnr"]
    with pytest.raises(ValueError, match="same family and arguments"):
        fit(PlantedTeacher(), "mlp", pairs, **{**kwargs, "args": {"hidden": [8], "base": 1}}, init=start)
    with pytest.raises(ValueError, match="same family and arguments"):
        fit(PlantedTeacher(), "affine", pairs, space="sd1", init=start, progress=False)


def test_the_cli_continues_a_fit_from_a_file(tmp_path, capsys, one_thread):
    latents_dir = tmp_path / "latents"
    latents_dir.mkdir()
    torch.save(latents(n=3, side=20), latents_dir / "z.pt")
    teacher = tiny_vae_folder(tmp_path / "vae")
    common = ["fit", "--teacher", str(teacher), "--space", "sd1", "--latents", str(latents_dir), "--no-cache",
              "--crop-size", "32",
              "--family", "mlp", "--args", '{"mlp": {"hidden": [8]}}', "--steps", "20", "--device", "cpu"]
    assert main(common + ["--out", str(tmp_path / "a.safetensors")]) == 0
    assert main(common + ["--out", str(tmp_path / "b.safetensors"), "--init", str(tmp_path / "a.safetensors")]) == 0
    b = previewers.load(tmp_path / "b.safetensors")
    assert b.meta["recipe"]["init"]["training"]["steps"] == 20
    assert main(common + ["--out", str(tmp_path), "--family", "mlp,affine",
                          "--init", str(tmp_path / "a.safetensors")]) == 2
    assert "--init continues one fit" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"not a weight file")
    assert main(common + ["--out", str(tmp_path / "d.safetensors"), "--init", str(tmp_path / "bad.safetensors")]) == 2
    assert "bad.safetensors" in capsys.readouterr().err


def test_leaky_upsampler_stages_cannot_die_and_save_their_activation(tmp_path):
    from previewers.models.families import upsampler
    from training.fit import dead_relus

    p = upsampler(4, width=8, depth=1, stages=(8, 8, 8), upsample="shuffle", base=3, activation="leaky").eval()
    assert p.args["activation"] == "leaky" and not any(isinstance(m, torch.nn.ReLU) for m in p.modules())
    with torch.no_grad():
        [m for m in p.body.net if isinstance(m, torch.nn.Conv2d)][-2].bias.fill_(-1e3)
    z = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    assert dead_relus(p, z) == []  # a leaky stage still passes gradient
    loaded = previewers.load(previewers.save(p, tmp_path / "u.safetensors"))
    torch.testing.assert_close(loaded(z), p(z), atol=0, rtol=0)
    assert "activation" not in upsampler(4, stages=(8,), upsample="shuffle").args  # older files' args unchanged
    with pytest.raises(ValueError, match="activation"):
        upsampler(4, activation="leaky")  # the first (nearest) design has ReLUs only
    with pytest.raises(ValueError, match="activation"):
        upsampler(4, upsample="shuffle", activation="gelu")
