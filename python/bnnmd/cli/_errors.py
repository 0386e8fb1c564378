"""How every ``bnn-*`` command reports input it cannot serve: one line on stderr, exit status 2."""

from __future__ import annotations

import sys
from typing import Callable

from bnnmd._errors import BnnmdError


def fail(prog: str, message: str) -> int:
    """Print ``PROG: error: MESSAGE`` to stderr (argparse's form) and return exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    return 2


def guarded(prog: str, action: Callable[[], int]) -> int:
    """``action()``, with every :class:`~bnnmd.BnnmdError` and file-system error turned into :func:`fail`.

    bnnmd's errors (``ConfigError``, ``DataError``, ``ExportError``, ...) already name the problem and
    its fix; an ``OSError`` (a missing directory, a path through a file, no permission, a full disk)
    gets the path from Python's message and a hint. Anything else is a bug and keeps its traceback.
    """
    try:
        return action()
    except BnnmdError as exc:
        return fail(prog, str(exc))
    except OSError as exc:
        return fail(prog, f"{exc}; check the path, its permissions and the free space")
