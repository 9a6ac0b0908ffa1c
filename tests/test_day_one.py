"""Day-one nets (issue 29): `latent-preview fit --pipeline DIR` caches the closed form and the conv net (and with
--upsampler the upsampler) for the pipeline's own VAE, `previewer="auto"` takes the better by held-out scores, killed
fits resume.

A tiny random Qwen-Image pipeline (2x VAE, 32-px crops) with a few Adam steps. The VAE runs once, for the module:
every test starts from a copy of that fit's cache (pairs included), so it only trains or reads.
"""

import os
import shutil
import subprocess
import sys

import pytest
import torch

from previewers import PreviewCallback
from previewers.models.weightfile import load_file, save
from previewers.pipelines.latents import bind

diffusers = pytest.importorskip("diffusers")

from builders import SIZE, tiny_pipeline  # noqa: E402

FAST = ["--device", "cpu", "--net-steps", "4", "--net-crops", "16"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """(the tiny Qwen-Image pipeline, the folder it is saved in); nothing fitted."""
    root = tmp_path_factory.mktemp("day_one_pipe")
    pipe, _ = tiny_pipeline("qwenimage")
    pipe.save_pretrained(root / "pipe")
    return pipe, root / "pipe"


@pytest.fixture(scope="module")
def fitted(saved, tmp_path_factory):
    """(pipeline, its folder, a cache holding the fit's entries and pairs, the fit's --out file, its stdout)."""
    from previewers.cli import main

    pipe, pipe_dir = saved
    root = tmp_path_factory.mktemp("day_one")
    before = os.environ.get("LATENT_PREVIEW_CACHE")
    os.environ["LATENT_PREVIEW_CACHE"] = str(root / "cache")
    try:
        from contextlib import redirect_stdout
        from io import StringIO

        stdout = StringIO()
        with redirect_stdout(stdout):
            code = main(["fit", "--pipeline", str(pipe_dir), *FAST, "--out", str(root / "net.safetensors")])
    finally:
        if before is None:
            del os.environ["LATENT_PREVIEW_CACHE"]
        else:
            os.environ["LATENT_PREVIEW_CACHE"] = before
    assert code == 0
    return pipe, pipe_dir, root / "cache", root / "net.safetensors", stdout.getvalue()


@pytest.fixture
def folder(fitted, tmp_path, monkeypatch):
    """(pipeline, its folder) with LATENT_PREVIEW_CACHE on a fresh copy of the module's fitted cache."""
    pipe, pipe_dir, cache, _, _ = fitted
    shutil.copytree(cache, tmp_path / "cache")
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    return pipe, pipe_dir


def entries(pipe):
    from previewers.first_use.fit import cache_path, net_path

    path = cache_path(bind(pipe))
    return path, net_path(path)


@pytest.mark.slow
def test_fit_caches_the_closed_form_and_the_net(fitted, folder, monkeypatch):
    from previewers.cli import main

    pipe, pipe_dir = folder
    out, stdout = fitted[3], fitted[4]
    assert "-net.safetensors (conv, held-out PSNR" in stdout
    closed_path, net_path = entries(pipe)
    closed, net = load_file(closed_path), load_file(net_path)
    assert closed.meta["recipe"]["method"].startswith("least squares")
    from training.day_one import net_design

    assert net.family == "conv" and net.args == net_design(net.latent_channels).args  # the design for its width
    assert net.meta["recipe"]["result"]["steps"] == 4 and net.meta["recipe"]["samples"] == 16
    # both scored on the same held-out crops
    assert net.meta["metrics"]["held_out"] == closed.meta["metrics"]["held_out"]
    assert {"psnr"} <= set(net.meta["metrics"]["clean"])
    assert load_file(out).meta == net.meta
    assert not net_path.with_name(net_path.name + ".ckpt").exists()  # removed when the fit ended
    # the pairs were cached: a second fit of both runs the VAE on no crop
    import previewers.first_use.fit
    import training.data

    monkeypatch.setattr(previewers.first_use.fit, "pairs", lambda *a, **k: pytest.fail("first-use pairs made again"))
    monkeypatch.setattr(training.data, "_compute_shard", lambda *a, **k: pytest.fail("net pairs made again"))
    assert main(["fit", "--pipeline", str(pipe_dir), *FAST]) == 0


@pytest.mark.slow
@pytest.mark.parametrize("winner", ["net", "closed_form"])
def test_auto_takes_the_entry_with_the_higher_held_out_psnr(folder, monkeypatch, winner):
    pipe, _ = folder
    closed_path, net_path = entries(pipe)
    for kind, path in (("closed_form", closed_path), ("net", net_path)):
        previewer = load_file(path)
        metrics = {**previewer.meta["metrics"], "clean": {"psnr": 40.0 if kind == winner else 20.0}}
        save(previewer, path, metrics=metrics)

    import previewers.first_use.fit

    monkeypatch.setattr(previewers.first_use.fit, "fit_for_vae", lambda *a, **k: pytest.fail("fitted instead of cached"))
    cb = PreviewCallback.for_pipeline(pipe, height=SIZE, width=SIZE)
    taken = load_file({"closed_form": closed_path, "net": net_path}[winner])
    assert cb.previewer.meta == taken.meta and cb.previewer.meta["metrics"]["clean"]["psnr"] == 40.0
    for name, value in taken.state_dict().items():
        assert torch.equal(cb.previewer.state_dict()[name], value), name


@pytest.mark.slow
def test_a_killed_net_fit_resumes_from_its_checkpoint(folder, tmp_path, monkeypatch):
    import training.adam
    from previewers.cli import main

    pipe, pipe_dir = folder
    real = training.adam.save_checkpoint

    def killed(path, state):  # the run dies right after its first checkpoint (step 1 of 4)
        real(path, state)
        raise KeyboardInterrupt

    closed_path, net_path = entries(pipe)
    net_path.unlink()
    monkeypatch.setattr(training.adam, "save_checkpoint", killed)
    assert main(["fit", "--pipeline", str(pipe_dir), *FAST]) == 130  # "interrupted"
    monkeypatch.setattr(training.adam, "save_checkpoint", real)
    assert closed_path.is_file() and not net_path.exists()
    assert net_path.with_name(net_path.name + ".ckpt").is_file()
    out = tmp_path / "resumed.safetensors"
    assert main(["fit", "--pipeline", str(pipe_dir), *FAST, "--resume", "--out", str(out)]) == 0
    result = load_file(out).meta["recipe"]["result"]
    assert result["resumed_from"] == 1 and result["steps"] == 4


@pytest.mark.slow
def test_the_python_call_and_its_budget(folder):
    from training.day_one import train_day_one_net

    pipe, _ = folder
    net = train_day_one_net(bind(pipe), steps=1000, crops=16, budget_s=0.001, device="cpu", progress=False)
    result = net.meta["recipe"]["result"]
    assert result.get("out_of_time") and result["steps"] < 1000
    assert net.meta["recipe"]["budget_s"] == 0.001


@pytest.mark.slow
def test_the_day_one_upsampler_is_cached_with_what_auto_chooses_by(folder, monkeypatch, capsys):
    import training.data
    from previewers.cli import main
    from previewers.first_use.fit import cache_path, upsampler_path
    from previewers.models.card import WeightCard
    from training.day_one import upsampler_design

    pipe, pipe_dir = folder
    latents = bind(pipe)
    closed_path, net_path = entries(pipe)
    # the net's cached pairs answer (same crops): the VAE encodes and decodes no training crop again
    monkeypatch.setattr(training.data, "_compute_shard", lambda *a, **k: pytest.fail("pairs made again"))
    net_written = net_path.stat().st_mtime_ns
    # --resume keeps the net whose fit ended and trains only the upsampler
    assert main(["fit", "--pipeline", str(pipe_dir), *FAST, "--upsampler", "--resume"]) == 0
    assert net_path.stat().st_mtime_ns == net_written
    assert "kept the cached day-one net" in capsys.readouterr().out
    path = upsampler_path(cache_path(latents))
    up = load_file(path)
    design = upsampler_design(latents.channels, latents.convention.space, latents.factor)
    assert up.family == "upsampler" and up.scale == latents.factor and up.args["stages"] == design.args["stages"]
    assert up.meta["recipe"]["result"]["steps"] == 4 and up.meta["recipe"]["training"]["loss"] == "l1-gradient"
    card, closed = WeightCard.of(up), WeightCard.of(load_file(closed_path))
    assert card.metrics.held_out == closed.metrics.held_out  # the same held-out crops as the other entries
    full = card.metrics.full_res
    assert full.ceiling.teacher_ms > 0 and card.metrics.ms_per_64x64 > 0
    assert 5 < full.ceiling.clean.psnr < 100 and 5 < full.pooled.clean.psnr < 100

    # auto takes it from the cache where its card says it beats the ceiling at its cost, else the best latent entry
    import previewers.first_use.fit

    monkeypatch.setattr(previewers.first_use.fit, "fit_for_vae", lambda *a, **k: pytest.fail("fitted instead of cached"))
    for beats in (True, False):
        metrics = card.metrics.to_dict()
        metrics["clean"]["psnr"] = full.ceiling.clean.psnr + (2.0 if beats else 0.5)
        metrics["full_res"]["pooled"]["clean"]["psnr"] = 100.0
        metrics["full_res"]["ceiling"]["teacher_ms"] = 10 * card.metrics.ms_per_64x64
        save(up, path, metrics=metrics)
        cb = PreviewCallback.for_pipeline(pipe, height=SIZE, width=SIZE)
        assert (cb.previewer.family == "upsampler") == beats
        if beats:
            assert cb.previewer.meta == load_file(path).meta


def test_upsampler_design_per_width_and_factor():
    from training.day_one import net_design, upsampler_design

    assert upsampler_design(4, "sd1", 8).args["stages"] == [64, 32, 16]
    assert upsampler_design(16, "sd3", 8).args["stages"] == [32, 16, 8]
    flux2 = upsampler_design(32, "flux2", 8)
    assert flux2.args["stages"] == [64, 32, 16] and flux2.args["base"] == 5
    assert upsampler_design(16, None, 16).args["stages"] == [32, 16, 8, 8]
    assert upsampler_design(4, None, 8).crops == net_design(4).crops  # the net's pairs serve it
    with pytest.raises(ValueError, match="6x is not a power of two"):
        upsampler_design(4, None, 6)


def test_auto_takes_an_upsampler_only_where_it_pays():
    from previewers.first_use.fit import best_entry
    from previewers.models.families import build

    def scored(family, psnr, **more):
        previewer = build(family, 4, **({"width": 8, "depth": 1, "stages": [8]} if family == "upsampler" else {}))
        previewer.meta = {"metrics": {"clean": {"psnr": psnr}, **more}}
        return previewer

    def upsampler(psnr=28.0, pooled=30.0, ceiling=26.0, ms=1.0, teacher_ms=20.0):
        return scored("upsampler", psnr, ms_per_64x64=ms, full_res={
            "pooled": {"clean": {"psnr": pooled}}, "ceiling": {"clean": {"psnr": ceiling}, "teacher_ms": teacher_ms}})

    closed, net = scored("affine", 25.0), scored("conv", 30.2)
    assert best_entry({"closed_form": closed, "net": net, "upsampler": upsampler()}).family == "upsampler"
    assert best_entry({"closed_form": closed, "upsampler": upsampler()}).family == "upsampler"
    for worse in ({"ceiling": 27.5}, {"pooled": 29.0}, {"teacher_ms": 5.0}):  # no detail, off colours, too costly
        assert best_entry({"closed_form": closed, "net": net, "upsampler": upsampler(**worse)}) is net
    assert best_entry({"closed_form": closed, "upsampler": scored("upsampler", 40.0)}) is closed  # no full_res


@pytest.mark.parametrize("argv, message", [
    (["--no-net", "--upsampler"], "--upsampler trains after the net; it cannot go with --no-net"),
    (["--net-steps", "0"], "--net-steps must be at least 1, got 0"),
    (["--net-crops", "-3"], "--net-crops must be at least 1, got -3"),
    (["--net-budget", "0"], "--net-budget must be positive"),
    (["--no-net", "--resume"], "--resume continues the net's fit; it cannot go with --no-net"),
    (["--no-net", "--net-steps", "5"], "cannot go with --no-net"),
])
def test_bad_input_is_a_clear_error(saved, tmp_path, monkeypatch, capsys, argv, message):
    from previewers.cli import main

    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    _, pipe_dir = saved
    assert main(["fit", "--pipeline", str(pipe_dir), "--device", "cpu", *argv]) == 2
    assert message in capsys.readouterr().err


def test_net_options_need_a_pipeline_folder(capsys):
    from previewers.cli import main

    assert main(["fit", "--net-steps", "5", "--teacher", "x", "--space", "sd1", "--family", "conv", "--out", "x"]) == 2
    assert "--net-steps goes with --pipeline DIR" in capsys.readouterr().err
    assert main(["fit", "--upsampler", "--teacher", "x", "--space", "sd1", "--family", "conv", "--out", "x"]) == 2
    assert "--upsampler goes with --pipeline DIR" in capsys.readouterr().err


@pytest.mark.slow
def test_no_net_fits_the_closed_form_only(folder):
    from previewers.cli import main

    pipe, pipe_dir = folder
    closed_path, net_path = entries(pipe)
    net_path.unlink()
    before = closed_path.stat().st_mtime_ns
    assert main(["fit", "--pipeline", str(pipe_dir), "--device", "cpu", "--no-net"]) == 0
    assert closed_path.stat().st_mtime_ns != before and not net_path.exists()


@pytest.mark.parametrize("option", ["steps", "crops"])
def test_the_python_call_refuses_a_zero_schedule(saved, option):
    from training.day_one import train_day_one_net

    pipe, _ = saved
    with pytest.raises(ValueError, match=f"{option} must be at least 1, got 0"):
        train_day_one_net(bind(pipe), **{option: 0}, progress=False)


def test_first_use_trains_a_net_only_on_a_gpu(saved, monkeypatch):
    from previewers.first_use.fit import net_on_first_use, upsampler_on_first_use

    pipe, _ = saved
    latents = bind(pipe)
    assert not net_on_first_use(latents)  # a CPU VAE never blocks for a net
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert not net_on_first_use(latents)  # a GPU, but the VAE is on the CPU
    monkeypatch.setattr(type(pipe.vae), "device", property(lambda self: torch.device("cuda", 0)))
    assert net_on_first_use(latents)
    assert upsampler_on_first_use(latents)  # an image pipeline, a 2x VAE
    monkeypatch.setattr(type(latents), "factor", property(lambda self: 6))
    assert not upsampler_on_first_use(latents)
    monkeypatch.setenv("LATENT_PREVIEW_FIRST_USE_NET", "0")
    assert not net_on_first_use(latents) and not upsampler_on_first_use(latents)


def test_previewers_still_import_without_training():
    code = ("import sys, previewers, previewers.first_use.fit, previewers.pipelines.callback; "
            "assert not [m for m in sys.modules if m == 'training' or m.startswith('training.')], 'training imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_shipped_fit_images_are_licensed_and_small():
    from previewers.first_use.fit import HELD_OUT, IMAGES

    names = sorted(p.name for p in IMAGES.glob("*.jpg"))
    licences = (IMAGES / "LICENSES.md").read_text()
    assert len(names) >= 18 and all(f"| {name} |" in licences for name in names)
    assert all(f"{name}.jpg" in names for name in HELD_OUT)
    assert sum((IMAGES / n).stat().st_size for n in names) < 5_000_000
