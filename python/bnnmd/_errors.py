"""``BnnmdError``: the one base class of the errors bnnmd raises for input it cannot serve.

Every bnnmd error names the problem and the fix in its message (``PROBLEM. Fix: FIX.`` when the
fix is given apart, or one sentence that holds both). Each
package's own class (``ConfigError``, ``DataError``, ``ExportError``, ...) derives from it and
from the built-in class it has always been (``ValueError``, ``RuntimeError``, ``ImportError``),
so ``except bnnmd.BnnmdError`` catches them all and older ``except ValueError`` code still works.
"""

from __future__ import annotations

from typing import Optional


class BnnmdError(Exception):
    """``BnnmdError(problem)``, or ``BnnmdError(problem, fix=...)``: the message is
    ``problem. Fix: fix.``"""

    def __init__(self, problem: str = "", *args, fix: Optional[str] = None):
        self.problem = str(problem)
        self.fix = fix
        super().__init__(f"{self.problem}. Fix: {fix}." if fix else self.problem, *args)
