"""Loading ``bnnmd._core`` and checking it was built against the running torch.

A C++ extension compiled against one torch and imported beside another fails in
ways that are hard to read (undefined symbols, or a segfault at the first call).
We record ``torch.__version__`` at build time and refuse to go on when it differs.
"""

from __future__ import annotations

import torch

from bnnmd._errors import BnnmdError

REBUILD_COMMAND = "pip install --no-build-isolation --no-deps --force-reinstall .  (or: make install)"


class TorchVersionMismatch(BnnmdError, ImportError):
    """``bnnmd._core`` was compiled against a different torch than the one running."""


def check_torch_version(compiled: str, running: str) -> None:
    """Raise :class:`TorchVersionMismatch` unless ``compiled`` equals ``running``.

    Both are full ``torch.__version__`` strings (``"2.13.0+cpu"``): a CPU and a
    CUDA build of the same release are not ABI compatible either.

    Examples
    --------
    >>> check_torch_version("2.13.0+cpu", "2.13.0+cpu")
    >>> check_torch_version("2.13.0+cpu", "2.11.0+cu130")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    bnnmd._extension.TorchVersionMismatch: bnnmd's C++ extension was compiled against torch 2.13.0+cpu but torch 2.11.0+cu130 is running. ...
    """
    if compiled != running:
        raise TorchVersionMismatch(
            f"bnnmd's C++ extension was compiled against torch {compiled} but torch "
            f"{running} is running. C++ torch extensions only work with the exact torch "
            f"they were built with. Rebuild bnnmd in this environment from the source "
            f"directory: {REBUILD_COMMAND}"
        )


def load_core():
    """Import ``bnnmd._core`` and check its torch version; return the module."""
    try:
        # kept lazy: the compiled extension may be missing or unloadable; its ImportError becomes the message below
        from bnnmd import _core
    except ImportError as exc:  # not built, or built for another Python/torch
        raise ImportError(
            f"bnnmd's compiled extension bnnmd._core could not be imported ({exc}). "
            f"Build it from the source directory with: {REBUILD_COMMAND}"
        ) from exc
    check_torch_version(_core.torch_version, torch.__version__)
    return _core
