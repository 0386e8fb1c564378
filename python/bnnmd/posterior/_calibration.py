"""``samples/calibration.json``: one :class:`~bnnmd.posterior.StdMap` per quantity, with the
halt statistics of the calibrated model (:mod:`bnnmd.posterior._halt`), written by
``bnn-eval --calibrate-on`` (:func:`bnnmd.uq.calibrate`) and read by the exporter and the ASE calculator.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from bnnmd._files import jsonable, write_atomic
from bnnmd.posterior._halt import HaltStatistics
from bnnmd.posterior._stdmap import GROUP, CalibrationError, StdMap

CALIBRATION_FORMAT = 1
CALIBRATION_FILE = "calibration.json"
QUANTITIES = ("forces", "energy")
PathLike = Union[str, os.PathLike]


@dataclass
class Calibration:
    """One :class:`StdMap` per quantity, as stored in ``samples/calibration.json``.

    Plain numbers are scale factors.

    Examples
    --------
    >>> cal = Calibration({"forces": 1.5, "energy": 2.0})
    >>> mu, sigma = cal.apply("forces", [[0.0, 0.0, 0.0]], [[1.0, 1.0, 1.0]])
    >>> sigma.tolist()
    [[1.5, 1.5, 1.5]]
    >>> Calibration.from_dict(cal.to_dict()).maps["energy"]
    StdMap(kind='scale', std=(1.0,), factor=(2.0,))
    """

    maps: Dict[str, Any]
    fitted_on: Dict[str, Any] = field(default_factory=dict)
    metrics_before: Dict[str, Any] = field(default_factory=dict)
    metrics_after: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None
    #: what the halt rules of bnnmd.posterior._halt need (validation frames); None: not recorded
    halt: Optional[HaltStatistics] = None

    def __post_init__(self):
        self.maps = {q: m if isinstance(m, StdMap) else StdMap.scale(m) for q, m in self.maps.items()}

    def map(self, quantity: str) -> StdMap:
        return self.maps.get(quantity) or StdMap.scale(1.0)

    def apply(self, quantity: str, mu, sigma) -> Tuple[np.ndarray, np.ndarray]:
        """Calibrated per-sample ``(mu, sigma)`` of ``quantity`` (forces: x, y, z of each atom in a row)."""
        return self.map(quantity).apply(mu, sigma, GROUP[quantity])

    def describe(self) -> str:
        return "; ".join(f"{q}: {self.map(q).describe()}" for q in QUANTITIES)

    def to_dict(self) -> dict:
        d: Dict[str, Any] = {"format": CALIBRATION_FORMAT}
        for q in QUANTITIES:
            d[q] = self.map(q).to_dict()
        d["fitted_on"] = self.fitted_on
        d["metrics_before"] = self.metrics_before
        d["metrics_after"] = self.metrics_after
        if self.halt is not None:
            d["halt"] = self.halt.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict, path: Optional[PathLike] = None) -> "Calibration":
        where = f"{path}: " if path else ""
        fix = "refit it (bnn-eval SAMPLES --data split:test --calibrate-on split:val) or delete the file"
        if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CalibrationError(f"{where}calibration format {got!r}, this bnnmd reads "
                                   f"{CALIBRATION_FORMAT}; {fix}")
        maps = {}
        for q in QUANTITIES:
            try:
                maps[q] = StdMap.from_dict(d.get(q, {"kind": "scale", "factor": 1.0}))
            except CalibrationError as exc:
                raise CalibrationError(f"{where}{q}: {exc}; {fix}") from None
        try:
            halt = HaltStatistics.from_dict(d.get("halt"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}halt statistics are malformed ({exc}); {fix}") from None
        return cls(maps, dict(d.get("fitted_on") or {}), dict(d.get("metrics_before") or {}),
                   dict(d.get("metrics_after") or {}), None if path is None else Path(path), halt)

    def save(self, path: PathLike) -> Path:
        """Write atomically as JSON (``samples/calibration.json`` by convention)."""
        self.path = write_atomic(path, json.dumps(jsonable(self.to_dict()), indent=1) + "\n")
        return self.path

    @classmethod
    def load(cls, path: PathLike) -> "Calibration":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise CalibrationError(f"{path}: calibration file does not exist") from None
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"{path}: not valid JSON ({exc}); refit the calibration or delete "
                                   "the file") from None
        return cls.from_dict(d, path)


def find_calibration(samples_dir: PathLike) -> Optional[Calibration]:
    """The calibration stored next to the samples, or None."""
    p = Path(samples_dir) / CALIBRATION_FILE
    return Calibration.load(p) if p.is_file() else None
