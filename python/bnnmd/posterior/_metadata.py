"""Metadata stored in the exported archive as the extra file ``bnnmd.txt``.

One ``key value`` pair per line (values with spaces are lists), so that the C++
side reads it without a JSON parser. The C++ core holds the one definition of the format: the
keys, the writer (:func:`to_text`: ``bnnmd._core.metadata_to_text``, floats exact) and the reader
(:func:`parse`: ``bnnmd._core.parse_metadata``, which checks ``format_version``), for C++ and
Python alike; tests/test_deploy.py holds a Python twin of the reader.
"""

from __future__ import annotations

from typing import Dict, List, Union

from bnnmd import _core
from bnnmd.posterior._stdmap import StdMap

#: 2: calibration_forces / calibration_energy are maps (``scale C`` or ``isotonic S:C ...``).
FORMAT_VERSION: int = _core.format_version  # the C++ reader's (bnn_evaluator.h kFormatVersion)
EXTRA_FILE: str = _core.metadata_file  # "bnnmd.txt" (kMetadataFile)
#: Keys every exported file has, in the order written.
KEYS = tuple(_core.metadata_keys)
#: Keys written only when known: the halt threshold (model force unit) and the rule that gave it.
OPTIONAL_KEYS = tuple(_core.metadata_optional_keys)

Value = Union[str, int, float, List[str], StdMap]


def to_text(meta: Dict[str, Value]) -> str:
    """The ``bnnmd.txt`` text of ``meta`` (every key of :data:`KEYS`; optional keys absent or None when
    unknown; maps as :class:`~bnnmd.posterior.StdMap`), written by the C++ core. Raises ``ValueError``
    for missing keys ("metadata lacks ...") and empty or multi-line values.

    Examples
    --------
    >>> to_text({"format_version": FORMAT_VERSION, "cutoff": 4.0})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: metadata lacks type_names, num_layers, num_samples, ..., torch_version
    """
    return _core.metadata_to_text(meta)


def parse(text: str, path: str = "metadata") -> Dict[str, Value]:
    """The metadata written by :func:`to_text`, read by the C++ core (calibration maps as
    :class:`~bnnmd.posterior.StdMap`). Raises ``RuntimeError`` (from C++) for unknown format versions and
    missing or malformed keys."""
    meta = dict(_core.parse_metadata(text, str(path)))
    for key in ("calibration_forces", "calibration_energy"):
        meta[key] = StdMap(**meta[key])
    return meta

