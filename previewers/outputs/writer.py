"""Where step previews go, on a background thread: PNG files, an animation and a contact sheet,
a user function, memory.

The sampling loop only queues work: `PreviewWriter.put` takes (B, H, W, 3) uint8 frames on any
device; on CUDA it starts a non-blocking copy into pinned host memory and records an event, so
the loop never waits for the GPU, PNG encoding or the disk. The writer thread waits on the
event, then encodes and writes. Files are written atomically (temporary name, then rename), so
an interrupted run leaves only complete files. A failing sink (unwritable folder, full disk, an
exception in `on_preview`) warns once with the reason and is retried for later steps; it never
raises into the pipeline.
"""

import math
import queue
import threading
import warnings
from pathlib import Path

import torch
from PIL import Image, ImageDraw

from previewers.outputs.images import save_atomic

ANIMATIONS = ("gif", "webp")
FRAME_MS = 120  # animation frame time; the last frame is held for LAST_FRAME_MS
LAST_FRAME_MS = 1500
GAP = 2  # pixels between tiles in frames and sheets
FINISH = "finish"  # queue markers
NEW_RUN = "new run"
STOP = "stop"


def step_name(step: int, image: int) -> str:
    """Per-step file name; sortable, and the only files whose names start with "step_"."""
    return f"step_{step:04d}_img{image}.png"


def grid(images: list, columns: int, background=(255, 255, 255)) -> Image.Image:
    """Tile equally sized PIL images row by row, GAP pixels apart."""
    w, h = images[0].size
    rows = math.ceil(len(images) / columns)
    sheet = Image.new("RGB", (columns * w + (columns - 1) * GAP, rows * h + (rows - 1) * GAP), background)
    for i, image in enumerate(images):
        sheet.paste(image, ((i % columns) * (w + GAP), (i // columns) * (h + GAP)))
    return sheet


def caption(image: Image.Image, text: str) -> Image.Image:
    """`image` with `text` in white on a black box in its top-left corner (drawn in place)."""
    draw = ImageDraw.Draw(image)
    box = draw.textbbox((3, 2), text)
    draw.rectangle((0, 0, box[2] + 3, box[3] + 2), fill=(0, 0, 0))
    draw.text((3, 2), text, fill=(255, 255, 255))
    return image


def to_host(frames: torch.Tensor, timestep):
    """Start moving frames (and a tensor timestep) to the CPU without waiting: (frames, timestep, event)."""
    if frames.device.type != "cuda":
        return frames.cpu(), timestep, None
    host = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
    host.copy_(frames, non_blocking=True)
    if isinstance(timestep, torch.Tensor) and timestep.device.type == "cuda":
        timestep = torch.empty(timestep.shape, dtype=timestep.dtype, pin_memory=True).copy_(timestep, non_blocking=True)
    event = torch.cuda.Event()
    event.record()
    return host, timestep, event


class PreviewWriter:
    """Consumes queued previews on one background thread.

    out_dir: folder for step PNGs, the animation ("preview.gif"/"preview.webp") and the contact
    sheet ("sheet.png"), created on first write, and for video runs "video.gif"/"video.webp" of the
    last previewed step's frames; None writes nothing. on_preview(step, timestep, images) is called
    on the writer thread with a list of PIL images (for video, per image the list of its frames),
    in step order. keep=True keeps the same in `images` (step → list) for the current run.
    """

    def __init__(self, out_dir=None, on_preview=None, keep: bool = False, animation: str | None = "gif",
                 sheet: bool = True):
        if animation not in (None, *ANIMATIONS):
            raise ValueError(f"animation must be one of {', '.join(ANIMATIONS)} or None, got {animation!r}")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.on_preview = on_preview
        self.keep = keep
        self.animation = animation if self.out_dir else None
        self.sheet = sheet and self.out_dir is not None
        self.images: dict[int, list] = {}
        self.frames: list = []  # (step, image) per previewed step, the batch side by side: animation and sheet
        self.video: list = []  # video runs: the last previewed step's frames, per image
        self.warned: set[str] = set()
        self.queue: queue.Queue = queue.Queue()
        self.thread: threading.Thread | None = None

    def warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            warnings.warn(f"latent-preview: {message}; the pipeline continues", RuntimeWarning, stacklevel=2)

    def put(self, step: int, timestep, frames: torch.Tensor) -> None:
        """Queue (B, H, W, 3) uint8 frames of one step, or (B, T, H, W, 3) for video latents."""
        self._send((step, *to_host(frames, timestep)))

    def new_run(self) -> None:
        """The next previews belong to a new run: forget the previous run's frames and images."""
        self._send(NEW_RUN)

    def finish(self) -> None:
        """Write the animation and the sheet of the run so far, and wait until everything is written."""
        if self.thread is not None:
            self._send(FINISH)
            self.queue.join()

    def flush(self) -> None:
        if self.thread is not None:
            self.queue.join()

    def close(self) -> None:
        """finish(), then stop the thread (a later put starts a new one)."""
        if self.thread is not None:
            self.finish()
            self._send(STOP)
            self.thread.join()
            self.thread = None

    def _send(self, item) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="latent-preview writer", daemon=True)
            self.thread.start()
        self.queue.put(item)

    def _run(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item == STOP:
                    return
                if item == FINISH:
                    self._write_summary()
                elif item == NEW_RUN:
                    self.images, self.frames, self.video = {}, [], []
                else:
                    self._write_step(*item)
            except Exception as e:  # a bug here must not take the thread (and every later preview) down
                self.warn_once("writer", f"preview writer failed ({type(e).__name__}: {e})")
            finally:
                self.queue.task_done()

    def _write_step(self, step: int, frames: torch.Tensor, timestep, event) -> None:
        if event is not None:
            event.synchronize()
        if isinstance(timestep, torch.Tensor):
            timestep = float(timestep.float().max())  # diffusion forcing (SkyReels V2) steps every frame apart
        elif isinstance(timestep, int):
            timestep = float(timestep)
        if frames.ndim == 5:  # video: per image its latent frames, tiled in order for files and the sheet
            per_image = [[Image.fromarray(f) for f in video] for video in frames.numpy()]
            self.video = per_image
            images = [grid(video, columns=math.ceil(math.sqrt(len(video)))) for video in per_image]
            handed = per_image
        else:
            images = [Image.fromarray(a) for a in frames.numpy()]
            handed = images
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                for i, image in enumerate(images):
                    save_atomic(image, self.out_dir / step_name(step, i), format="PNG", compress_level=1)
            except OSError as e:
                self.warn_once("write", f"cannot write previews to {self.out_dir} ({e})")
        if self.on_preview is not None:
            try:
                self.on_preview(step, timestep, handed)
            except Exception as e:
                self.warn_once("on_preview", f"on_preview raised {type(e).__name__}: {e}")
        if self.keep:
            self.images[step] = handed
        if self.animation or self.sheet:
            self.frames.append((step, grid(images, columns=len(images))))

    def _write_summary(self) -> None:
        steps_frames, self.frames = self.frames, []
        video, self.video = self.video, []
        if not steps_frames:
            return
        frames = [frame for _, frame in steps_frames]
        try:
            if self.animation:
                durations = [FRAME_MS] * (len(frames) - 1) + [LAST_FRAME_MS]
                save_atomic(frames[0], self.out_dir / f"preview.{self.animation}", save_all=True,
                            append_images=frames[1:], duration=durations, loop=0)
            if self.animation and video:  # the last step as a clip, the batch side by side
                clip = [grid([v[t] for v in video], columns=len(video)) for t in range(len(video[0]))]
                save_atomic(clip[0], self.out_dir / f"video.{self.animation}", save_all=True, append_images=clip[1:],
                            duration=FRAME_MS, loop=0)
            if self.sheet:
                tiles = [caption(frame.copy(), f"step {step}") for step, frame in steps_frames]
                save_atomic(grid(tiles, columns=math.ceil(math.sqrt(len(tiles)))), self.out_dir / "sheet.png")
        except OSError as e:
            self.warn_once("write", f"cannot write previews to {self.out_dir} ({e})")
