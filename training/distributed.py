"""Data-parallel fitting under torchrun: the process group and the few collectives the fit uses.

`torchrun --nproc_per_node=N -m previewers fit ...` starts N processes with WORLD_SIZE, RANK and
LOCAL_RANK in their environment; `launched()` joins them into one process group (nccl when the fit
runs on CUDA, gloo on the CPU). Without torchrun, or with one process, no group is made and every
helper here is the identity: the single-process fit is the world-size-1 case of the same code.
"""

import contextlib
import os
import signal
from dataclasses import dataclass

import torch
import torch.distributed as dist


class LostProcess(ConnectionError):
    """Another process of the run failed or was stopped: this one gives up too, writing nothing."""


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank in [0, size), local_rank its index on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0 alone writes shared files (cache index, checkpoint, weight file) and shows progress."""
        return self.rank == 0

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over all processes (a new tensor on tensor's device; the input itself for one process)."""
        if self.size == 1:
            return tensor
        # nccl reduces CUDA tensors only; gloo takes them where they are
        on = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else tensor.device
        total = tensor.to(on, copy=True)
        _collective(dist.all_reduce, total)
        return total.to(tensor.device)

    def gather(self, value) -> list:
        """`value` (any picklable object) of every process, in rank order."""
        if self.size == 1:
            return [value]
        out = [None] * self.size
        _collective(dist.all_gather_object, out, value)
        return out

    def from_main(self, compute):
        """compute() run on rank 0 only, its result (or its ValueError/FileNotFoundError, raised on every
        rank) handed to all processes: for what only rank 0 may read or decide."""
        if self.size == 1:
            return compute()
        box = [None]
        if self.main:
            try:
                box[0] = ("ok", compute())
            except (ValueError, FileNotFoundError) as e:
                box[0] = ("error", e)
        _collective(dist.broadcast_object_list, box, src=0)
        outcome, value = box[0]
        if outcome == "error":
            raise value
        return value

    def barrier(self) -> None:
        if self.size > 1:
            _collective(dist.barrier)


def current() -> World:
    """The running process group's World, or the one-process World when there is none."""
    if not dist.is_initialized():
        return World()
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def _collective(op, *args, **kwargs):
    try:
        return op(*args, **kwargs)
    except dist.DistError as e:
        raise LostProcess(lost_message(e)) from None


def lost_message(error: Exception) -> str:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"process {dist.get_rank()} of {dist.get_world_size()}: another process of this run failed or was "
            f"stopped ({first}); giving up without writing a weight file (see the first failing process's error)")


@contextlib.contextmanager
def launched(cuda: bool):
    """Join torchrun's processes for the duration of a fit (a no-op without torchrun or with one process).

    cuda: whether this fit runs on CUDA, which picks nccl (one GPU per process, cuda:LOCAL_RANK)
    over gloo. SIGTERM, which torchrun sends to the surviving processes when one fails, becomes an
    exception, so files being written are removed rather than left half-written.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1 or dist.is_initialized():
        yield current()
        return
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ValueError(f"process {local_rank} on this machine has no GPU of its own (torch sees "
                             f"{torch.cuda.device_count()}); start at most that many with --nproc_per_node")
        torch.cuda.set_device(local_rank)

    def stopped(signum, frame):
        raise LostProcess(f"process {dist.get_rank()} of {dist.get_world_size()}: stopped by SIGTERM (torchrun "
                          "stops the others when one process fails); nothing half-written is left")

    previous = signal.signal(signal.SIGTERM, stopped)
    dist.init_process_group("nccl" if cuda else "gloo")
    try:
        yield current()
    except dist.DistError as e:  # a collective inside torch (DDP's gradient all-reduce) lost its peer
        raise LostProcess(lost_message(e)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()
