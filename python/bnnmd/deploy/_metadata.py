"""Metadata stored in the exported archive as the extra file ``bnnmd.txt``.

One ``key value`` pair per line (values with spaces are lists), so that the C++
side reads it without a JSON parser. Both sides check ``format_version``.
"""

from __future__ import annotations

from typing import Dict, List, Union

from bnnmd.uq._calibration import StdMap

#: 2: calibration_forces / calibration_energy are maps (``scale C`` or ``isotonic S:C ...``).
FORMAT_VERSION = 2
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


def from_text(text: str) -> Dict[str, Value]:
    meta: Dict[str, Value] = {}
    for line in text.splitlines():
        if line.strip():
            key, _, value = line.partition(" ")
            meta[key] = value
    out: Dict[str, Value] = dict(meta)
    for key in ("format_version", "num_layers", "num_samples"):
        if key in meta:
            out[key] = int(meta[key])
    for key in ("cutoff", "halt_threshold"):
        if key in meta:
            out[key] = float(meta[key])
    for key in ("calibration_forces", "calibration_energy"):
        if key in meta:
            out[key] = StdMap.from_text(str(meta[key]))
    if "type_names" in meta:
        out["type_names"] = str(meta["type_names"]).split()
    return out
