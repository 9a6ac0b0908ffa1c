"""NaN/inf in latents: a previewer turns them into black pixels, which hides exactly what a user
watching previews wants to see, a diverging run. So they are reported, once per run.

On CUDA the count of non-finite values stays on the GPU and is copied back without waiting; it is
read once the copy has landed (a later step, or the end of the run, when the preview writer has
waited for the run's frames anyway), so checking costs the sampling loop no synchronisation.
"""

import warnings

import torch


def nonfinite_warning(where: str, bad: int, total: int) -> str | None:
    """The message for `bad` non-finite values out of `total` (None when there are none)."""
    if not bad:
        return None
    return (f"latent-preview: NaN or inf in {bad / total:.1%} of the latent values {where}; previews show them "
            "black (a diverging run, or a broken latents file)")


def warn_nonfinite(latents: torch.Tensor, where: str) -> bool:
    """Warn (RuntimeWarning) when `latents` hold NaN or inf; True when they do. Synchronises on CUDA."""
    message = nonfinite_warning(where, int((~torch.isfinite(latents)).sum()), latents.numel())
    if message:
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    return message is not None


class NonFiniteWatch:
    """Warns the first time in a run that the latents of a step hold NaN or inf, naming the step."""

    def __init__(self):
        self.pending: list = []  # (step, host count, total, CUDA event) not yet read
        self.warned = False

    def reset(self) -> None:
        """A new run: the next non-finite step warns again."""
        self.pending, self.warned = [], False

    def __call__(self, latents: torch.Tensor, step: int) -> None:
        if self.warned:
            return
        bad = (~torch.isfinite(latents)).sum()
        if latents.device.type != "cuda":
            self._report(step, int(bad), latents.numel())
            return
        host = torch.empty((), dtype=bad.dtype, pin_memory=True)
        host.copy_(bad, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.pending.append((step, host, latents.numel(), event))
        self.poll()

    def poll(self, wait: bool = False) -> None:
        """Read the counts whose copies have landed (all of them with wait=True), in step order."""
        while self.pending and not self.warned:
            step, host, total, event = self.pending[0]
            if not event.query():
                if not wait:
                    return
                event.synchronize()
            self.pending.pop(0)
            self._report(step, int(host), total)
        if self.warned:
            self.pending = []

    def _report(self, step: int, bad: int, total: int) -> None:
        message = nonfinite_warning(f"at step {step}", bad, total)
        if message:
            self.warned = True
            warnings.warn(message + "; the pipeline continues", RuntimeWarning, stacklevel=4)
