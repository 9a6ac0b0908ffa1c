"""Pairs read from the on-disk shard cache as they are needed, for pair sets larger than memory.

A `ShardColumn` stands in for one `Pairs` tensor (latents, small or full): it has the tensor's
shape and dtype, and indexing it by a slice or by a 1-D tensor of sample indices reads just those
samples from the shard files (memory-mapped by safetensors, so the OS page cache does the rest).
Everything that consumes pairs (least squares, normalisation statistics, Adam batches, validation)
reads them by slices or index tensors, so it works on either.
"""

import bisect
from pathlib import Path

import torch
from safetensors import safe_open


class ShardColumn:
    def __init__(self, paths: list[Path], key: str):
        self.key = key
        self.files = [safe_open(str(p), "pt") for p in paths]  # header only; tensor bytes stay on disk
        shapes = [f.get_slice(key).get_shape() for f in self.files]
        self.starts = [0]
        for shape in shapes:
            self.starts.append(self.starts[-1] + shape[0])
        self.shape = torch.Size([self.starts[-1], *shapes[0][1:]])
        self.dtype = self[0:1].dtype if self.starts[-1] else torch.float32
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return self.shape[0]

    def _rows(self, lo: int, hi: int) -> torch.Tensor:
        """Samples lo..hi-1, which may span several shards."""
        parts = []
        while lo < hi:
            j = bisect.bisect_right(self.starts, lo) - 1
            end = min(hi, self.starts[j + 1])
            parts.append(self.files[j].get_slice(self.key)[lo - self.starts[j]:end - self.starts[j]])
            lo = end
        return torch.cat(parts) if parts else torch.empty(0, *self.shape[1:], dtype=self.dtype)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, slice):
            lo, hi, step = index.indices(len(self))
            if step != 1:
                raise IndexError("shard columns take contiguous slices or index tensors")
            return self._rows(lo, max(lo, hi))
        index = torch.as_tensor(index, dtype=torch.long).flatten()
        if not len(index):
            return self._rows(0, 0)
        order = index.argsort()
        rows = torch.cat([self._rows(i, i + 1) for i in index[order].tolist()])
        return rows[order.argsort()]  # back to the asked order
