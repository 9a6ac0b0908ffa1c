"""Which diffusers pipelines get previews: PreviewCallback on every tiny pipeline fixture of diffusers' own tests.

    python -m benchmarks.pipelines                          # all fixtures → benchmarks/results/pipelines-cpu.md
    python -m benchmarks.pipelines --only flux wan          # fixtures whose label contains any SUBSTR
    python -m benchmarks.pipelines --json F --readme README.md   # also the README's supported-pipeline section
    python -m benchmarks.pipelines --from-json F --readme README.md  # that section again from an earlier run

Fixtures come from ../shared/diffusers-tests (benchmarks/fixtures.py: `get_dummy_components()` /
`get_dummy_inputs()` of each pipeline test class, built offline against a stand-in Hub), plus the tiny
Modular Diffusers pipelines of benchmarks/modular_fixtures.py when that module exists. For each fixture:

1. build it and run it with a plain recording callback (counts the step-callback invocations; fresh
   inputs from the fixture each run). A fixture that cannot be built or run is "does not run here".
2. its step API, from `inspect.signature(pipe.__call__)`: "callback_on_step_end" (new), "callback" +
   "callback_steps" (old), "modular" (the callback inserts itself into the denoising loop), else none.
3. `PreviewCallback.for_pipeline(pipe, previewer="auto", keep=True, height=, width=, num_frames=)`, then the
   same run with it, under `warnings.catch_warnings(record=True)`.
4. served = a preview per step, the output bit-identical to the reference run (every tensor, array and
   PIL image), no warning from latent-preview, and the convention check (5) agreeing where it runs. A
   preview of one flat colour is listed apart (tiny random VAEs can make them).
5. convention check (pipelines with output_type="latent"): the callback's conversion of the returned
   latents, decoded by the pipeline's VAE, against the pipeline's own image (float [0, 1]): max abs diff;
   uint8/PIL outputs differ by up to 1/255.

The machinery (`run_pipeline`, `compare_outputs`, `convention_check`, `check_fixture`) is shared with
tests/test_pipelines.py. The per-fixture time limit is `--timeout` seconds (signal.alarm); every error is
caught per fixture and reported. previewer="auto" may fit a previewer for an unknown VAE on first use: the
run caches those in a temporary LATENT_PREVIEW_CACHE (or `--cache DIR`).
"""

import argparse
import contextlib
import gc
import inspect
import json
import os
import platform
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from previewers.models.card import WeightCard
from previewers.pipelines.conventions import find_decoder

ROOT = Path(__file__).resolve().parents[1]
PREVIEWERS_DIR = str(ROOT / "previewers")
OUR_FILES = (PREVIEWERS_DIR, str(Path(__file__).resolve()), str(ROOT / "tests"))
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "pipelines-cpu.md"
TOLERANCE = 1 / 255 + 1e-3  # convention check: uint8 rounding of the pipeline's output + float noise
NEW, OLD, MODULAR = "callback_on_step_end", "callback", "modular"


class FixtureTimeout(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: int | None):
    """Raise FixtureTimeout in the main thread after `seconds` (no limit for None/0 or off the main thread)."""
    import threading

    if not seconds or threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise FixtureTimeout(f"timed out after {seconds} s")

    previous = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:220] if text else ''}".rstrip(": ")


# ---------------------------------------------------------------------------------------------- running


def step_api(pipe) -> str | None:
    """NEW, OLD, MODULAR or None, from the pipeline's call signature (and class)."""
    if any(c.__name__ == "ModularPipeline" for c in type(pipe).__mro__):
        return MODULAR
    try:
        params = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return None
    if NEW in params:
        return NEW
    if "callback" in params and "callback_steps" in params:
        return OLD
    return None


class RecordingCallback:
    """A plain step callback for either API that only counts its invocations."""

    tensor_inputs: list = []

    def __init__(self):
        self.count = 0

    def __call__(self, *args):
        self.count += 1
        if len(args) == 4:  # (pipe, step, timestep, callback_kwargs)
            return args[3]
        return None  # old API: (step, timestep, latents)


@contextlib.contextmanager
def counting_scheduler_steps(pipe):
    """Count scheduler.step calls (the denoising steps of a modular pipeline, which has no callback argument)."""
    counter = {"n": 0}
    scheduler = getattr(pipe, "scheduler", None)
    if scheduler is None and hasattr(pipe, "get_component"):
        with contextlib.suppress(Exception):
            scheduler = pipe.get_component("scheduler")
    if scheduler is None or not hasattr(scheduler, "step"):
        yield counter
        return
    original = scheduler.step

    def step(*args, **kwargs):
        counter["n"] += 1
        return original(*args, **kwargs)

    scheduler.step = step
    try:
        yield counter
    finally:
        with contextlib.suppress(AttributeError):
            del scheduler.step  # back to the class method


def call_kwargs(api: str | None, callback, kwargs: dict) -> dict:
    """kwargs with `callback` attached by the pipeline's step API."""
    kwargs = dict(kwargs)
    if callback is None or api in (None, MODULAR):
        return kwargs
    if api == NEW:
        kwargs[NEW] = callback
        kwargs["callback_on_step_end_tensor_inputs"] = list(getattr(callback, "tensor_inputs", []))
    else:
        kwargs["callback"] = callback
        kwargs["callback_steps"] = 1
    return kwargs


def run_pipeline(pipe, inputs, api: str | None = None, callback=None, **overrides):
    """(output, recorded warnings) of one run: fresh inputs (`inputs()`), global RNGs reseeded, no grad."""
    from benchmarks.fixtures import seed_everything

    kwargs = {**inputs(), **overrides}
    kwargs = call_kwargs(api, callback, kwargs)
    seed_everything()
    with warnings.catch_warnings(record=True) as caught, torch.no_grad():
        warnings.simplefilter("always")
        output = pipe(**kwargs)
    return output, list(caught)


# ---------------------------------------------------------------------------------------------- outputs


def compare_outputs(a, b, path: str = "output", depth: int = 0) -> str | None:
    """None when `a` and `b` are bit-identical (tensors, arrays, PIL images, nested containers;
    NaN equals NaN), else where they first differ."""
    from PIL import Image

    if depth > 8:
        return None
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            return f"{path}: {type(a).__name__} vs {type(b).__name__}"
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{path}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}"
        same = a == b
        if a.is_floating_point() or a.is_complex():
            same |= torch.isnan(a) & torch.isnan(b)
        if not bool(same.all()):
            diff = (a.double() - b.double()).abs().nan_to_num(0).max().item() if not a.is_complex() else float("nan")
            return f"{path}: differs (max abs diff {diff:.3g})"
        return None
    if isinstance(a, Image.Image) or isinstance(b, Image.Image):
        if not (isinstance(a, Image.Image) and isinstance(b, Image.Image)):
            return f"{path}: {type(a).__name__} vs {type(b).__name__}"
        if a.size != b.size or a.mode != b.mode or not np.array_equal(np.asarray(a), np.asarray(b)):
            return f"{path}: PIL images differ"
        return None
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        a, b = np.asarray(a), np.asarray(b)
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{path}: {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
        nan = a.dtype.kind in "fc"
        if not np.array_equal(a, b, equal_nan=nan):
            diff = np.nanmax(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.dtype.kind in "fiu" else "?"
            return f"{path}: differs (max abs diff {diff:.3g})" if diff != "?" else f"{path}: differs"
        return None
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a.keys()) != list(b.keys()):
            return f"{path}: keys {list(a.keys())} vs {list(b.keys())}"
        for key in a:
            found = compare_outputs(a[key], b[key], f"{path}.{key}", depth + 1)
            if found:
                return found
        return None
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return f"{path}: {len(a)} vs {len(b)} items"
        for i, (x, y) in enumerate(zip(a, b)):
            found = compare_outputs(x, y, f"{path}[{i}]", depth + 1)
            if found:
                return found
        return None
    if type(a) is not type(b):
        return f"{path}: {type(a).__name__} vs {type(b).__name__}"
    if hasattr(a, "values") and isinstance(a.values, dict):  # modular PipelineState
        return compare_outputs(a.values, b.values, f"{path}.values", depth + 1)
    if isinstance(a, (int, float, str, bool, bytes, type(None))):
        same = a == b or (isinstance(a, float) and a != a and b != b)
        return None if same else f"{path}: {a!r} vs {b!r}"
    return None  # other objects (e.g. a modular state's components) are not results


def main_output(output):
    """The images/frames/latents field of a pipeline output (the first one set)."""
    if isinstance(output, dict):
        values = [v for v in output.values() if v is not None]
        return values[0] if values else None
    if isinstance(output, (tuple, list)) and output and not _is_image(output[0]):
        return output[0]
    if hasattr(output, "values") and isinstance(output.values, dict):  # modular PipelineState
        for key in ("images", "videos", "video", "frames", "latents"):
            if output.values.get(key) is not None:
                return output.values[key]
    return output


def _is_image(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def to_frames(images) -> np.ndarray:
    """A pipeline's image output (PIL, list of PIL, nested lists for video, np (B[,F],H,W,3), pt (B[,F],3,H,W))
    → float64 (B, T, H, W, 3) in [0, 1] (T = 1 for images)."""
    if _is_image(images):
        images = [images]
    if isinstance(images, (list, tuple)):
        if images and all(_is_image(x) for x in images):
            return np.stack([np.asarray(x.convert("RGB"), dtype=np.float64) / 255 for x in images])[:, None]
        if images and all(isinstance(x, (list, tuple)) for x in images):  # video: per sample its frames
            return np.stack([to_frames(list(x))[:, 0] for x in images])
        if images and all(isinstance(x, (np.ndarray, torch.Tensor)) for x in images):
            return np.stack([to_frames(x[None])[0] for x in images])
        raise ValueError(f"cannot read images from a list of {type(images[0]).__name__}")
    if isinstance(images, torch.Tensor):
        x = images.detach().float().cpu()
        if x.ndim == 4 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
            x = x.permute(0, 2, 3, 1)[:, None]  # (B, 3, H, W)
        elif x.ndim == 5 and x.shape[2] in (1, 3) and x.shape[-1] not in (1, 3):
            x = x.permute(0, 1, 3, 4, 2)  # (B, F, 3, H, W)
        elif x.ndim == 5 and x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3):
            x = x.permute(0, 2, 3, 4, 1)  # (B, 3, F, H, W)
        elif x.ndim == 4:
            x = x[:, None]
        return x.double().numpy()
    if isinstance(images, np.ndarray):
        x = images.astype(np.float64) / (255 if images.dtype == np.uint8 else 1)
        if x.ndim == 3:
            x = x[None]
        if x.ndim == 4:
            if x.shape[-1] not in (1, 3) and x.shape[1] in (1, 3):
                x = x.transpose(0, 2, 3, 1)
            x = x[:, None]
        return x
    raise ValueError(f"cannot read images from {type(images).__name__}")


def finite(images) -> bool:
    """False when a pipeline's image/latent output holds NaN or inf (PIL images always pass)."""
    if isinstance(images, torch.Tensor):
        return not images.is_floating_point() or bool(torch.isfinite(images).all())
    if isinstance(images, np.ndarray):
        return images.dtype.kind not in "fc" or bool(np.isfinite(images).all())
    if isinstance(images, (list, tuple)):
        return all(finite(x) for x in images)
    return True


def flat_previews(images: dict) -> int:
    """How many kept preview images (or video frames) are one flat colour."""
    flat = 0
    for per_step in images.values():
        for image in per_step:
            for frame in image if isinstance(image, (list, tuple)) else [image]:
                a = np.asarray(frame)
                flat += int(a.size > 0 and a.min() == a.max())
    return flat


# ---------------------------------------------------------------------------------------------- callback


def make_callback(pipe, kwargs: dict):
    """PreviewCallback.for_pipeline(pipe, previewer="auto", keep=True) at the fixture's size (and frames)."""
    from previewers.pipelines.callback import PreviewCallback

    options = {"previewer": "auto", "keep": True, "out_dir": None}
    params = inspect.signature(PreviewCallback.for_pipeline).parameters
    if "progress" in params:
        options["progress"] = False
    for name in ("height", "width", "num_frames"):
        if isinstance(kwargs.get(name), int):
            options[name] = kwargs[name]
    try:
        return PreviewCallback.for_pipeline(pipe, **options)
    except TypeError as e:
        if "num_frames" not in options or "num_frames" not in str(e):
            raise
        options.pop("num_frames")
        return PreviewCallback.for_pipeline(pipe, **options)


def callback_layout(cb):
    """The callback's latent conversion (a latents.PipelineLatents)."""
    for name in ("layout", "latents", "conversion", "convention"):
        layout = getattr(cb, name, None)
        if layout is not None and hasattr(layout, "frames") and hasattr(layout, "decode"):
            return layout
    raise AttributeError("PreviewCallback has no latent layout with frames() and decode()")


def callback_decode(cb, latents: torch.Tensor) -> torch.Tensor:
    """The pipeline's latents converted by the callback and decoded by the pipeline's VAE:
    (B, T, 3, H, W) float in [0, 1]."""
    layout = callback_layout(cb)
    with torch.no_grad():
        return layout.decode(layout.frames(latents))


def describe_previewer(cb) -> tuple[str, str]:
    """("space (normalisation)", previewer family) of a callback; "(fitted)" marks a fit on first use."""
    convention = cb.layout.convention
    recipe = WeightCard.of(cb.previewer).recipe or {}
    family = cb.previewer.family + (" (fitted)" if "first use" in str(recipe.get("method", "")) else "")
    return f"{convention.name} ({convention.normalisation})", family


def is_ours(w: warnings.WarningMessage) -> bool:
    """A warning raised by latent-preview (its message, or the code it points at)."""
    filename = str(getattr(w, "filename", "") or "")
    return "latent-preview" in str(w.message) or "latent_preview" in str(w.message) or filename.startswith(OUR_FILES)


def warning_key(w) -> tuple:
    return w.category.__name__, str(w.message).strip().splitlines()[0][:200] if str(w.message).strip() else ""


# ---------------------------------------------------------------------------------------------- one fixture


@dataclass
class Result:
    fixture: str
    pipeline: str = ""
    api: str = ""
    vae: str = ""
    space: str = ""
    previewer: str = ""
    steps: int | None = None
    previews: int | None = None
    identical: bool | None = None
    convention: str = "n/a"  # max abs diff, "n/a" or "error: ..."
    convention_diff: float | None = None
    flat: int = 0
    status: str = ""
    reason: str = ""
    warnings: list = field(default_factory=list)  # latent-preview's
    other_warnings: list = field(default_factory=list)  # new ones from elsewhere
    seconds: float = 0.0
    times: dict = field(default_factory=dict)  # seconds per phase
    phase: str = ""  # the phase running (the last one run)


class LastLatents(RecordingCallback):
    """A recording callback that also keeps the latents handed over at the last invocation, and counts the steps
    whose latents are images (unCLIP's prior hands its embeddings to the same callback first)."""

    def __init__(self, pipe=None):
        super().__init__()
        self.latents = None
        self.image_steps = 0
        allowed = getattr(pipe, "_callback_tensor_inputs", None)
        self.tensor_inputs = ["latents"] if allowed is None or "latents" in allowed else []

    def __call__(self, *args):
        self.latents = args[3].get("latents") if len(args) == 4 else args[2]
        self.image_steps += not (isinstance(self.latents, torch.Tensor) and self.latents.ndim < 3)
        return super().__call__(*args)


def convention_check(pipe, cb, inputs, api, reference=None, last=None) -> tuple[float | None, str]:
    """(max abs diff, cell text) between the callback's decode of the pipeline's output_type="latent" result
    and the pipeline's own image output; (None, "n/a ...") when it has no latent output.

    Resolution binning (Sana, PixArt) is turned off, since it resizes the decoded image. Where the latent output
    is not in the layout the callback receives (e.g. FLUX.2 Klein returns unpacked latents), the latents handed to
    the callback at the last step are decoded instead ("last-step latents"). `reference` and `last` (its
    LastLatents callback): a run at the fixture's inputs already made, reused when no override applies."""
    params = inspect.signature(pipe.__call__).parameters
    if "output_type" not in params:
        return None, "n/a"
    if inputs().get("output_type") == "latent":
        return None, "n/a (fixture outputs latents)"
    overrides = {"use_resolution_binning": False} if "use_resolution_binning" in params else {}
    # pixel-space pipelines (DeepFloyd IF) have no "latent" output; their "pt" output is the raw sample in [-1, 1]
    pixel = find_decoder(pipe)[1] is None
    if reference is None or overrides:
        last = LastLatents(pipe) if api in (NEW, OLD) else None
        reference, _ = run_pipeline(pipe, inputs, api, last, **overrides)
    image_output = reference
    theirs = to_frames(main_output(image_output))
    if theirs.size and (np.nanmin(theirs) < -TOLERANCE or np.nanmax(theirs) > 1 + TOLERANCE):
        return None, "n/a (its output is not an image in [0, 1]: HDR or raw pixel-space samples)"
    note, ours, error = "", None, None
    try:
        latent_output, _ = run_pipeline(pipe, inputs, output_type="pt" if pixel else "latent", **overrides)
        latents = main_output(latent_output)
    except FixtureTimeout:
        raise
    except Exception as e:  # noqa: BLE001 - no latent output (Kandinsky): the last step's latents are decoded
        latents, error = None, e
    if latents is None:
        pass
    elif isinstance(latents, torch.Tensor):
        try:
            ours = callback_decode(cb, latents).permute(0, 1, 3, 4, 2).double().cpu().numpy()  # (B, T, H, W, 3)
            if ours.shape != theirs.shape:
                error, ours = ValueError(f"decoded {ours.shape} vs output {theirs.shape} (B, T, H, W, 3)"), None
        except Exception as e:  # noqa: BLE001 - tried again with the last step's latents
            error = e
    else:
        error = ValueError(f"latent output is {type(latents).__name__}")
    if ours is None and last is not None and isinstance(last.latents, torch.Tensor):
        try:
            ours = callback_decode(cb, last.latents).permute(0, 1, 3, 4, 2).double().cpu().numpy()
            note = " (last-step latents)"
        except Exception:  # noqa: BLE001 - report the first error
            ours = None
        if ours is not None and ours.shape != theirs.shape:
            # the pipeline assembles its output from more than the last step's latents (Framepack's sections,
            # HunyuanVideo I2V's dropped conditioning frames): there is no one decode to compare with
            return None, f"n/a (its output {theirs.shape[1:]} is not one decode of the step latents {ours.shape[1:]})"
    if ours is None:
        raise error
    diff = float(np.nanmax(np.abs(ours - theirs))) if ours.size else 0.0
    return diff, f"{diff:.2g}{note}"


def check_fixture(label: str, build, inputs, timeout: int | None = None, convention: bool = True) -> Result:
    """Everything the benchmark measures for one fixture. `build()` → pipeline; `inputs()` → fresh call kwargs."""
    result = Result(label)
    start = time.perf_counter()
    try:
        with time_limit(timeout):
            _check(result, build, inputs, convention)
    except FixtureTimeout as e:
        phase = result.phase
        result.status = "does not run here" if phase in ("build", "reference run") else "not served"
        result.reason = f"{first_line(e)}{' during ' + phase if phase else ''}"
    except Exception as e:  # noqa: BLE001 - one fixture must never stop the run
        result.status = "not served" if result.status == "" else result.status
        result.reason = f"harness ({result.phase}): {first_line(e)}"
        traceback.print_exc(file=sys.stderr)
    finally:
        gc.collect()
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _phase(result: Result, name: str) -> None:
    """Start phase `name` (a timeout then says where it struck), recording how long the previous one took."""
    now = time.perf_counter()
    if result.phase:
        result.times[result.phase] = round(now - result.times.pop("_start"), 2)
    result.phase = name
    result.times["_start"] = now


def _check(result: Result, build, inputs, convention: bool) -> None:
    try:
        _check_phases(result, build, inputs, convention)
    finally:
        if result.phase:
            result.times[result.phase] = round(time.perf_counter() - result.times.pop("_start"), 2)


def _check_phases(result: Result, build, inputs, convention: bool) -> None:
    _phase(result, "build")
    try:
        pipe = build()
    except FixtureTimeout:
        raise
    except Exception as e:  # noqa: BLE001
        result.status, result.reason = "does not run here", f"build: {first_line(e)}"
        return
    result.pipeline = type(pipe).__name__
    vae = find_decoder(pipe)[1]
    result.vae = type(vae).__name__ if vae is not None else "—"
    api = step_api(pipe)
    result.api = {NEW: "on_step_end", OLD: "callback", MODULAR: "modular", None: "none"}[api]

    # reference run: a plain recording callback counts the step invocations
    _phase(result, "reference run")
    recorder = LastLatents(pipe)
    try:
        if api == MODULAR:
            with counting_scheduler_steps(pipe) as counter:
                reference, ref_warnings = run_pipeline(pipe, inputs)
            result.steps = counter["n"]
        else:
            reference, ref_warnings = run_pipeline(pipe, inputs, api, recorder)
            result.steps = recorder.image_steps
    except FixtureTimeout:
        raise
    except Exception as e:  # noqa: BLE001
        if api in (NEW, OLD):  # does it run at all without a callback?
            try:
                run_pipeline(pipe, inputs)
            except FixtureTimeout:
                raise
            except Exception:  # noqa: BLE001
                result.status, result.reason = "does not run here", first_line(e)
                return
            result.status, result.reason = "not served", f"its step API fails with a plain callback: {first_line(e)}"
            return
        result.status, result.reason = "does not run here", first_line(e)
        return
    if not finite(main_output(reference)):
        result.status, result.reason = "does not run here", "its own output is NaN/inf here (tiny random fixture)"
        return
    if api is None:
        result.status, result.reason = "no step API", "no callback_on_step_end or callback/callback_steps argument"
        return

    # the callback
    _phase(result, "PreviewCallback.for_pipeline")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            cb = make_callback(pipe, inputs())
        except FixtureTimeout:
            raise
        except Exception as e:  # noqa: BLE001
            not_images = any(words in str(e) for words in NOT_IMAGES)
            result.status = "not an image pipeline" if not_images else "not served"
            result.reason = f"for_pipeline: {first_line(e)}"
            return
    build_warnings = list(caught)
    result.space, result.previewer = describe_previewer(cb)

    _phase(result, "preview run")
    try:
        try:
            output, run_warnings = run_pipeline(pipe, inputs, api, cb)
        finally:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                cb.close()
            close_warnings = list(caught)
    except FixtureTimeout:
        raise
    except Exception as e:  # noqa: BLE001
        result.status, result.reason = "not served", f"run with the callback: {first_line(e)}"
        return
    images = cb.images
    result.previews = len(images)
    result.flat = flat_previews(images)
    difference = compare_outputs(reference, output)
    result.identical = difference is None
    seen = Counter(warning_key(w) for w in ref_warnings)
    for w in build_warnings + run_warnings + close_warnings:
        text = f"{w.category.__name__}: {str(w.message).strip().splitlines()[0][:200] if str(w.message).strip() else ''}"
        if is_ours(w):
            if text not in result.warnings:
                result.warnings.append(text)
        elif seen[warning_key(w)]:
            seen[warning_key(w)] -= 1
        elif text not in result.other_warnings:
            result.other_warnings.append(text)

    # convention check
    _phase(result, "convention check")
    if convention:
        try:
            result.convention_diff, result.convention = convention_check(pipe, cb, inputs, api, reference, recorder)
        except Exception as e:  # noqa: BLE001 - also FixtureTimeout: the previews are judged all the same
            result.convention = f"error: {first_line(e)}"

    problems = []
    if result.previews != result.steps:
        problems.append(f"{result.previews} previews for {result.steps} steps")
    if not result.identical:
        problems.append(f"output not identical ({difference})")
    served = not problems
    if result.warnings:
        problems.append("; ".join(result.warnings))
    if result.convention_diff is not None and not result.convention_diff <= TOLERANCE:
        problems.append(f"convention check: max diff {result.convention_diff:.3g} > {TOLERANCE:.3g}")
    if result.convention.startswith("error"):
        problems.append(f"convention check {result.convention}")
    result.status = "served" if not problems else "warning" if served else "not served"
    if not served and result.identical is False:
        # a pipeline that is not reproducible run to run is not the callback's fault: say so
        with contextlib.suppress(Exception):
            again, _ = run_pipeline(pipe, inputs, api, LastLatents(pipe))
            if compare_outputs(reference, again) is not None:
                problems.insert(0, "the pipeline is not reproducible run to run")
    result.reason = "; ".join(problems)


# ---------------------------------------------------------------------------------------------- fixtures


def diffusers_fixtures():
    """(label, build, inputs) of every diffusers test fixture, and the modules that fail to import."""
    from benchmarks import fixtures as fx

    found, broken = fx.fixtures()
    items = []
    for fixture in found:
        def build(fixture=fixture):
            return fx.build(fixture)[0]

        def inputs(fixture=fixture):
            return fx.dummy_inputs(fixture)

        items.append((fixture.label, build, inputs))
    return items, broken


def _reseeded(kwargs: dict) -> dict:
    """kwargs with every torch.Generator replaced by a fresh one of the same seed."""
    out = {}
    for key, value in kwargs.items():
        if isinstance(value, torch.Generator):
            value = torch.Generator(value.device).manual_seed(value.initial_seed())
        elif isinstance(value, list) and value and all(isinstance(g, torch.Generator) for g in value):
            value = [torch.Generator(g.device).manual_seed(g.initial_seed()) for g in value]
        out[key] = value
    return out


def modular_fixtures():
    """(label, build, inputs) of the tiny modular pipelines of benchmarks/modular_fixtures.py (one per MODELS)."""
    from benchmarks.modular_fixtures import MODELS
    from benchmarks.modular_fixtures import build_tiny_modular as builder

    names = list(MODELS)
    items = []
    for name in names:
        cache = {}

        def build(name=name, cache=cache):
            built = builder(name)
            pipe, extra = (built if isinstance(built, tuple) else (built, {}))[:2]
            cache["inputs"] = extra
            return pipe

        def inputs(cache=cache):
            extra = cache.get("inputs") or {}
            return extra() if callable(extra) else _reseeded(extra)

        items.append((f"modular:{name}", build, inputs))
    return items


# ---------------------------------------------------------------------------------------------- report

STATUSES = ("served", "warning", "not served", "not an image pipeline", "no step API", "does not run here")
NOT_IMAGES = ("does not make images", "not an image VAE")  # for_pipeline's words for priors and audio pipelines


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def summary(results: list[Result], broken: dict) -> dict:
    run = [r for r in results if r.status != "does not run here"]
    api = [r for r in run if r.status not in ("no step API", "not an image pipeline")]
    served = [r for r in api if r.status == "served"]
    return {"found": len(results) + len(broken), "run": len(run), "api": len(api), "served": len(served),
            "warning": sum(r.status == "warning" for r in api),
            "pct": 100 * len(served) / len(api) if api else 0.0}


def report(results: list[Result], broken: dict, command: str, seconds: float) -> str:
    import diffusers

    from benchmarks.timing import cpu_model

    s = summary(results, broken)
    checked = [r for r in results if r.convention_diff is not None]
    agree = sum(r.convention_diff <= TOLERANCE for r in checked)
    lines = [
        "# Which diffusers pipelines get previews (CPU)",
        "",
        f"`{command}`",
        "",
        f"- date: {time.strftime('%Y-%m-%d %H:%M %z')}; machine: CPU {cpu_model()} ({os.cpu_count()} cores), "
        f"Python {platform.python_version()}, torch {torch.__version__}, diffusers {diffusers.__version__}; "
        f"run took {seconds / 60:.1f} min",
        "- fixtures: diffusers' own tiny pipeline fixtures (../shared/diffusers-tests, stand-in Hub) "
        "and benchmarks/modular_fixtures.py where present",
        f"- **{s['found']} fixtures found; {s['run']} run here; {s['api']} with a step API; "
        f"{s['served']} served cleanly ({s['pct']:.0f}% of those with a step API)**, {s['warning']} more with a "
        f"warning (every preview and identical output, but a latent-preview warning or a convention mismatch)",
        f"- convention check: {agree} of {len(checked)} checked agree within {TOLERANCE:.4f}",
        "",
        "served = one preview per step (as many as a plain callback is called), output bit-identical to the run "
        "without previews, no latent-preview warning, and the convention check (the callback's conversion of the "
        "pipeline's `output_type=\"latent\"` result decoded by its VAE vs. its own image output, max abs diff) "
        f"within {TOLERANCE:.4f} where it runs. Step API: on_step_end = `callback_on_step_end`, callback = "
        "`callback`/`callback_steps`, modular = Modular Diffusers. flat: previews of one flat colour (tiny random "
        "VAEs can make them; not a failure).",
        "",
        "| fixture | pipeline | step API | VAE | space (convention) | previewer | previews/steps | identical | "
        "convention check | flat | status | reason | s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        steps = f"{r.previews if r.previews is not None else '—'}/{r.steps if r.steps is not None else '—'}"
        identical = {True: "yes", False: "no", None: "—"}[r.identical]
        lines.append("| " + " | ".join(cell(x) for x in (
            r.fixture, r.pipeline or "—", r.api or "—", r.vae or "—", r.space or "—", r.previewer or "—", steps,
            identical, r.convention, r.flat or "", r.status, r.reason, f"{r.seconds:.0f}")) + " |")
    for module, reason in broken.items():
        lines.append(f"| {cell(module)} | — | — | — | — | — | — | — | n/a | | does not run here | "
                     f"{cell('import: ' + reason)} | |")
    lines += ["", "## Failure reasons, grouped", ""]
    for status in ("not served", "warning", "does not run here"):
        groups = grouped(results, broken, status)
        if not groups:
            continue
        lines += [f"### {status}", "", "| count | reason | fixtures |", "|---|---|---|"]
        for reason, labels in groups:
            lines.append(f"| {len(labels)} | {cell(reason)} | {cell(', '.join(labels))} |")
        lines.append("")
    others = Counter(w for r in results for w in r.other_warnings)
    if others:
        lines += ["## Other new warnings during the preview run (not latent-preview's)", ""]
        lines += [f"- {n}× {cell(w)}" for w, n in others.most_common(20)]
        lines.append("")
    return "\n".join(lines) + "\n"


def reason_key(reason: str) -> str:
    """A reason with fixture-specific class names and numbers blurred, to group alike failures."""
    import re

    key = reason.split("; ")[0].split(" (known pipelines")[0]
    key = re.sub(r"\b[A-Z][A-Za-z0-9_]*(Pipeline|Wrapper)\b", "<pipeline>", key)
    key = re.sub(r"\b(sd1|sdxl|sd3|flux1|flux2)\b", "<space>", key)
    key = re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", key)
    key = re.sub(r"'[^']*'", "'…'", key)
    key = re.sub(r"\([^()]*\)", "(…)", key)
    return key[:160]


def grouped(results: list[Result], broken: dict, status: str) -> list[tuple[str, list[str]]]:
    groups = defaultdict(list)
    for r in results:
        if r.status == status:
            groups[reason_key(r.reason)].append(r.fixture)
    if status == "does not run here":
        for module, reason in broken.items():
            groups[reason_key("import: " + reason)].append(module)
    return sorted(groups.items(), key=lambda kv: -len(kv[1]))


README_BEGIN = "<!-- pipelines table: python -m benchmarks.pipelines --readme README.md -->"
README_END = "<!-- /pipelines table -->"


def folder_of(fixture: str) -> str:
    """The diffusers folder a fixture tests ("stable_diffusion_xl", "modular flux2", ...)."""
    return fixture.split(".", 1)[0].replace(":", " ") if "." in fixture else fixture.split(":", 1)[0]


def readme_table(results: list[Result], broken: dict, source: str) -> str:
    """The README's supported-pipeline section: totals, then one row per diffusers pipeline folder."""
    s = summary(results, broken)
    lines = [README_BEGIN, "",
             f"From {source}: of {s['run']} tiny pipeline fixtures that run on this machine, {s['api']} have a step API "
             f"(either callback API or a modular denoising loop); **{s['served']} ({s['pct']:.0f}%) are served "
             "cleanly**: a preview for every step, output bit-identical, no warning, and our conversion of the "
             "pipeline's latents, decoded by its VAE, equal to its own decode. The previewer `auto` took: a shipped one "
             "where the VAE has a shipped space's config (most fixtures build `AutoencoderKL` with its default "
             "config, which is SD 1.x's: hence sd1), else one fitted on first use against the pipeline's VAE.", "",
             "| diffusers folder | pipeline classes | served | previewer for \"auto\" | not served: why |",
             "|---|---|---|---|---|"]
    by_folder = defaultdict(list)
    for r in results:
        if r.status not in ("does not run here", "no step API", "not an image pipeline"):
            by_folder[folder_of(r.fixture)].append(r)
    for folder in sorted(by_folder):
        rs = by_folder[folder]
        classes = sorted({r.pipeline for r in rs})
        spaces = sorted({"fitted" if r.previewer.endswith("(fitted)") else
                         f"{r.space.split(' (')[0]}-{r.previewer}".replace("pixels-affine", "pixels (x + 1) / 2")
                         for r in rs if r.space})
        why = sorted({f"{r.pipeline}: {r.reason[:120]}" for r in rs if r.status != "served"})
        served = sum(r.status == "served" for r in rs)
        lines.append(f"| {cell(folder)} | {cell(', '.join(classes))} | {served}/{len(rs)} | "
                     f"{cell(', '.join(spaces) or '—')} | {cell('; '.join(why))} |")
    for status, words in (("no step API", "No step API at all (out of scope)"),
                          ("not an image pipeline", "Not image pipelines (priors, audio; out of scope)")):
        skipped = sorted({r.pipeline for r in results if r.status == status})
        if skipped:
            lines += ["", f"{words}: " + ", ".join(skipped) + "."]
    lines += ["", README_END]
    return "\n".join(lines) + "\n"


def write_readme(path: Path, table: str) -> None:
    """Replace the section between README_BEGIN and README_END of `path` with `table`."""
    text = path.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise ValueError(f"{path} has no {README_BEGIN!r} ... {README_END!r} section to replace")
    head, rest = text.split(README_BEGIN, 1)
    path.write_text(head + table.rstrip("\n") + rest.split(README_END, 1)[1])


def source_name(out: str) -> str:
    path = Path(out).resolve()
    return f"`{path.relative_to(ROOT)}`" if path.is_relative_to(ROOT) else f"`{path}`"


def load_json(path: str) -> tuple[list[Result], dict]:
    rows = json.loads(Path(path).read_text())
    names = set(Result.__dataclass_fields__)
    results = [Result(**{k: v for k, v in row.items() if k in names}) for row in rows
               if not row.get("reason", "").startswith("import: ")]
    broken = {row["fixture"]: row["reason"][len("import: "):] for row in rows if row.get("reason", "").startswith("import: ")}
    return results, broken


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", metavar="SUBSTR", help="only fixtures whose label contains one of these")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="markdown report (default: %(default)s)")
    parser.add_argument("--readme", metavar="FILE", help="also rewrite FILE's supported-pipeline section (README.md)")
    parser.add_argument("--from-json", metavar="FILE", nargs="+",
                        help="write the report (and --readme) from earlier --json runs instead of running the "
                             "fixtures; a fixture in a later file replaces its row of an earlier one (a rerun of some)")
    parser.add_argument("--timeout", type=int, default=120, help="seconds per fixture (default: %(default)s)")
    parser.add_argument("--cache", help="LATENT_PREVIEW_CACHE for previewers fitted on first use (default: a temp dir)")
    parser.add_argument("--no-modular", action="store_true", help="skip benchmarks/modular_fixtures.py")
    parser.add_argument("--json", metavar="FILE", help="also write every result as JSON (a list of rows)")
    args = parser.parse_args(argv)

    if args.from_json:
        rows, broken = {}, {}
        for path in args.from_json:
            results, failed = load_json(path)
            rows.update((r.fixture, r) for r in results)
            broken.update(failed)
        results = list(rows.values())
        command = "python -m benchmarks.pipelines" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
        Path(args.out).write_text(report(results, broken, command, sum(r.seconds for r in results)))
        if args.readme:
            write_readme(Path(args.readme), readme_table(results, broken, source_name(args.out)))
        return 0
    os.environ["LATENT_PREVIEW_CACHE"] = args.cache or tempfile.mkdtemp(prefix="latent-preview-pipelines-")
    start = time.perf_counter()
    items, broken = diffusers_fixtures()
    if not args.no_modular:
        items += modular_fixtures()
    if args.only:
        items = [it for it in items if any(s.lower() in it[0].lower() for s in args.only)]
        broken = {m: r for m, r in broken.items() if any(s.lower() in m.lower() for s in args.only)}
    print(f"{len(items)} fixtures ({len(broken)} modules fail to import); "
          f"LATENT_PREVIEW_CACHE={os.environ['LATENT_PREVIEW_CACHE']}", file=sys.stderr, flush=True)
    results = []
    for i, (label, build, inputs) in enumerate(items, 1):
        print(f"[{i}/{len(items)}] {label} ...", file=sys.stderr, flush=True)
        r = check_fixture(label, build, inputs, timeout=args.timeout)
        results.append(r)
        print(f"    {r.status} ({r.seconds:.1f} s) {r.pipeline} api={r.api} previews={r.previews}/{r.steps} "
              f"identical={r.identical} convention={r.convention} {r.reason[:200]}", file=sys.stderr, flush=True)
    command = "python -m benchmarks.pipelines" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    text = report(results, broken, command, time.perf_counter() - start)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    s = summary(results, broken)
    print(f"{s['found']} found, {s['run']} run here, {s['api']} with a step API, {s['served']} served "
          f"({s['pct']:.0f}%), {s['warning']} warning; wrote {args.out}", file=sys.stderr)
    if args.readme:
        write_readme(Path(args.readme), readme_table(results, broken, source_name(args.out)))
    if args.json:
        rows = [asdict(r) for r in results] + [{"fixture": m, "status": "does not run here", "reason": f"import: {r}"}
                                               for m, r in broken.items()]
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
