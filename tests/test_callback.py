"""PreviewCallback on real diffusers pipelines built from tiny random components (CPU, seconds)."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import previewers
from previewers import PreviewCallback
from previewers.models.families import affine
from previewers.outputs.writer import step_name
from previewers.pipelines.resolve import MIN_SPEEDUP, POOLED_TOLERANCE, UPSAMPLER_MARGIN, auto_previewer
from previewers.pipelines.x0 import make_source

diffusers = pytest.importorskip("diffusers")
from builders import (  # noqa: E402
    SHIPPED_SPACE_KINDS,
    SIZE,
    STEPS,
    latent_side,
    mid_grey_affine,
    run,
    save_tiny_sd_folder,
    tiny_pipeline,
)
from diffusers.callbacks import MultiPipelineCallbacks  # noqa: E402


@pytest.fixture(scope="module", params=SHIPPED_SPACE_KINDS)
def tiny(request):
    pipe, kwargs = tiny_pipeline(request.param)
    pipe.set_progress_bar_config(disable=True)
    return pipe, kwargs


def callback(pipe, **kwargs):
    previewer = mid_grey_affine(pipe.vae.config.latent_channels)
    return PreviewCallback.for_pipeline(pipe, previewer=previewer, height=SIZE, width=SIZE, **kwargs)


def spatial(pipe, latents):
    """The pipeline's own unpacking of its latents to (B, C, h, w), as it does before decoding."""
    if isinstance(pipe, diffusers.Flux2Pipeline):
        side = 2 * (SIZE // (2 * pipe.vae_scale_factor))  # latent side; tokens are its 2x2 patches
        ids = pipe._prepare_latent_ids(latents.new_zeros(latents.shape[0], latents.shape[2], side // 2, side // 2))
        return pipe._unpatchify_latents(pipe._unpack_latents_with_ids(latents, ids))
    if isinstance(pipe, diffusers.FluxPipeline):
        return pipe._unpack_latents(latents, SIZE, SIZE, pipe.vae_scale_factor)
    return latents


def preview_warnings(caught):
    return [str(w.message) for w in caught if "latent-preview" in str(w.message)]


def test_one_preview_per_step_and_identical_result(tiny, tmp_path):
    pipe, kwargs = tiny
    reference = run(pipe, kwargs)
    cb = callback(pipe, out_dir=tmp_path, source="x0", keep=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = run(pipe, kwargs, cb)
    assert np.array_equal(images, reference)
    assert preview_warnings(caught) == []
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([step_name(i, 0) for i in range(STEPS)] + ["preview.gif", "sheet.png"])  # no temp files left
    side = latent_side(pipe)
    for i in range(STEPS):
        with Image.open(tmp_path / step_name(i, 0)) as png:
            assert png.size == (side, side) and png.mode == "RGB"
    assert list(cb.images) == list(range(STEPS))
    # The last step's x0 is the final latent (σ = 0 next): its preview is the previewer's view of the
    # pipeline's own output latents, unpacked to (B, C, h, w) for the FLUX pipelines.
    final = run(pipe, kwargs, output_type="latent")
    with torch.no_grad():
        expected = cb.previewer(spatial(pipe, final))[0].permute(1, 2, 0) * 255
    last = torch.from_numpy(np.asarray(cb.images[STEPS - 1][0])).float()
    assert (last - expected).abs().max() <= 1
    with Image.open(tmp_path / "sheet.png") as sheet:  # 2x2 grid of the 4 steps, 2-pixel gaps
        assert sheet.size == (2 * side + 2, 2 * side + 2)
    with Image.open(tmp_path / "preview.gif") as gif:
        assert gif.is_animated  # (identical consecutive frames would be merged)
    cb.close()


def test_every_source_size_failing_sinks_inside_multi_callbacks(tiny, tmp_path):
    pipe, kwargs = tiny
    reference = run(pipe, kwargs)
    seen = []
    half = callback(pipe, every=2, source="latents", size=3 * SIZE, on_preview=lambda s, t, ims: seen.append((s, t, ims[0].size)))
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")

    def broken(step, timestep, images):
        raise RuntimeError("bug in a UI")

    failing = callback(pipe, out_dir=blocker / "steps", on_preview=broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = run(pipe, kwargs, MultiPipelineCallbacks([half, failing]))
        half.close()
        failing.close()
    assert np.array_equal(images, reference)
    assert [s for s, _, _ in seen] == [0, 2]
    assert all(size == (3 * SIZE, 3 * SIZE) for _, _, size in seen)
    assert all(isinstance(t, float) for _, t, _ in seen)
    messages = preview_warnings(caught)
    assert len(messages) == 2, messages  # each failure warns once, not once per step
    assert any("cannot write previews" in m for m in messages)
    assert any("on_preview raised RuntimeError: bug in a UI" in m for m in messages)


def test_wrong_image_size_warns_once_and_run_completes():
    pipe, kwargs = tiny_pipeline("flux1")
    pipe.set_progress_bar_config(disable=True)
    reference = run(pipe, kwargs)
    cb = PreviewCallback.for_pipeline(pipe, previewer=affine(16), height=2 * SIZE, width=SIZE)  # not the run's size
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images = run(pipe, kwargs, cb)
    assert np.array_equal(images, reference)
    messages = preview_warnings(caught)
    assert len(messages) == 1 and "pass the image size the pipeline runs at" in messages[0]


class Recorder:
    """Collects what a preview source yields at every step of a real run."""

    tensor_inputs = ["latents"]

    def __init__(self, pipe, source):
        self.source = make_source(pipe.scheduler, source, pipe)
        self.latents, self.out = [], []

    def __call__(self, pipe, step, timestep, kwargs):
        if step == 0:
            self.source.reset()
        self.latents.append(kwargs["latents"])
        self.out.append(self.source(kwargs["latents"], timestep, True))
        return kwargs


RETURN_X0 = ("EulerDiscreteScheduler", "DDIMScheduler", "EulerAncestralDiscreteScheduler", "LMSDiscreteScheduler")


def reference_x0(pipe):
    """Record, per step, the x0 the scheduler itself works with (test instrumentation only)."""
    scheduler = pipe.scheduler
    name = type(scheduler).__name__
    step = scheduler.step
    recorded = []

    def recording_step(model_output, timestep, sample, *args, **kwargs):
        if getattr(scheduler, "step_index", 0) is None:
            scheduler._init_step_index(timestep)  # as step() does first
        if "DPMSolver" in name or "UniPC" in name:
            recorded.append(scheduler.convert_model_output(model_output, sample=sample))
        elif name == "PNDMScheduler":
            a = scheduler.alphas_cumprod[int(timestep)]
            recorded.append((sample - (1 - a).sqrt() * model_output) / a.sqrt())
        elif name == "FlowMatchEulerDiscreteScheduler":
            recorded.append(sample.float() - scheduler.sigmas[scheduler.step_index] * model_output.float())
        out = step(model_output, timestep, sample, *args, **kwargs)
        if name in RETURN_X0:
            recorded.append(out[1])  # the pipelines call step(..., return_dict=False): (prev_sample, x0)
        return out

    scheduler.step = recording_step
    return recorded


@pytest.mark.parametrize("scheduler, config, call, first", [
    ("EulerDiscreteScheduler", {}, {}, 1),
    ("DDIMScheduler", dict(clip_sample=False), dict(eta=1.0), 0),
    ("DPMSolverMultistepScheduler", {}, {}, 0),
    ("UniPCMultistepScheduler", {}, {}, 0),
    ("EulerAncestralDiscreteScheduler", {}, {}, 0),
    ("LMSDiscreteScheduler", {}, {}, 0),
    ("PNDMScheduler", dict(skip_prk_steps=True), {}, 0),
    ("DDIMScheduler", dict(clip_sample=False, prediction_type="v_prediction"), {}, 0),
])
def test_x0_is_the_schedulers_own(scheduler, config, call, first):
    """x0 equals the scheduler's x0 from step `first` on (consecutive latents need one step of
    history); classifier-free guidance with guidance_rescale goes through the denoiser hook."""
    pipe, kwargs = tiny_pipeline("sd")
    pipe.set_progress_bar_config(disable=True)
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config, **config)
    recorder = Recorder(pipe, "x0")
    expected = reference_x0(pipe)
    pipe(**kwargs, num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="latent", guidance_rescale=0.5,
         generator=torch.Generator().manual_seed(0), callback_on_step_end=recorder, **call)
    assert len(recorder.out) == len(expected) >= STEPS
    for got, want in list(zip(recorder.out, expected))[first:]:
        torch.testing.assert_close(got.float(), want.float(), rtol=1e-4, atol=1e-4)
    if first:  # step 0 has no previous latents: its preview falls back to the latents, scaled as x / sqrt(σ² + 1)
        sigmas = pipe.scheduler.sigmas
        torch.testing.assert_close(recorder.out[0], recorder.latents[0] / (sigmas[1] ** 2 + 1).sqrt())


def test_x0_flow_matching_and_ve_latents_scaling():
    pipe, kwargs = tiny_pipeline("sd3")
    pipe.set_progress_bar_config(disable=True)
    recorder = Recorder(pipe, "auto")
    expected = reference_x0(pipe)
    run(pipe, kwargs, recorder)
    for got, want in list(zip(recorder.out, expected))[1:]:
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)

    pipe, kwargs = tiny_pipeline("sd")  # Euler: x = z + σε, previewed as x / sqrt(σ² + 1)
    pipe.set_progress_bar_config(disable=True)
    recorder = Recorder(pipe, "latents")
    run(pipe, kwargs, recorder)
    sigmas = pipe.scheduler.sigmas
    for i, (got, latents) in enumerate(zip(recorder.out, recorder.latents)):
        torch.testing.assert_close(got, latents / (sigmas[i + 1] ** 2 + 1).sqrt())


def test_close_removes_the_denoiser_hook():
    pipe, _ = tiny_pipeline("sd")
    pipe.scheduler = diffusers.PNDMScheduler.from_config(pipe.scheduler.config)
    cb = callback(pipe)
    assert len(pipe.unet._forward_hooks) == 1
    cb.close()
    assert len(pipe.unet._forward_hooks) == 0


def test_clear_errors():
    pipe, _ = tiny_pipeline("sd")

    class MyPipeline:
        vae = pipe.vae
        scheduler = pipe.scheduler

    # a class never seen: its VAE says it all
    assert PreviewCallback.for_pipeline(MyPipeline(), previewer=affine(4)).layout.convention.space == "sd1"
    with pytest.raises(ValueError, match="unknown latent space 'sd5'"):
        PreviewCallback.for_pipeline(MyPipeline(), space="sd5")
    with pytest.raises(ValueError, match="decoder makes 4-channel latents; space 'flux1' has 16"):
        PreviewCallback.for_pipeline(MyPipeline(), space="flux1")
    with pytest.raises(ValueError, match="takes 16-channel latents, but StableDiffusionPipeline's latents have 4"):
        PreviewCallback.for_pipeline(pipe, previewer=affine(16))
    pipe.scheduler = diffusers.HeunDiscreteScheduler.from_config(pipe.scheduler.config)
    with pytest.raises(ValueError, match="no exact x0 for HeunDiscreteScheduler"):
        PreviewCallback.for_pipeline(pipe, previewer=affine(4), source="x0")
    for bad in (dict(every=0), dict(size=-1), dict(resample="cubic"), dict(animation="mp4"), dict(source="noise")):
        with pytest.raises(ValueError):
            PreviewCallback.for_pipeline(pipe, previewer=affine(4), **bad)


def test_previewers_of_another_space_warn():
    pipe, _ = tiny_pipeline("sd")  # AutoencoderKL's default scaling_factor is SD 1.x's 0.18215
    previewer = affine(4)
    previewer.meta = {"space": "sd1"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        PreviewCallback.for_pipeline(pipe, previewer=previewer)
    previewer.meta = {"space": "sdxl"}
    with pytest.warns(UserWarning, match="fitted for latent space 'sdxl', but StableDiffusionPipeline's latents are "
                                         "in 'sd1'"):
        PreviewCallback.for_pipeline(pipe, previewer=previewer)
    pipe.vae.register_to_config(scaling_factor=0.5)  # no longer SD 1.x's config
    previewer.meta = {"space": "sd1"}
    with pytest.warns(UserWarning, match=r"in 'AutoencoderKL-4ch' \(its AutoencoderKL config differs from sd1's\)"):
        PreviewCallback.for_pipeline(pipe, previewer=previewer)
    pipe.vae.register_to_config(scaling_factor=0.18215)


def test_auto_prefers_conv_then_affine_plain_names_first():
    names = ["sd1-affine", "sd1-conv-fast", "sd1-upsampler", "sdxl-conv"]
    # metrics={}: no held-out evidence for the upsampler (the shipped files' own metrics are tested below)
    assert auto_previewer("sd1", names, metrics={}) == "sd1-conv-fast"
    assert auto_previewer("sd1", names + ["sd1-conv"], metrics={}) == "sd1-conv"
    assert auto_previewer("sd1", ["sd1-upsampler"]) == "sd1-upsampler"
    with pytest.raises(ValueError, match="no shipped previewer for latent space 'flux2'"):
        auto_previewer("flux2", names)


@pytest.mark.parametrize("space", sorted({name.split("-")[0] for name in previewers.available()}))
def test_auto_picks_from_the_shipped_files_by_their_held_out_metrics(space):
    """What auto picks among the shipped files follows from the files' own metadata, so a refit that changes their
    numbers changes the expected pick with them: at latent resolution, the file with the best held-out PSNR; the 8x
    upsampler instead where its metrics clear the bar auto_previewer states (full-resolution PSNR UPSAMPLER_MARGIN
    over the ceiling of any upscaled latent-resolution preview, pooled PSNR within POOLED_TOLERANCE of the
    latent-resolution pick's, MIN_SPEEDUP times cheaper than the teacher)."""
    shipped = {name: previewers.load(name) for name in previewers.available() if name.startswith(f"{space}-")}
    metrics = {name: p.meta["metrics"] for name, p in shipped.items()}
    best = max((name for name, p in shipped.items() if p.scale == 1), key=lambda name: metrics[name]["clean"]["psnr"])
    assert auto_previewer(space, factor=2) == best  # a decoder that is not 8x: the upsampler is left out

    def clears_the_bar(name):
        full = metrics[name].get("full_res")
        return (full is not None
                and metrics[name]["clean"]["psnr"] >= full["ceiling"]["clean"]["psnr"] + UPSAMPLER_MARGIN
                and full["pooled"]["clean"]["psnr"] >= metrics[best]["clean"]["psnr"] - POOLED_TOLERANCE
                and metrics[name]["ms_per_64x64"] * MIN_SPEEDUP <= full["ceiling"]["teacher_ms"])

    upsamplers = [name for name, p in shipped.items() if p.scale == 8 and clears_the_bar(name)]
    assert auto_previewer(space) == (upsamplers[0] if upsamplers else best)


def test_auto_previews_with_the_shipped_pick_for_the_pipelines_decoder(tmp_path):
    pipe, kwargs = tiny_pipeline("sd")  # a 4-channel AutoencoderKL with the SD scaling factor: space sd1
    pipe.set_progress_bar_config(disable=True)
    cb = PreviewCallback.for_pipeline(pipe, out_dir=tmp_path)
    # the tiny VAE decodes 2x, not 8x: auto's pick for that factor, never the 8x upsampler
    assert cb.previewer.meta == previewers.load(auto_previewer("sd1", factor=pipe.vae_scale_factor)).meta
    assert cb.previewer.scale == 1
    run(pipe, kwargs, cb, steps=2)
    side = latent_side(pipe) * cb.previewer.scale
    with Image.open(tmp_path / step_name(1, 0)) as png:
        assert png.size == (side, side)


def test_generate_writes_steps_animation_sheet_and_final(tmp_path, capsys):
    from previewers import save
    from previewers.cli import main

    model = save_tiny_sd_folder(tmp_path)
    previewer = save(affine(4), tmp_path / "p.safetensors", space="sd1")
    out = tmp_path / "out"
    assert main(["generate", "--model", str(model), "--prompt", "a cat", "--steps", "3", "--every", "2",
                 "--previewer", str(previewer), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["final_img0.png", "preview.gif", "sheet.png", step_name(0, 0), step_name(2, 0)]
    with Image.open(out / "final_img0.png") as final:  # the tiny VAE decodes at 2x
        assert final.size == (16, 16)
    assert "StableDiffusionPipeline" in capsys.readouterr().out


def test_generate_without_model_files_says_where_it_looked(tmp_path, capsys):
    from previewers.cli import main

    assert main(["generate", "--model", "nobody/no-such-model", "--prompt", "x", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not in the Hugging Face cache" in err and "--model /path/to/pipeline-folder" in err
    assert "--allow-download" in err and "Traceback" not in err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("scheduler", ["EulerDiscreteScheduler", "PNDMScheduler", "DPMSolverMultistepScheduler"])
def test_callback_never_synchronises_the_gpu(scheduler, monkeypatch):
    """Everything the callback does in the sampling loop (x0, previewer, resize, uint8, start of the
    copy to pinned memory) runs under CUDA's sync debug mode "error"; the writer is stubbed out."""
    from previewers.outputs.writer import to_host

    pipe, kwargs = tiny_pipeline("sd")
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe.to("cuda").set_progress_bar_config(disable=True)
    kwargs = {k: v.cuda() for k, v in kwargs.items()}
    cb = callback(pipe, size=4 * SIZE, source="x0")
    queued = []
    monkeypatch.setattr(cb.writer, "put", lambda step, t, frames: queued.append(to_host(frames, t)))

    def guarded(pipe, step, timestep, callback_kwargs):
        torch.cuda.set_sync_debug_mode("error")
        try:
            return cb(pipe, step, timestep, callback_kwargs)
        finally:
            torch.cuda.set_sync_debug_mode("default")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipe(**kwargs, num_inference_steps=STEPS, height=SIZE, width=SIZE, output_type="latent",
             generator=torch.Generator("cuda").manual_seed(0), callback_on_step_end=guarded)
    assert preview_warnings(caught) == []
    assert len(queued) >= STEPS
    for frames, _, event in queued:
        event.synchronize()
        assert frames.is_pinned() and frames.shape == (1, 4 * SIZE, 4 * SIZE, 3)
    cb.close()


def test_auto_picks_the_upsampler_only_where_its_metrics_say_it_is_worth_its_cost():
    names = ["sd1-conv", "sd1-upsampler"]
    latent = {"clean": {"psnr": 29.0}}

    def up(psnr, pooled, ms):
        return {"clean": {"psnr": psnr}, "ms_per_64x64": ms,
                "full_res": {"pooled": {"clean": {"psnr": pooled}}, "ceiling": {"clean": {"psnr": 23.5}, "teacher_ms": 2000}}}

    assert auto_previewer("sd1", names, metrics={"sd1-conv": latent, "sd1-upsampler": up(28.0, 28.8, 100)}) == "sd1-upsampler"
    assert auto_previewer("sd1", names, metrics={"sd1-conv": latent, "sd1-upsampler": up(24.0, 28.8, 100)}) == "sd1-conv"  # near the ceiling
    assert auto_previewer("sd1", names, metrics={"sd1-conv": latent, "sd1-upsampler": up(28.0, 28.0, 100)}) == "sd1-conv"  # colours worse
    assert auto_previewer("sd1", names, metrics={"sd1-conv": latent, "sd1-upsampler": up(28.0, 28.8, 500)}) == "sd1-conv"  # too slow
    assert auto_previewer("sd1", names, metrics={"sd1-conv": latent, "sd1-upsampler": {"clean": {"psnr": 28.0}}}) == "sd1-conv"


def test_chunked_runs_older_api_and_per_frame_timesteps(tmp_path):
    """A run that restarts its step index per chunk (AnyFlow FAR) stays one run while it has made fewer steps than
    it states; the older callback(step, timestep, latents) API returns None; per-frame timesteps (SkyReels V2's
    diffusion forcing) and a prior's 2-D embeddings (unCLIP) are taken in stride."""
    previewer = mid_grey_affine(4)

    class Chunked:
        num_timesteps = 4

    cb = PreviewCallback(previewer, out_dir=tmp_path, keep=True)
    for step in (0, 1, 0, 1):
        latents = torch.randn(1, 4, 8, 8)
        assert cb(Chunked(), step, torch.tensor([999, 500]), {"latents": latents})["latents"] is latents
    assert sorted(cb.images) == [0, 1, 2, 3] and (tmp_path / "sheet.png").is_file()
    cb.close()
    assert cb(0, 999, torch.randn(1, 4, 8, 8)) is None  # older API, after close(): a new run
    assert cb(0, 999, torch.randn(1, 32)) is None  # a prior's embeddings: not previewed
    cb.close()
    assert sorted(cb.images) == [0]
