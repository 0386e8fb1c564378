"""Atomic file writes (a reader sees the old file or the new one, never half of one) and strict JSON."""

from __future__ import annotations

import fcntl
import io
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Union

import numpy as np


def write_atomic(path: Union[str, os.PathLike], data: Union[str, bytes]) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory and a rename."""
    path = Path(path)
    mode = "wb" if isinstance(data, bytes) else "w"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:  # name the file asked for, not its parent or a temporary name
        raise OSError(exc.errno, f"cannot write {path} ({exc.strerror})") from None
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_npz_atomic(path: Union[str, os.PathLike], **arrays) -> Path:
    """``numpy.savez`` of ``arrays`` to ``path``, written atomically (:func:`write_atomic`)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_atomic(path, buf.getvalue())


def jsonable(x):
    """NaN/inf -> None and NumPy scalars -> Python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    return x


class DirectoryLock:
    """``with DirectoryLock(directory, error):`` holds an exclusive lock on ``directory`` (created) for
    the block, so that a second process writing into the same run directory stops at once with
    ``error`` naming the holder, instead of both writing and the directory ending mixed.

    The lock is ``fcntl.flock`` on ``directory/.bnnmd.lock``: the system drops it when the holder
    exits, killed or not, so a killed run resumes without any cleanup. A directory the lock created
    and nothing else wrote into (the run failed at once) is removed again on exit.
    """

    NAME = ".bnnmd.lock"

    def __init__(self, directory: Union[str, os.PathLike], error: type):
        self.directory, self.error, self._fh = Path(directory), error, None

    def __enter__(self) -> "DirectoryLock":
        self._created = not self.directory.exists()
        self.directory.mkdir(parents=True, exist_ok=True)
        fh = open(self.directory / self.NAME, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise self.error(f"{self.directory} is in use by {holder}; wait for it to end, or give another "
                             "output directory") from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{Path(sys.argv[0]).name or 'python'} (pid {os.getpid()})\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc) -> None:
        if self._created and [p.name for p in self.directory.iterdir()] == [self.NAME]:
            (self.directory / self.NAME).unlink()
            self.directory.rmdir()
        fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
        self._fh.close()
        self._fh = None
