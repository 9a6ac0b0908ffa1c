"""Any pipeline: latent conventions, fit-on-first-use against pipe.vae, video previews, previewer="vae".

Tiny random Qwen-Image, Wan 2.1 (5-D latents) and Chroma (FLUX.1's VAE) pipelines built from
components (builders.tiny_pipeline), text encoders left out and prompt embeddings passed (CPU, seconds).
"""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from previewers import PreviewCallback
from previewers.outputs.writer import step_name
from previewers.pipelines.latents import bind, bind_vae, infer_size

diffusers = pytest.importorskip("diffusers")
from builders import FRAMES, OTHER_KINDS, SIZE, mid_grey_affine, tiny_pipeline  # noqa: E402
from builders import run as run_steps  # noqa: E402

STEPS = 3


@pytest.fixture(params=OTHER_KINDS)
def tiny(request, tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    pipe, kwargs = tiny_pipeline(request.param)
    pipe.set_progress_bar_config(disable=True)
    return request.param, pipe, kwargs


def run(pipe, kwargs, callback=None, output_type="np"):
    """The output (images, or Wan's frames) of a seeded STEPS-step run."""
    return run_steps(pipe, kwargs, callback, steps=STEPS, output_type=output_type)


def test_convention_is_the_pipelines_own_decode(tiny):
    """Decoding output_type="latent" through the convention gives the pipeline's own image output."""
    kind, pipe, kwargs = tiny
    latents = run(pipe, kwargs, output_type="latent")
    reference = run(pipe, kwargs, output_type="pt")
    convention = bind(pipe, SIZE, SIZE)
    decoded = convention.decode(convention.frames(latents))  # (B, T, 3, H, W)
    expected = reference if reference.ndim == 5 else reference[:, None]  # the video processor gives (B, T, 3, H, W)
    assert decoded.shape == expected.shape
    torch.testing.assert_close(decoded, expected.float(), atol=1e-5, rtol=0)
    # encoding an image and decoding it back goes through the same conversion in both directions
    frames = convention.from_encoder(convention.to_decoder(convention.frames(latents)))
    torch.testing.assert_close(frames, convention.frames(latents), atol=1e-5, rtol=1e-5)


def test_fit_on_first_use_previews_every_step_and_is_cached(tiny, tmp_path, monkeypatch):
    kind, pipe, kwargs = tiny
    reference = run(pipe, kwargs)
    out = tmp_path / "steps"
    cb = PreviewCallback.for_pipeline(pipe, height=SIZE, width=SIZE, out_dir=out, progress=False)
    meta = cb.previewer.meta
    space = bind(pipe).convention.name  # no shipped space: named by the decoder, e.g. AutoencoderKLWan-4ch
    assert meta["space"] == space and meta["recipe"]["method"].startswith("least squares")
    # the fitted previewer beats a constant colour on the held-out photos' decodes
    assert meta["metrics"]["clean"]["psnr"] > meta["metrics"]["constant_colour"]["psnr"] + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run(pipe, kwargs, cb)
    assert np.array_equal(result, reference)
    assert [str(w.message) for w in caught if "latent-preview" in str(w.message)] == []
    assert sorted(p.name for p in out.glob("step_*")) == [step_name(i, 0) for i in range(STEPS)]
    cached = list((tmp_path / "cache" / "fitted").glob(f"{space}-*.safetensors"))
    assert len(cached) == 1

    import previewers.first_use.fit

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again instead of loading the cache")

    monkeypatch.setattr(previewers.first_use.fit, "fit_for_vae", no_fit)
    again = PreviewCallback.for_pipeline(pipe, height=SIZE, width=SIZE)
    assert again.previewer.meta == meta
    for a, b in zip(again.previewer.state_dict().values(), cb.previewer.state_dict().values()):
        assert torch.equal(a, b)
    monkeypatch.undo()
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    fits, fit_for_vae = [], previewers.first_use.fit.fit_for_vae
    monkeypatch.setattr(previewers.first_use.fit, "fit_for_vae", lambda *a, **k: fits.append(1) or fit_for_vae(*a, **k))
    refit = PreviewCallback.for_pipeline(pipe, previewer="fit", height=SIZE, width=SIZE, progress=False)
    assert fits == [1]  # previewer="fit" fits again despite the cache, and the fit replaces the cached entry
    assert list((tmp_path / "cache" / "fitted").glob(f"{space}-*.safetensors")) == cached
    assert refit.previewer.meta["space"] == space and refit.previewer.meta["recipe"]["method"] == meta["recipe"]["method"]


def test_video_previews_tile_every_latent_frame_and_end_with_a_clip(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    pipe, kwargs = tiny_pipeline("wan")
    pipe.set_progress_bar_config(disable=True)
    seen = []
    cb = PreviewCallback.for_pipeline(pipe, out_dir=tmp_path / "all", progress=False,
                                      on_preview=lambda step, t, images: seen.append(images))
    run(pipe, kwargs, cb)
    frames = (FRAMES - 1) // 2 + 1  # latent frames
    assert len(seen) == STEPS and all(len(images) == 1 and len(images[0]) == frames for images in seen)
    side = SIZE // 2
    assert all(frame.size == (side, side) for frame in seen[-1][0])
    with Image.open(tmp_path / "all" / step_name(STEPS - 1, 0)) as png:  # 3 frames on a 2x2 grid, 2-pixel gaps
        assert png.size == (2 * side + 2, 2 * side + 2)
        tiled = np.asarray(png)
    for i, frame in enumerate(seen[-1][0]):
        top, left = (i // 2) * (side + 2), (i % 2) * (side + 2)
        assert np.array_equal(tiled[top:top + side, left:left + side], np.asarray(frame))
    with Image.open(tmp_path / "all" / "video.gif") as gif:
        assert gif.n_frames == frames
    assert (tmp_path / "all" / "preview.gif").is_file() and (tmp_path / "all" / "sheet.png").is_file()

    first = PreviewCallback.for_pipeline(pipe, out_dir=tmp_path / "first", frames="first", keep=True, progress=False)
    run(pipe, kwargs, first)
    assert all(len(images[0]) == 1 for images in first.images.values())
    with Image.open(tmp_path / "first" / step_name(0, 0)) as png:
        assert png.size == (side, side)


@pytest.mark.parametrize("kind", ["qwenimage", "wan", "sd"])
def test_vae_previewer_last_step_is_the_final_image(kind, tmp_path):
    """previewer="vae" decodes as the pipeline does: with x0 from a deterministic Euler run, the last
    step's preview is the pipeline's final image (within 2/255), and the result is unchanged."""
    pipe, kwargs = tiny_pipeline(kind)
    pipe.set_progress_bar_config(disable=True)
    reference = run(pipe, kwargs)
    cb = PreviewCallback.for_pipeline(pipe, previewer="vae", source="x0", keep=True, height=SIZE, width=SIZE)
    assert cb.previewer.meta["family"] == "vae"
    result = run(pipe, kwargs, cb)
    assert np.array_equal(result, reference)
    last = cb.images[STEPS - 1][0]
    last = np.stack([np.asarray(f) for f in last]) if isinstance(last, list) else np.asarray(last)
    final = (reference[0] * 255).round()
    assert last.shape == final.shape
    assert np.abs(last.astype(float) - final).max() <= 2


def test_vae_previewer_warns_once_when_a_decode_costs_more_than_a_step(monkeypatch):
    import time

    from previewers.pipelines.vae_decode import VaePreview

    pipe, kwargs = tiny_pipeline("qwenimage")
    pipe.set_progress_bar_config(disable=True)
    slow = VaePreview.forward

    def slow_forward(self, frames):
        time.sleep(0.5)
        return slow(self, frames)

    monkeypatch.setattr(VaePreview, "forward", slow_forward)
    cb = PreviewCallback.for_pipeline(pipe, previewer="vae", height=SIZE, width=SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(pipe, kwargs, cb)
    messages = [str(w.message) for w in caught if "previewer='vae'" in str(w.message)]
    assert len(messages) == 1 and "every=K" in messages[0]


def test_flux_vae_families_take_the_shipped_flux1_previewers(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    pipe, kwargs = tiny_pipeline("chroma", shift_factor=0.1159, scaling_factor=0.3611)
    cb = PreviewCallback.for_pipeline(pipe, height=SIZE, width=SIZE)
    assert cb.previewer.meta["space"] == "flux1"
    assert not (tmp_path / "cache").exists()  # nothing was fitted


def test_a_pipeline_class_never_seen_works_from_its_vae(tmp_path, monkeypatch):
    """No class name is needed: a new pipeline holding Wan's VAE previews its 5-D latents with no argument."""
    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    wan, _ = tiny_pipeline("wan")

    class MyVideoPipeline:
        vae = wan.vae
        scheduler = wan.scheduler
        vae_scale_factor_spatial = 2

    cb = PreviewCallback.for_pipeline(MyVideoPipeline(), keep=True, progress=False)
    latents = torch.randn(1, 4, 3, 8, 8)
    cb(MyVideoPipeline(), 0, 999, {"latents": latents})
    cb.close()
    assert len(cb.images[0][0]) == 3
    with pytest.raises(ValueError, match="frames must be one of all, first"):
        PreviewCallback.for_pipeline(MyVideoPipeline(), frames="last")

    class NoDecoder:
        scheduler = wan.scheduler
        transformer = wan.transformer  # works on 4-channel latents, not pixels

    with pytest.raises(ValueError, match=r"NoDecoder has no latent decoder \(vae, movq, vqgan, vqvae\).*nothing to "
                                         "preview"):
        PreviewCallback.for_pipeline(NoDecoder())


def test_fit_command_fills_the_cache_for_a_pipeline_folder(tmp_path, monkeypatch, capsys):
    from previewers.cli import main

    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    pipe, kwargs = tiny_pipeline("qwenimage")
    pipe.save_pretrained(tmp_path / "pipe")
    assert main(["fit", "--pipeline", str(tmp_path / "pipe"), "--device", "cpu", "--no-net", "--out", str(tmp_path / "q.safetensors")]) == 0
    assert "cached" in capsys.readouterr().out and (tmp_path / "q.safetensors").is_file()

    import previewers.first_use.fit

    monkeypatch.setattr(previewers.first_use.fit, "fit_for_vae", lambda *a, **k: pytest.fail("not taken from the cache"))
    cb = PreviewCallback.for_pipeline(pipe, height=SIZE, width=SIZE)
    assert cb.previewer.meta["space"] == bind(pipe).convention.name
    assert main(["fit", "--pipeline", str(tmp_path)]) == 2
    assert "no model_index.json" in capsys.readouterr().err
    assert main(["fit", "--teacher", "x"]) == 2
    assert "--space, --family, --out required" in capsys.readouterr().err


def test_flux_size_is_inferred_from_the_tokens_when_only_one_shape_fits():
    assert infer_size(64 * 64, 16) == (1024, 1024) and infer_size(48 * 48, 16) is None  # 36x64 fits too
    assert infer_size(48 * 64, 16) is None  # 768x1024 or 1024x768
    pipe, kwargs = tiny_pipeline("flux1")  # default size 128 · 2 = 256 px; the run is 16x16 or 32x16
    pipe.set_progress_bar_config(disable=True)
    for height, width, expected in ((SIZE, SIZE, None), (2 * SIZE, SIZE, "height=/width= to PreviewCallback")):
        cb = PreviewCallback.for_pipeline(pipe, previewer=mid_grey_affine(16), keep=True)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe(**kwargs, num_inference_steps=2, height=height, width=width, output_type="latent",
                 callback_on_step_end=cb, callback_on_step_end_tensor_inputs=cb.tensor_inputs)
        messages = [str(w.message) for w in caught if "latent-preview" in str(w.message)]
        if expected is None:
            assert messages == [] and cb.images[1][0].size == (SIZE // 2, SIZE // 2)
        else:
            assert len(messages) == 1 and expected in messages[0] and "--height/--width" in messages[0]


@pytest.mark.slow
def test_fit_against_a_real_trained_decoder(shared, tmp_path, monkeypatch):
    """TAESD's trained weights in diffusers' AutoencoderTiny (SD 1.x latents as they are): the fit on
    first use gets a usable previewer (measured 24.4 dB held-out, constant colour 13.5 dB)."""
    from safetensors.torch import load_file

    from previewers.first_use.fit import fit_for_vae

    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))  # the fit's crops are cached: not in the user's
    vae = diffusers.AutoencoderTiny(latent_channels=4)
    weights = {f"encoder.layers.{k}": v.float()
               for k, v in load_file(shared / "models/teachers/taesd_encoder.safetensors").items()}
    for k, v in load_file(shared / "models/teachers/taesd_decoder.safetensors").items():
        index, rest = k.split(".", 1)  # TAESD's decoder starts with its clamp layer, AutoencoderTiny's does not
        weights[f"decoder.layers.{int(index) - 1}.{rest}"] = v.float()
    vae.load_state_dict(weights)
    latents = bind_vae(vae.eval())
    assert latents.factor == 8  # AutoencoderTiny's config states no compression: measured by one decode
    previewer = fit_for_vae(latents, progress=False)
    metrics = previewer.meta["metrics"]
    assert metrics["clean"]["psnr"] > 22 and metrics["clean"]["psnr"] > metrics["constant_colour"]["psnr"] + 8
