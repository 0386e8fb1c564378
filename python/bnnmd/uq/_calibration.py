"""Recalibration of the predicted uncertainty: one scale factor per quantity, fitted on validation data.

Scaling by ``c`` scales the whole predictive distribution about its mean:
``sigma_s -> c sigma_s`` and ``mu_s -> mean + c (mu_s - mean)``. The point
prediction is unchanged and the total, epistemic and aleatoric variances are all
multiplied by ``c^2`` -- the rule the exporter and the C++ evaluator apply too
("variance *= c^2" on every part). ``c`` maximises the mean log-likelihood of the
validation data under the scaled mixture (for k = 1 that is the closed form
``c^2 = mean(((y - mu) / sigma)^2)``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
from scipy.optimize import minimize_scalar

from bnnmd._files import write_atomic
from bnnmd.uq._metrics import _check, mll

CALIBRATION_FORMAT = 1
CALIBRATION_FILE = "calibration.json"
QUANTITIES = ("forces", "energy")
PathLike = Union[str, os.PathLike]


class CalibrationError(ValueError):
    """An unusable calibration file or fit; the message names the problem and the fix."""


def scale_predictions(mu, sigma, factor: float) -> Tuple[np.ndarray, np.ndarray]:
    """Per-sample ``(mu, sigma)`` of the mixture scaled by ``factor`` about its mean.

    Examples
    --------
    >>> mu, sigma = scale_predictions([[1.0], [3.0]], [[1.0], [0.5]], 2.0)
    >>> mu.ravel().tolist(), sigma.ravel().tolist()
    ([0.0, 4.0], [2.0, 1.0])
    """
    mu, sigma, _ = _check(mu, sigma)
    mean = mu.mean(axis=0, keepdims=True)
    return mean + factor * (mu - mean), factor * sigma


def fit_scale(mu, sigma, y, bounds: Tuple[float, float] = (1e-3, 1e3)) -> float:
    """The factor ``c`` in ``bounds`` that maximises the MLL of ``y`` under the scaled mixture.

    A grid over log c finds the best basin (the mixture's MLL need not be unimodal in c),
    a bounded Brent search refines it.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = 3.0 * rng.standard_normal(20000)              # truth: std 3
    >>> c = fit_scale(np.zeros((1, 20000)), np.ones((1, 20000)), y)   # model says std 1
    >>> round(c, 1), bool(abs(c - np.sqrt(np.mean(y ** 2))) < 1e-5)    # k = 1: closed form
    (3.0, True)
    """
    mu, sigma, y = _check(mu, sigma, y)
    if y.size == 0:
        raise CalibrationError("no data to fit the calibration on")
    lo, hi = np.log(bounds[0]), np.log(bounds[1])

    def loss(logc: float) -> float:
        m, s = scale_predictions(mu, sigma, float(np.exp(logc)))
        return -mll(m, s, y)

    grid = np.linspace(lo, hi, 61)
    values = [loss(g) for g in grid]
    i = int(np.argmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    res = minimize_scalar(loss, bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    best = float(res.x) if res.fun <= values[i] else float(grid[i])
    return float(np.exp(best))


@dataclass
class Calibration:
    """Scale factors of the predicted std per quantity, as stored in ``samples/calibration.json``.

    Examples
    --------
    >>> cal = Calibration({"forces": 1.5, "energy": 2.0})
    >>> mu, sigma = cal.apply("forces", [[0.0]], [[1.0]])
    >>> float(sigma[0, 0])
    1.5
    >>> Calibration.from_dict(cal.to_dict()).factors
    {'forces': 1.5, 'energy': 2.0}
    """

    factors: Dict[str, float]
    fitted_on: Dict[str, Any] = field(default_factory=dict)
    metrics_before: Dict[str, Any] = field(default_factory=dict)
    metrics_after: Dict[str, Any] = field(default_factory=dict)
    path: Optional[Path] = None

    def factor(self, quantity: str) -> float:
        return float(self.factors.get(quantity, 1.0))

    def apply(self, quantity: str, mu, sigma) -> Tuple[np.ndarray, np.ndarray]:
        """Scaled per-sample ``(mu, sigma)`` of ``quantity`` (``"forces"`` or ``"energy"``)."""
        return scale_predictions(mu, sigma, self.factor(quantity))

    def to_dict(self) -> dict:
        d: Dict[str, Any] = {"format": CALIBRATION_FORMAT}
        for q in QUANTITIES:
            d[q] = {"kind": "scale", "factor": self.factor(q)}
        d["fitted_on"] = self.fitted_on
        d["metrics_before"] = self.metrics_before
        d["metrics_after"] = self.metrics_after
        return d

    @classmethod
    def from_dict(cls, d: dict, path: Optional[PathLike] = None) -> "Calibration":
        where = f"{path}: " if path else ""
        fix = "refit it (bnn-eval SAMPLES --data split:test --calibrate-on split:val) or delete the file"
        if not isinstance(d, dict) or d.get("format") != CALIBRATION_FORMAT:
            got = d.get("format") if isinstance(d, dict) else type(d).__name__
            raise CalibrationError(f"{where}calibration format {got!r}, this bnnmd reads "
                                   f"{CALIBRATION_FORMAT}; {fix}")
        factors = {}
        for q in QUANTITIES:
            entry = d.get(q, {"kind": "scale", "factor": 1.0})
            if not isinstance(entry, dict) or entry.get("kind") != "scale":
                raise CalibrationError(f"{where}{q}: unknown calibration kind "
                                       f"{entry.get('kind') if isinstance(entry, dict) else entry!r} "
                                       f"(this bnnmd knows 'scale'); {fix}")
            c = entry.get("factor")
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c <= 0:
                raise CalibrationError(f"{where}{q}.factor = {c!r} is not a positive number; {fix}")
            factors[q] = float(c)
        return cls(factors, dict(d.get("fitted_on") or {}), dict(d.get("metrics_before") or {}),
                   dict(d.get("metrics_after") or {}), None if path is None else Path(path))

    def save(self, path: PathLike) -> Path:
        """Write atomically as JSON (``samples/calibration.json`` by convention)."""
        self.path = write_atomic(path, json.dumps(_jsonable(self.to_dict()), indent=1) + "\n")
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


def _jsonable(x):
    """NaN/inf -> None and NumPy scalars -> Python, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    return x
