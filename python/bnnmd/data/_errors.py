"""The one exception type for bad data, with messages that name file, field and fix."""

from __future__ import annotations

from bnnmd._errors import BnnmdError

from os import PathLike
from typing import Optional, Union


class DataError(BnnmdError, ValueError):
    """Bad input data.

    The message always says where (file and field when known), what is wrong and
    how to fix it, so a user does not need to read bnnmd's code.

    Examples
    --------
    >>> raise DataError("has NaN values", file="x.npz", field="forces", fix="remove the frame")
    Traceback (most recent call last):
    ...
    bnnmd.data._errors.DataError: x.npz: field 'forces': has NaN values. Fix: remove the frame.
    """

    def __init__(
        self,
        problem: str,
        *,
        file: Optional[Union[str, PathLike]] = None,
        field: Optional[str] = None,
        fix: Optional[str] = None,
    ):
        self.problem = problem
        self.file = None if file is None else str(file)
        self.field = field
        self.fix = fix
        where = []
        if self.file is not None:
            where.append(self.file)
        if field is not None:
            where.append(f"field '{field}'")
        msg = ": ".join(where + [problem]) if where else problem
        if fix:
            msg += f". Fix: {fix}."
        super().__init__(msg)
        self.problem, self.fix = problem, fix  # BnnmdError's attributes (its message has this form)
