"""Preview steps in Modular Diffusers pipelines (previewers/pipelines/modular.py) on tiny random modular pipelines."""

import subprocess
import sys
import warnings

import pytest
import torch

from previewers.pipelines.modular import is_modular

diffusers = pytest.importorskip("diffusers")
from benchmarks.modular_fixtures import build_tiny_modular  # noqa: E402
from previewers.pipelines.modular import (  # noqa: E402
    STEP_NAME,
    add_preview_steps,
    denoise_loops,
    find_loops,
    io_signature,
    preview_step,
    remove_preview_steps,
)

# FLUX.2's VAE (flux2, flux3), video pipelines (wan, ltx), and more
OUTPUTS = {"flux2": "images", "wan": "videos", "sdxl": "images", "flux3": "images", "ltx": "videos",
            "qwenimage": "images", "z_image": "images"}


def fresh(kwargs):
    return {**kwargs, "generator": torch.Generator().manual_seed(0)}


def recorder():
    calls = []

    def on_step(step, timestep, latents, total, size):
        calls.append(dict(step=step, timestep=timestep, latents=latents.clone(), total=total, size=dict(size)))

    return calls, on_step


def snapshot(pipe):
    return [(path, loop, loop.sub_blocks, list(loop.sub_blocks.items())) for path, loop in find_loops(pipe)]


@pytest.mark.slow
@pytest.mark.parametrize("model", OUTPUTS)
def test_preview_steps(model):
    pipe, kwargs = build_tiny_modular(model)
    out = OUTPUTS[model]
    reference = pipe(**fresh(kwargs), output=out)
    loops_before, signature = snapshot(pipe), io_signature(pipe._blocks)

    calls, on_step = recorder()
    handle = add_preview_steps(pipe, on_step)
    steps, _ = denoise_loops(pipe)
    assert handle.paths == [path for path, _ in steps] and handle.paths
    for _, loop in steps:
        assert list(loop.sub_blocks)[-1] == STEP_NAME
    assert io_signature(pipe._blocks) == signature  # no new (required) inputs, same outputs and components
    previewed = pipe(**fresh(kwargs), output=out)

    assert torch.equal(previewed, reference)
    n = kwargs["num_inference_steps"]
    assert [c["step"] for c in calls] == list(range(n))
    assert all(c["total"] == n for c in calls)
    timesteps = [float(c["timestep"]) for c in calls]
    assert timesteps == sorted(timesteps, reverse=True) and len(set(timesteps)) == n
    size = {k: kwargs[k] for k in ("height", "width", "num_frames") if k in kwargs}
    assert all(c["size"] == size for c in calls)
    last = calls[-1]["latents"]

    remove_preview_steps(handle)
    after = snapshot(pipe)
    same = [(p, loop, d) for p, loop, d, _ in after] == [(p, loop, d) for p, loop, d, _ in loops_before]
    assert same  # the same loops hold the same sub_blocks dicts as before
    assert [items for *_, items in after] == [items for *_, items in loops_before]
    assert io_signature(pipe._blocks) == signature
    calls.clear()
    assert torch.equal(pipe(**fresh(kwargs), output=out), reference)
    assert calls == []

    # the latents at the last step are the loop's result: the same pipeline without its decode block returns them
    # (FLUX.2's loop runs on packed tokens (B, h*w, C), Qwen-Image's on 2x2 patches; unpacked after it. LTX's
    # packed latents are also denormalised after the loop, so its final latents are not the loop's: not compared)
    if model == "ltx":
        return
    plain, _ = build_tiny_modular(model, no_decode=True)
    final = plain(**fresh({k: v for k, v in kwargs.items() if k != "output_type"}), output="latents")
    if model == "qwenimage":
        final = plain.pachifier.pack_latents(final)
    elif model in ("flux2", "flux3"):
        final = final.flatten(2).transpose(1, 2)
    assert torch.equal(last, final)


def test_failing_on_step_never_breaks_the_run():
    pipe, kwargs = build_tiny_modular("sdxl")
    reference = pipe(**fresh(kwargs), output="images")

    def broken(**_):
        raise RuntimeError("boom")

    handle = add_preview_steps(pipe, broken)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert torch.equal(pipe(**fresh(kwargs), output="images"), reference)
    assert sum("latent preview step failed" in str(w.message) for w in caught) == 1  # once, not per step
    remove_preview_steps(handle)


def test_deepcopy_shares_on_step_and_blocks_copy_works():
    pipe, _ = build_tiny_modular("flux2")
    _, on_step = recorder()
    handle = add_preview_steps(pipe, on_step)
    blocks = pipe.blocks  # a deepcopy of pipe._blocks, preview steps included
    copied = [loop.sub_blocks[STEP_NAME] for _, loop in find_loops(blocks)]
    assert copied and all(step.on_step is on_step for step in copied)
    remove_preview_steps(handle)
    assert all(STEP_NAME not in loop.sub_blocks for _, loop in find_loops(pipe))
    assert all(STEP_NAME in loop.sub_blocks for _, loop in find_loops(blocks))  # the copy keeps its own


def test_hand_inserted_step():
    """Composing blocks by hand: append preview_step to the loop before init_pipeline()."""
    import benchmarks.modular_fixtures as fx

    pipe, kwargs = build_tiny_modular("flux2")
    reference = pipe(**fresh(kwargs), output="images")
    blocks = fx._blocks("Flux2KleinAutoBlocks", ["text_encoder"])
    calls, on_step = recorder()
    for _, loop in find_loops(blocks):
        outputs = loop.outputs
        loop.sub_blocks.insert(STEP_NAME, preview_step(on_step, loop), len(loop.sub_blocks))
        assert loop.outputs == outputs
    composed = blocks.init_pipeline()
    composed.update_components(**{k: v for k, v in pipe.components.items() if k in ("transformer", "vae", "scheduler")})
    assert torch.equal(composed(**fresh(kwargs), output="images"), reference)
    assert [c["step"] for c in calls] == [0, 1]

    # the callback takes over the placed steps (no second step), and hands them back on close()
    from previewers import PreviewCallback

    loops = snapshot(composed)
    cb = PreviewCallback.for_pipeline(composed, keep=True, height=kwargs["height"], width=kwargs["width"])
    assert snapshot(composed) == loops
    assert torch.equal(composed(**fresh(kwargs), output="images"), reference)
    assert sorted(cb.images) == [0, 1] and len(calls) == 2
    cb.close()
    composed(**fresh(kwargs), output="images")
    assert [c["step"] for c in calls] == [0, 1, 0, 1]


def test_not_modular():
    assert not is_modular(object())
    with pytest.raises(ValueError, match="not a diffusers ModularPipeline"):
        add_preview_steps(object(), lambda **_: None)


def test_import_does_not_need_diffusers():
    code = "import sys, previewers.pipelines.modular as m; assert 'diffusers' not in sys.modules; print(m.is_modular(1))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr


# The user's three lines on modular pipelines: FLUX.2's VAE (flux2, flux3 take the shipped flux2-* previewers), a
# video pipeline (wan), SDXL's blocks, and Qwen-Image's packed tokens with a fitted previewer.
@pytest.mark.slow
@pytest.mark.parametrize("model", ["flux2", "flux3", "wan", "sdxl", "qwenimage"])
def test_for_pipeline_previews_every_step_of_a_modular_pipeline(model, tmp_path, monkeypatch):
    from previewers import PreviewCallback

    monkeypatch.setenv("LATENT_PREVIEW_CACHE", str(tmp_path / "cache"))
    pipe, kwargs = build_tiny_modular(model)
    out = OUTPUTS[model]
    reference = pipe(**fresh(kwargs), output=out)
    loops_before = snapshot(pipe)

    cb = PreviewCallback.for_pipeline(pipe, keep=True, source="x0", progress=False)  # sizes come from the loop state
    if model in ("flux2", "flux3"):
        assert cb.previewer.meta["space"] == "flux2"  # shipped, whatever the pipeline class
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        previewed = pipe(**fresh(kwargs), output=out)
    assert [str(w.message) for w in caught if "latent-preview" in str(w.message)] == []
    assert torch.equal(previewed, reference)
    assert sorted(cb.images) == list(range(kwargs["num_inference_steps"]))
    cb.close()
    assert snapshot(pipe) == loops_before  # close() removed the preview steps

    # the convention is the pipeline's own decode block: its loop's final latents, converted and decoded by us,
    # give the pipeline's image
    bare, _ = build_tiny_modular(model, no_decode=True)
    latents = bare(**fresh(kwargs), output="latents")
    size = (kwargs["height"], kwargs["width"])
    decoded = cb.layout.decode(cb.layout.frames(latents, size))  # (B, T, 3, H, W) in [0, 1]
    expected = reference if reference.ndim == 5 else reference[:, None]
    assert decoded.shape == expected.shape
    torch.testing.assert_close(decoded, expected.float(), atol=1e-5, rtol=0)
