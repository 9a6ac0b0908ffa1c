"""PreviewCallback on real diffusers pipelines: one tiny fixture per latent convention family.

The fixtures are diffusers' own (`get_dummy_components()` / `get_dummy_inputs()` of its pipeline tests in
../shared/diffusers-tests, built offline by benchmarks/fixtures.py); the checks are benchmarks/pipelines.py's
(`check_fixture`): the full benchmark's command, `python -m benchmarks.pipelines --only ...`, runs once for these
fixtures in a child process and each test reads its row. Each asserts: one
preview per step, the output bit-identical with and without previews, no latent-preview warning, and the
convention check (the callback's conversion of the pipeline's `output_type="latent"` result, decoded by its VAE,
equals the pipeline's own image within 1/255 + float noise). Skipped when ../shared/diffusers-tests is absent.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from benchmarks.fixtures import TESTS

ROOT = Path(__file__).resolve().parents[1]

# (id, test module, test class) of diffusers' tests/pipelines: one per convention family
FIXTURES = [
    ("lcm", "latent_consistency_models.test_latent_consistency_models", "LatentConsistencyModelPipelineFastTests"),
    ("animatediff", "animatediff.test_animatediff", "AnimateDiffPipelineFastTests"),  # 5-D latents, SD VAE
    ("kolors", "kolors.test_kolors", "KolorsPipelineFastTests"),
    ("pixart-sigma", "pixart_sigma.test_pixart", "PixArtSigmaPipelineFastTests"),  # callback= API
    ("ltx-video", "ltx.test_ltx", "LTXPipelineFastTests"),  # packed video tokens
    ("cogvideox", "cogvideo.test_cogvideox", "CogVideoXPipelineTesterConfig"),  # (B, T, C, h, w)
    ("mochi", "mochi.test_mochi", "MochiPipelineFastTests"),
    ("sana-video", "sana_video.test_sana_video", "SanaVideoPipelineFastTests"),
    ("kandinsky2.2", "kandinsky2_2.test_kandinsky", "KandinskyV22PipelineFastTests"),  # MoVQ
    ("sd-img2img", "stable_diffusion.test_stable_diffusion_img2img", "StableDiffusionImg2ImgPipelineTesterConfig"),
    ("sd-inpaint", "stable_diffusion.test_stable_diffusion_inpaint", "StableDiffusionInpaintPipelineTesterConfig"),
    ("sd-controlnet", "controlnet.test_controlnet", "ControlNetPipelineFastTests"),
    ("flux1", "flux.test_pipeline_flux", "FluxPipelineTesterConfig"),
    ("flux2", "flux2.test_pipeline_flux2", "Flux2PipelineTesterConfig"),
    ("wan", "wan.test_wan", "WanPipelineTesterConfig"),
    ("qwenimage", "qwenimage.test_qwenimage", "QwenImagePipelineTesterConfig"),
    ("sd3", "stable_diffusion_3.test_pipeline_stable_diffusion_3", "StableDiffusion3PipelineFastTests"),
    ("sdxl", "stable_diffusion_xl.test_stable_diffusion_xl", "StableDiffusionXLPipelineFastTests"),
    ("deepfloyd-if", "deepfloyd_if.test_if", "IFPipelineFastTests"),  # pixel space
]


@pytest.fixture(scope="module")
def results(request, tmp_path_factory) -> dict:
    """label → result row of benchmarks/pipelines.py for every fixture in FIXTURES, from one run in a child process.

    A child process, because the stand-in Hub works only when huggingface_hub first loads with it set
    (HF_HUB_CACHE, HF_HUB_OFFLINE are read at import), and other tests of the session may have loaded it already."""
    if not (TESTS / "tests" / "pipelines").is_dir():
        pytest.skip(f"needs ../shared/diffusers-tests (looked in {TESTS})")
    pytest.importorskip("diffusers")
    tmp = tmp_path_factory.mktemp("pipelines")
    selected = [item.callspec.params["label"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec") and "label" in item.callspec.params]
    labels = selected or [f"{module}:{name}" for _, module, name in FIXTURES]  # only what -k selected
    # previewers fitted on first use are keyed by the VAE's weights and the fit recipe: reusing them across sessions
    # is safe and keeps the module to a minute or two once they exist
    cache = os.environ.get("LATENT_PREVIEW_TEST_CACHE") or str(Path(tempfile.gettempdir()) / "latent-preview-test-pipelines")
    env = {**os.environ, "LATENT_PREVIEW_CACHE": cache}
    command = [sys.executable, "-m", "benchmarks.pipelines", "--no-modular", "--timeout", "180",
               "--out", str(tmp / "report.md"), "--json", str(tmp / "results.json"), "--only", *labels]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0 or not (tmp / "results.json").exists():
        pytest.fail(f"benchmarks.pipelines failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return {row["fixture"]: row for row in json.loads((tmp / "results.json").read_text())}


@pytest.mark.slow
@pytest.mark.parametrize("label", [pytest.param(f"{m}:{n}", id=i) for i, m, n in FIXTURES])
def test_pipeline_gets_a_preview_per_step_and_an_identical_output(results, label):
    from benchmarks.pipelines import TOLERANCE

    row = results.get(label)
    assert row is not None, f"{label} is not among diffusers' fixtures (found: {len(results)})"
    if row["status"] == "does not run here":
        pytest.skip(f"{label} does not run here: {row['reason']}")
    summary = (f"{row['pipeline']} ({row['api']}): status {row['status']}, {row['previews']} previews for "
               f"{row['steps']} steps, identical {row['identical']}, convention {row['convention']}; {row['reason']}")
    assert row["api"] in ("on_step_end", "callback", "modular"), summary
    assert row["steps"] and row["previews"] == row["steps"], summary
    assert row["identical"], summary
    assert not row["warnings"], summary
    assert row["convention_diff"] is not None, summary
    assert row["convention_diff"] <= TOLERANCE, summary


def test_readme_section_is_generated_from_the_results(tmp_path):
    """The README's supported-pipeline section is rewritten between its markers, from a run's rows."""
    from benchmarks.pipelines import README_BEGIN, README_END, Result, readme_table, write_readme

    results = [Result("stable_diffusion.test_a:T", "StableDiffusionPipeline", space="sd1 (scale_shift)",
                      previewer="conv", status="served"),
               Result("wan.test_b:T", "WanPipeline", space="AutoencoderKLWan-16ch (mean_std)", previewer="conv (fitted)",
                      status="served"),
               Result("wan.test_c:T", "WanAnimatePipeline", status="not served", reason="segments"),
               Result("ddim.test_d:T", "DDIMPipeline", status="no step API"),
               Result("cosmos.test_e:T", status="does not run here")]
    table = readme_table(results, {}, "`r.md`")
    assert "**2 (67%) are served cleanly**" in table and "of 4 tiny pipeline fixtures" in table
    assert "| wan | WanAnimatePipeline, WanPipeline | 1/2 | fitted | WanAnimatePipeline: segments |" in table
    assert "| stable_diffusion | StableDiffusionPipeline | 1/1 | sd1-conv |  |" in table
    assert "No step API at all (out of scope): DDIMPipeline." in table
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{README_BEGIN}\nSTALE ROWS\n{README_END}\n\n## next\n")
    write_readme(readme, table)
    text = readme.read_text()
    assert "STALE ROWS" not in text and text.startswith("# x\n\n" + README_BEGIN) and text.endswith(README_END + "\n\n## next\n")
    readme.write_text("# no markers\n")
    with pytest.raises(ValueError, match="no .* section to replace"):
        write_readme(readme, table)
