"""Step previews for Modular Diffusers pipelines (diffusers `ModularPipeline`).

A modular pipeline has no `callback_on_step_end`: it is extended by composing blocks. Its denoising loop is a
`LoopSequentialPipelineBlocks` whose `sub_blocks` (an ordered `InsertableDict`) run in order at every step as
`block(components, block_state, i=i, t=t)`, sharing one `block_state`; the last built-in sub-block is the scheduler
step. So a preview is one more sub-block, appended after it: it reads `block_state.latents` (the latents the
scheduler step just produced), hands them to `on_step`, and returns `components, block_state` untouched, which keeps
the pipeline's outputs bit-identical.

    handle = add_preview_steps(pipe, on_step)   # every denoising loop the pipeline can run
    state = pipe(prompt=..., num_inference_steps=28)
    remove_preview_steps(handle)                # the loops exactly as before

`on_step(step=i, timestep=t, latents=..., total=N, size={"height": H, "width": W, "num_frames": F})` is called once
per denoising step of every loop (a pipeline that runs two loops, e.g. a refine stage, calls it with step 0..N-1 for
each); `size` holds the pixel sizes the loop's state carries (often none for image pipelines that never write back
their default height/width). A failing `on_step` warns once and never breaks the run.

The loops are found in `pipe._blocks`, the blocks object the pipeline runs (`pipe.blocks` is a deepcopy): every
`LoopSequentialPipelineBlocks` reachable through the `sub_blocks` of Sequential/Auto/Conditional blocks, so every
branch a run may select (text-to-image, image-conditioned, inpaint, controlnet, image-to-video, ...) gets the step.
Chunk loops (Helios, Wan-Animate 2, MiniMax Music 3) iterate over temporal chunks (`k`), and run each chunk's
denoising steps as a plain Python loop inside one leaf block; a sub-block cannot see those steps, so they are left
alone and listed in `handle.skipped`.

Composing blocks yourself, place the step by hand where you want it (before `init_pipeline()`, which deep-copies the
blocks; the copies share `on_step`); `add_preview_steps` (and so `PreviewCallback.for_pipeline`) then takes over the
placed steps instead of adding its own:

    loop = blocks.sub_blocks["denoise"]              # your LoopSequentialPipelineBlocks
    loop.sub_blocks.insert("latent_preview", preview_step(lambda **step: None, loop), len(loop.sub_blocks))
    pipe = blocks.init_pipeline(...)
    cb = PreviewCallback.for_pipeline(pipe)          # the placed step now calls cb.on_step; cb.close() hands it back

(`loop.sub_blocks["latent_preview"] = preview_step(cb.on_step, loop)` is the same: a new key goes last.)
Passing `loop` lets the step repeat the outputs the loop's previous last sub-block declares, so the loop's
`outputs` (read from its last sub-block) stay as they were.
"""

import copy
import inspect
import warnings
from dataclasses import dataclass, field

STEP_NAME = "latent_preview"
SIZE_KEYS = ("height", "width", "num_frames")


def is_modular(pipe) -> bool:
    """Whether `pipe` is a diffusers ModularPipeline (by class name in its MRO; does not import diffusers)."""
    return any(cls.__name__ == "ModularPipeline" for cls in type(pipe).__mro__)


def _is_loop(block) -> bool:
    return any(cls.__name__ == "LoopSequentialPipelineBlocks" for cls in type(block).__mro__)


def _takes_step(block) -> bool:
    """Whether a loop sub-block is called per denoising step (`i=...`), not per chunk (`k=...`)."""
    try:
        params = inspect.signature(block.__call__).parameters
    except (TypeError, ValueError):
        return True
    return "i" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def find_loops(blocks) -> list[tuple[str, object]]:
    """Every LoopSequentialPipelineBlocks reachable from `blocks` (a pipeline's `_blocks`), as (path, loop), each
    object once, in the order the blocks are declared. Accepts a ModularPipeline too."""
    if is_modular(blocks):
        blocks = blocks._blocks
    found, seen = [], set()

    def walk(block, path):
        if block is None or id(block) in seen:
            return
        seen.add(id(block))
        if _is_loop(block):
            found.append((path, block))
            return  # a loop's sub-blocks are leaves
        for name, sub in (getattr(block, "sub_blocks", None) or {}).items():
            walk(sub, f"{path}.{name}" if path else name)

    walk(blocks, "")
    return found


def denoise_loops(blocks) -> tuple[list[tuple[str, object]], list[tuple[str, object]]]:
    """(denoising loops, chunk loops) among `find_loops(blocks)`: a denoising loop calls every sub-block with the
    step index `i`; a chunk loop calls them with a chunk index `k` (its steps run inside one leaf block)."""
    steps, chunks = [], []
    for path, loop in find_loops(blocks):
        subs = list(loop.sub_blocks.values())
        (steps if subs and all(_takes_step(b) for b in subs) else chunks).append((path, loop))
    return steps, chunks


_STEP_CLASS = None


def _step_class():
    """The preview block class, defined on first use so that importing previewers never imports diffusers."""
    global _STEP_CLASS
    if _STEP_CLASS is not None:
        return _STEP_CLASS
    from diffusers.modular_pipelines import ModularPipelineBlocks
    from diffusers.modular_pipelines.modular_pipeline_utils import InputParam

    class LatentPreviewStep(ModularPipelineBlocks):
        """Loop sub-block handing the latents after each scheduler step to `on_step`; changes nothing."""

        model_name = None

        def __init__(self, on_step, inputs=(), outputs=()):
            super().__init__()
            if not callable(on_step):
                raise ValueError("on_step must be a function (step, timestep, latents, total, size)")
            self.on_step = on_step
            self.extra_inputs = tuple(inputs)  # optional size inputs the loop does not read already
            self.mirrored_outputs = [copy.copy(o) for o in outputs]  # the previous last sub-block's outputs
            self.warned = False

        @property
        def description(self) -> str:
            return ("Latent preview: hands the latents after the scheduler step to a preview callback; "
                    "changes no state (latent-preview)")

        @property
        def inputs(self):
            return [InputParam(name) for name in self.extra_inputs]  # fresh: the loop rewrites `required`

        @property
        def intermediate_outputs(self):
            # The loop's `outputs` are its last sub-block's; repeating them keeps the loop's outputs unchanged.
            # Loop sub-blocks never write the pipeline state themselves (the loop does, once, at the end).
            return [copy.copy(o) for o in self.mirrored_outputs]

        def __deepcopy__(self, memo):
            # `pipe.blocks` and `init_pipeline()` deep-copy blocks: share on_step (a callback holding threads and
            # models) rather than copying it.
            new = copy.copy(self)
            new.sub_blocks = type(self.sub_blocks)()
            new.mirrored_outputs = copy.deepcopy(self.mirrored_outputs, memo)
            memo[id(self)] = new
            return new

        def __call__(self, components, block_state, i=None, t=None, **kwargs):
            try:
                latents = getattr(block_state, "latents", None)
                if latents is not None:
                    timestep, total = t, None
                    if t is None and "sigma" in kwargs:  # Echo's DMD loop steps over sigmas
                        timestep = kwargs["sigma"]
                        sigmas = getattr(block_state, "sigmas", None)
                        total = len(sigmas) - 1 if sigmas is not None else None
                    timesteps = getattr(block_state, "timesteps", None)
                    if total is None and timesteps is not None:
                        total = len(timesteps)
                    if total is None:
                        total = getattr(block_state, "num_inference_steps", None)
                    size = {k: v for k in SIZE_KEYS if (v := getattr(block_state, k, None)) is not None}
                    self.on_step(step=i, timestep=timestep, latents=latents, total=total, size=size)
            except Exception as e:  # a preview must never break a generation
                if not self.warned:
                    self.warned = True
                    warnings.warn(f"latent preview step failed ({type(e).__name__}: {e}); the run goes on",
                                  stacklevel=2)
            return components, block_state

    _STEP_CLASS = LatentPreviewStep
    return _STEP_CLASS


def preview_step(on_step, loop=None, inputs=()):
    """The preview block for a denoising loop, to append as its last sub-block by hand (see the module docstring).

    on_step: called as on_step(step=, timestep=, latents=, total=, size=) after every scheduler step.
    loop: the LoopSequentialPipelineBlocks it goes into (before inserting it); the block then repeats the outputs
      of the loop's current last sub-block so that the loop's declared `outputs` stay the same.
    inputs: names of extra optional inputs for the loop to fetch from the pipeline state (e.g. "height"), for
      `size`; leave empty unless those names are already pipeline inputs or intermediate outputs.
    """
    outputs = ()
    if loop is not None and loop.sub_blocks:
        outputs = next(reversed(loop.sub_blocks.values())).intermediate_outputs
    return _step_class()(on_step, inputs=inputs, outputs=outputs)


def _value_key(v):
    try:
        import torch

        if isinstance(v, torch.Tensor):
            return ("tensor", id(v))
    except ImportError:
        pass
    return repr(v)


def io_signature(blocks) -> tuple:
    """What a pipeline's input/output bookkeeping sees of `blocks`: inputs (order, defaults, required), required
    inputs, intermediate outputs, expected components. A preview step must leave it unchanged."""
    inputs = tuple((p.name, p.kwargs_type, p.required, _value_key(p.default), repr(p.defaults_by_block))
                   for p in blocks.inputs)
    outputs = tuple((o.name, o.kwargs_type) for o in blocks.intermediate_outputs)
    components = tuple(c.name for c in blocks.expected_components)
    return inputs, tuple(sorted(blocks.required_inputs)), outputs, components


def _state_names(blocks) -> set:
    """Names that can be in the pipeline state: top-level inputs and every block's intermediate outputs."""
    names = {p.name for p in blocks.inputs if p.name}
    stack = [blocks]
    while stack:
        b = stack.pop()
        names.update(o.name for o in b.intermediate_outputs if o.name)
        stack.extend((getattr(b, "sub_blocks", None) or {}).values())
    return names


@dataclass
class PreviewSteps:
    """What add_preview_steps changed: the loops with their original sub_blocks, and the loops left alone."""

    pipe: object
    name: str
    inserted: list = field(default_factory=list)  # (path, loop, original sub_blocks dict, new sub_blocks dict)
    rebound: list = field(default_factory=list)  # (step placed by hand, its own on_step)
    skipped: list = field(default_factory=list)  # (path, loop class name, reason)

    @property
    def paths(self) -> list[str]:
        return [path for path, *_ in self.inserted]


def add_preview_steps(pipe, on_step, name: str = STEP_NAME) -> PreviewSteps:
    """Append a preview step to every denoising loop of a ModularPipeline (every branch, nested or not).

    on_step(step=, timestep=, latents=, total=, size=) runs after each scheduler step; see the module docstring.
    Returns a handle for `remove_preview_steps`. The pipeline's inputs, outputs and results are unchanged.
    A loop that already holds a step `name` placed by hand (`preview_step`) keeps it where it is, calling `on_step`
    until removal. Raises ValueError for a pipeline that is not modular or has no denoising loop.
    """
    if not is_modular(pipe):
        raise ValueError(f"{type(pipe).__name__} is not a diffusers ModularPipeline; pass "
                         "callback_on_step_end=cb to a standard pipeline instead")
    blocks = pipe._blocks  # what pipe(...) runs; pipe.blocks is a deepcopy
    loops, chunks = denoise_loops(blocks)
    handle = PreviewSteps(pipe, name)
    handle.skipped = [(path, type(loop).__name__, "chunk loop: its denoising steps run inside one leaf block")
                      for path, loop in chunks]
    if not loops:
        raise ValueError(f"{type(pipe).__name__} has no denoising loop (LoopSequentialPipelineBlocks stepping "
                         f"over timesteps) to preview" + (f"; chunk loops: {', '.join(p for p, _ in chunks)}"
                                                          if chunks else ""))
    placed = [loop.sub_blocks[name] for _, loop in loops if name in loop.sub_blocks]
    for step in placed:
        handle.rebound.append((step, step.on_step))
        step.on_step = on_step
    loops = [(path, loop) for path, loop in loops if name not in loop.sub_blocks]
    before = io_signature(blocks)
    state_names = _state_names(blocks)
    try:
        for path, loop in loops:
            original = loop.sub_blocks
            in_loop = {p.name for p in loop.inputs}
            extra = tuple(k for k in SIZE_KEYS if k not in in_loop and k in state_names)
            for inputs in ((extra, ()) if extra else ((),)):
                new = type(original)(original.items())
                new[name] = preview_step(on_step, loop, inputs=inputs)
                loop.sub_blocks = new
                if io_signature(blocks) == before:
                    break
                loop.sub_blocks = original
            else:
                raise RuntimeError(f"a preview step changes the inputs or outputs of {type(pipe).__name__} "
                                   f"(loop {path!r}); not adding it")
            handle.inserted.append((path, loop, original, new))
    except BaseException:
        remove_preview_steps(handle)
        raise
    return handle


def remove_preview_steps(handle: PreviewSteps) -> None:
    """Undo add_preview_steps: every loop gets back its original sub_blocks (same object, order and contents), and
    steps placed by hand their own on_step."""
    for step, on_step in handle.rebound:
        step.on_step = on_step
    handle.rebound.clear()
    for _path, loop, original, new in reversed(handle.inserted):
        if loop.sub_blocks is new:
            loop.sub_blocks = original
        else:  # replaced since (by hand): take out only our step
            step = new.get(handle.name)
            if loop.sub_blocks.get(handle.name) is step:
                loop.sub_blocks.pop(handle.name)
    handle.inserted.clear()
