"""Metadata stored in the exported archive as the extra file ``bnnmd.txt``.

One ``key value`` pair per line (values with spaces are lists), so that the C++
side reads it without a JSON parser. Python writes it (:func:`to_text`); the C++ core reads it,
for C++ and Python alike (:func:`parse`: ``bnnmd._core.parse_metadata``, which checks
``format_version``); tests/test_deploy.py holds a Python twin of the reader.
"""

from __future__ import annotations

from typing import Dict, List, Union

from bnnmd import _core
from bnnmd.posterior._stdmap import StdMap

#: 2: calibration_forces / calibration_energy are maps (``scale C`` or ``isotonic S:C ...``).
FORMAT_VERSION: int = _core.format_version  # the C++ reader's (bnn_evaluator.h kFormatVersion)
EXTRA_FILE = "bnnmd.txt"
#: Keys every exported file has, in the order written.
KEYS = ("format_version", "type_names", "cutoff", "num_layers", "num_samples", "energy_unit", "length_unit",
        "dtype", "calibration_forces", "calibration_energy", "method", "samples_sha256", "bnnmd_version",
        "torch_version")
#: Keys written only when known: the halt threshold (model force unit) and the rule that gave it.
OPTIONAL_KEYS = ("halt_threshold", "halt_rule")

Value = Union[str, int, float, List[str], StdMap]


def to_text(meta: Dict[str, Value]) -> str:
    missing = [k for k in KEYS if k not in meta]
    if missing:
        raise ValueError(f"metadata lacks {', '.join(missing)}")
    lines = []
    for key in KEYS + tuple(k for k in OPTIONAL_KEYS if meta.get(k) is not None):
        v = meta[key]
        v = (" ".join(v) if isinstance(v, (list, tuple)) else repr(v) if isinstance(v, float)
             else v.to_text() if isinstance(v, StdMap) else str(v))
        if not v or "\n" in v:
            raise ValueError(f"metadata value of {key} must be a non-empty single line")
        lines.append(f"{key} {v}")
    return "\n".join(lines) + "\n"


def parse(text: str, path: str = "metadata") -> Dict[str, Value]:
    """The metadata written by :func:`to_text`, read by the C++ core (calibration maps as
    :class:`~bnnmd.posterior.StdMap`). Raises ``RuntimeError`` (from C++) for unknown format versions and
    missing or malformed keys."""
    meta = dict(_core.parse_metadata(text, str(path)))
    for key in ("calibration_forces", "calibration_energy"):
        meta[key] = StdMap(**meta[key])
    return meta
