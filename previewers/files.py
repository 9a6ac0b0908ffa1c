"""Files written whole or not at all: a reader, or a run stopped mid-write, never sees a torn file."""

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path) -> Iterator[Path]:
    """Yield a temporary path beside `path` to write to; when the block ends normally the temporary file replaces
    `path` (one rename, atomic on the same file system), when it raises (KeyboardInterrupt included) the temporary
    file is removed and `path` is left as it was. Makes `path`'s folder if it is missing.

    The temporary name is hidden (leading dot), ends in .tmp and is unique per call, so processes writing the same
    file (torchrun ranks, two fits sharing a cache) never write into each other's temporary file. It is not created
    here: the writer creates it, with the usual permissions.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
