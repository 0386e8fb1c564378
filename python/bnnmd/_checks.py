"""The one kit that checks config values (``bnn-train``'s sections, the model, ``bnn-learn``'s sections).

Every message has one form, ``SECTION.KEY = VALUE: what is allowed``, raised as the caller's error
class (``ConfigError``, ``LearnError``).

Examples
--------
>>> from types import SimpleNamespace
>>> Checks(ValueError, "training").integer(SimpleNamespace(batch_size=0), "batch_size", 1)
Traceback (most recent call last):
...
ValueError: training.batch_size = 0: must be an integer >= 1
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Type


def is_int(v) -> bool:
    """An integer, and not a bool (YAML's ``true`` is no count)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """A finite int or float, and not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class Checks:
    """``Checks(error, section)``: checks of ``section``'s values that raise ``error`` (section ``""``: top-level
    keys, named without a prefix)."""

    def __init__(self, error: Type[Exception], section: str):
        self.error, self.section = error, section

    def bad(self, key: str, value, allowed: str):
        raise self.error(f"{self.section + '.' if self.section else ''}{key} = {value!r}: {allowed}")

    def integer(self, obj, key: str, minimum: int, what: str = "") -> None:
        v = getattr(obj, key)
        if not is_int(v) or v < minimum:
            self.bad(key, v, f"must be an integer >= {minimum}{what}")

    def number(self, obj, key: str, lo: Optional[float] = None, hi: Optional[float] = None, lo_open: bool = False,
               hi_open: bool = False) -> None:
        """A finite number in the interval given (open or closed at each end)."""
        v = getattr(obj, key)
        ok = is_number(v)
        if ok and lo is not None:
            ok = v > lo if lo_open else v >= lo
        if ok and hi is not None:
            ok = v < hi if hi_open else v <= hi
        if not ok:
            rng = (f"{'(' if lo_open else '['}{lo if lo is not None else '-inf'}, "
                   f"{hi if hi is not None else 'inf'}{')' if hi_open or hi is None else ']'}")
            self.bad(key, v, f"must be a number in {rng}")

    def positive(self, obj, key: str, what: str = "") -> None:
        """A finite number > 0."""
        v = getattr(obj, key)
        if not is_number(v) or v <= 0:
            self.bad(key, v, f"must be a finite number > 0{what}")

    def boolean(self, obj, key: str) -> None:
        if not isinstance(getattr(obj, key), bool):
            self.bad(key, getattr(obj, key), "must be true or false")

    def choice(self, obj, key: str, choices: Sequence[str]) -> None:
        if getattr(obj, key) not in choices:
            self.bad(key, getattr(obj, key), f"must be one of {', '.join(choices)}")
