"""Write files so that a reader never sees a half-written one.

Everything ptycho-k3 writes (NPZ data, HDF5 products, bundles, pictures, JSON/YAML) goes to a
temporary file in the target's directory and is renamed over the target only once complete;
on any failure the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` if the block succeeds.

    Creates the parent directory. The file gets the usual mode (``0666 & ~umask``) instead of
    ``mkstemp``'s 0600.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call ``write(fh)`` on a temporary file opened with ``mode``, then rename it to ``path``."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        write(fh)
    return Path(path)


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for NumPy scalars/arrays, bytes and paths."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")
