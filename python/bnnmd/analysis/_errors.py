"""The exception of bnn-analyze: one line that names the problem and the fix."""

from __future__ import annotations

from bnnmd._errors import BnnmdError


class AnalysisError(BnnmdError, ValueError):
    """A trajectory, topology or request that the analysis cannot serve.

    ``str(exc)`` says what is wrong (and in which file) and how to fix it.

    Examples
    --------
    >>> raise AnalysisError("traj.dump has no uncertainty columns", fix="dump c_unc[1]")
    Traceback (most recent call last):
    ...
    bnnmd.analysis._errors.AnalysisError: traj.dump has no uncertainty columns. Fix: dump c_unc[1].
    """

    def __init__(self, problem: str, fix: str = ""):
        super().__init__(problem, fix=fix or None)
