"""Timing shared by the benchmarks: median seconds per call after warm-up, and the machine it ran on.

On CUDA every timed call is bracketed by `torch.cuda.synchronize`, so a time is the latency of
one finished call (what a step callback waits for), not of an enqueued kernel launch.
"""

import platform
import statistics
import sys
import time
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> float:
    """Seconds for one finished call of fn()."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def median_seconds(fn, device: torch.device, budget_s: float = 1.0, min_repeats: int = 3, max_repeats: int = 1000) -> float:
    """Median seconds per call of fn() over repeats, after warm-up.

    Warm-up runs until it has taken a tenth of the budget (at least one call, at most ten),
    which absorbs one-off costs (allocator growth, oneDNN/cuDNN kernel selection). Then
    budget_s / (seconds per call) timed calls, within [min_repeats, max_repeats]: many repeats
    for microsecond calls, few for the full VAE decode that takes seconds on a CPU.
    """
    warm, calls = 0.0, 0
    while calls < 10 and (calls == 0 or warm < budget_s / 10):
        warm += timed(fn, device)
        calls += 1
    repeats = min(max_repeats, max(min_repeats, round(budget_s * calls / warm)))
    return statistics.median(timed(fn, device) for _ in range(repeats))


def interleaved_seconds(models: dict, x: torch.Tensor, rounds: int = 7) -> dict:
    """Median seconds per call of each model on `x`, timed in turns (one call of each per round), so a load
    spike on the shared machine hits every model alike instead of whichever happened to be timed then."""
    times = {name: [] for name in models}
    with torch.inference_mode():
        for model in models.values():
            model(x)  # warm-up: allocator, oneDNN kernel choice
        for _ in range(rounds):
            for name, model in models.items():
                start = time.perf_counter()
                model(x)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(device: torch.device, dtype: torch.dtype) -> str:
    """One line naming what the numbers were measured on."""
    parts = [f"CPU {cpu_model()}", f"torch {torch.__version__}", f"{torch.get_num_threads()} CPU threads"]
    if device.type == "cuda":
        parts.append(f"GPU {torch.cuda.get_device_name(device)}")
    parts.append(f"device {device.type}, {str(dtype).removeprefix('torch.')}")
    return ", ".join(parts)


def progress(message: str) -> None:
    """A progress line on stderr, so the report on stdout stays clean."""
    print(f"  {message}", file=sys.stderr, flush=True)


def publish(text: str, out) -> None:
    """Write the markdown report to `out` and print it."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}", file=sys.stderr)
