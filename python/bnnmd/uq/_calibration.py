"""Recalibration of the predicted uncertainty, fitted on validation data: one map per quantity.

A map turns the uncalibrated total std ``s`` of one unit -- an atom (forces: its x, y and z
components together, ``s^2`` = mean over x, y, z of epistemic + aleatoric variance, the
per-atom std of the LAMMPS compute) or a frame (energy) -- into a factor ``c(s)`` that scales
that unit's predictive mixture about its mean: ``sigma_s -> c sigma_s`` and
``mu_s -> mean + c (mu_s - mean)``. The point prediction is unchanged and the total,
epistemic and aleatoric variances are all multiplied by ``c^2``: the rule the exporter and
the C++ evaluator apply too.

Two kinds of map (:class:`StdMap`):

* ``scale``: one factor ``c`` for every unit, maximising the mean log-likelihood (MLL) of the
  validation data under the scaled mixture (:func:`fit_scale`; for k = 1 the closed form
  ``c^2 = mean(((y - mu) / sigma)^2)``).
* ``isotonic``: ``c`` depends on ``s``. The calibrated std ``g(s) = c(s) s`` is the square
  root of an isotonic (non-decreasing) regression of the observed mean squared error of each
  unit on ``s`` (:func:`fit_isotonic`), linear between its knots and proportional to ``s``
  beyond them (the factor of the first / last knot). ``g`` is strictly increasing, so the
  ranking of the units' stds -- the order in which atoms cross a threshold -- is kept (single
  force components of differently scaled atoms can change order, so a per-component AUC can move).
"""

from __future__ import annotations

from bnnmd._errors import BnnmdError

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
KINDS = ("scale", "isotonic")
#: Predictions per calibrated unit: an atom's x, y, z force components; a frame's energy.
GROUP = {"forces": 3, "energy": 1}
#: Fewest units per bin before the isotonic regression (its knots are bins or pooled bins).
MIN_PER_BIN = {"forces": 20, "energy": 5}
PathLike = Union[str, os.PathLike]


class CalibrationError(BnnmdError, ValueError):
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


def unit_std(mu, sigma, group: int = 1) -> np.ndarray:
    """Uncalibrated total std of each unit of ``group`` consecutive predictions ``[n / group]``.

    ``s^2`` = mean over the unit's predictions of (variance of the k means + mean of the k
    variances): for forces (group 3) the per-atom std of the C++ evaluator.

    >>> unit_std([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], 3).tolist()
    [1.1547005383792515]
    """
    mu, sigma, _ = _check(mu, sigma)
    n = mu.shape[1]
    if n % group:
        raise CalibrationError(f"{n} predictions do not split into units of {group}")
    var = mu.var(axis=0) + np.mean(sigma ** 2, axis=0)
    return np.sqrt(var.reshape(-1, group).mean(axis=1))


@dataclass(frozen=True)
class StdMap:
    """A calibration map ``s -> c(s)`` of the uncalibrated total std ``s`` of a unit (module doc).

    ``kind`` is ``"scale"`` (one knot: ``c`` everywhere) or ``"isotonic"``; ``std`` are the
    knots (strictly increasing, model units), ``factor`` the factors there. Between knots the
    calibrated std ``c(s) s`` is linear in ``s``; beyond them ``c`` is the end knot's factor.

    Examples
    --------
    >>> m = StdMap("isotonic", (1.0, 2.0), (2.0, 1.5))        # g(1) = 2, g(2) = 3
    >>> m.factor_at([0.5, 1.0, 1.5, 2.0, 4.0]).tolist()         # g(1.5) = 2.5
    [2.0, 2.0, 1.6666666666666667, 1.5, 1.5]
    >>> StdMap.from_text(m.to_text()) == m, m.to_text()
    (True, 'isotonic 1.0:2.0 2.0:1.5')
    >>> StdMap.scale(0.9).factor_at([0.1, 10.0]).tolist()
    [0.9, 0.9]
    """

    kind: str
    std: Tuple[float, ...]
    factor: Tuple[float, ...]

    def __post_init__(self):
        std = tuple(float(x) for x in self.std)
        factor = tuple(float(x) for x in self.factor)
        object.__setattr__(self, "std", std)
        object.__setattr__(self, "factor", factor)
        if self.kind not in KINDS:
            raise CalibrationError(f"unknown calibration kind {self.kind!r} (this bnnmd knows "
                                   f"{', '.join(KINDS)})")
        if not std or len(std) != len(factor):
            raise CalibrationError(f"a {self.kind} map needs as many factors as knots, at least one "
                                   f"(got {len(std)} knots, {len(factor)} factors)")
        if self.kind == "scale" and len(std) != 1:
            raise CalibrationError(f"a scale map has one factor, got {len(std)}")
        if not all(math.isfinite(c) and c > 0 for c in factor):
            raise CalibrationError(f"calibration factors {list(factor)} must be positive numbers")
        if not all(math.isfinite(x) and x > 0 for x in std) or any(b <= a for a, b in zip(std, std[1:])):
            raise CalibrationError(f"calibration knots {list(std)} must be positive and strictly increasing")

    @classmethod
    def scale(cls, factor: float) -> "StdMap":
        return cls("scale", (1.0,), (float(factor),))

    def factor_at(self, s) -> np.ndarray:
        """The factor ``c(s)`` for stds ``s`` (any shape)."""
        s = np.asarray(s, dtype=np.float64)
        xs, cs = np.asarray(self.std), np.asarray(self.factor)
        g = np.interp(s, xs, xs * cs)
        with np.errstate(divide="ignore", invalid="ignore"):
            c = np.where(s > 0, g / s, cs[0])
        c = np.where(s <= xs[0], cs[0], c)
        return np.where(s >= xs[-1], cs[-1], c)

    def apply(self, mu, sigma, group: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """Per-sample ``(mu, sigma)`` ``[k, n]`` of the mixtures, each unit of ``group`` scaled by ``c(s)``."""
        mu, sigma, _ = _check(mu, sigma)
        if self.kind == "scale":
            return scale_predictions(mu, sigma, self.factor[0])
        c = np.repeat(self.factor_at(unit_std(mu, sigma, group)), group)[None, :]
        mean = mu.mean(axis=0, keepdims=True)
        return mean + c * (mu - mean), c * sigma

    def in_units(self, std_factor: float) -> "StdMap":
        """The same map for stds measured in other units (``s_new = std_factor * s``)."""
        if self.kind == "scale":
            return self
        return StdMap(self.kind, tuple(x * std_factor for x in self.std), self.factor)

    def describe(self) -> str:
        if self.kind == "scale":
            return f"std x {self.factor[0]:.4g}"
        return (f"isotonic, {len(self.std)} knots, std x {min(self.factor):.3g}..{max(self.factor):.3g} "
                f"(x {self.factor[0]:.3g} below {self.std[0]:.3g}, x {self.factor[-1]:.3g} above {self.std[-1]:.3g})")

    def to_dict(self) -> dict:
        if self.kind == "scale":
            return {"kind": "scale", "factor": self.factor[0]}
        return {"kind": self.kind, "std": list(self.std), "factor": list(self.factor)}

    @classmethod
    def from_dict(cls, entry) -> "StdMap":
        if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
            kind = entry.get("kind") if isinstance(entry, dict) else entry
            raise CalibrationError(f"unknown calibration kind {kind!r} (this bnnmd knows {', '.join(KINDS)})")

        def numbers(key):
            v = entry.get(key)
            v = [v] if entry["kind"] == "scale" and key == "factor" else v
            if not isinstance(v, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in v):
                raise CalibrationError(f"{key} = {entry.get(key)!r} is not a list of numbers"
                                       if entry["kind"] != "scale" else
                                       f"factor = {entry.get(key)!r} is not a positive number")
            return v

        if entry["kind"] == "scale":
            f = numbers("factor")
            if not (math.isfinite(f[0]) and f[0] > 0):
                raise CalibrationError(f"factor = {f[0]!r} is not a positive number")
            return cls.scale(f[0])
        return cls(entry["kind"], tuple(numbers("std")), tuple(numbers("factor")))

    def to_text(self) -> str:
        """One line for the exported metadata: ``scale C`` or ``isotonic S:C S:C ...``."""
        if self.kind == "scale":
            return f"scale {self.factor[0]!r}"
        return "isotonic " + " ".join(f"{x!r}:{c!r}" for x, c in zip(self.std, self.factor))

    @classmethod
    def from_text(cls, text: str) -> "StdMap":
        kind, *rest = str(text).split()
        try:
            if kind == "scale" and len(rest) == 1:
                return cls.scale(float(rest[0]))
            pairs = [tuple(float(v) for v in r.split(":")) for r in rest]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(text)
            return cls(kind, tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))
        except ValueError:
            raise CalibrationError(f"calibration map {text!r} is not 'scale C' or 'isotonic S:C ...'") from None


def fit_isotonic(mu, sigma, y, group: int = 1, min_per_bin: int = 20) -> StdMap:
    """An isotonic map fitted on ``y``: ``g(s)^2`` = isotonic regression of the units' errors on ``s``.

    The units (``group`` consecutive predictions) are sorted by their std ``s`` and pooled into
    bins of at least ``min_per_bin`` units; a weighted pool-adjacent-violators pass makes the
    bins' mean squared errors (about the mixture mean, averaged over the unit) non-decreasing.
    Each pooled block becomes one knot at its mean ``s``, with ``g`` = the square root of its
    mean squared error, so ``g`` is strictly increasing from knot to knot.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> s = rng.uniform(0.5, 2.0, 40000)                  # predicted std
    >>> y = np.where(s < 1, 2 * s, s) * rng.standard_normal(s.size)   # true std: 2 s below 1, s above
    >>> m = fit_isotonic(np.zeros((1, s.size)), s[None], y, min_per_bin=500)
    >>> np.round(m.factor_at([0.6, 1.5]), 1).tolist()
    [2.0, 1.0]
    """
    mu, sigma, y = _check(mu, sigma, y)
    if y.size == 0:
        raise CalibrationError("no data to fit the calibration on")
    s = unit_std(mu, sigma, group)
    err2 = ((y - mu.mean(axis=0)) ** 2).reshape(-1, group).mean(axis=1)
    order = np.argsort(s, kind="stable")
    s, err2 = s[order], err2[order]
    nb = max(1, len(s) // max(1, int(min_per_bin)))
    edges = np.linspace(0, len(s), nb + 1).round().astype(int)
    # blocks: [weight, sum of s, sum of err2]; pool while the mean error does not increase
    blocks: list = []
    for a, b in zip(edges[:-1], edges[1:]):
        blocks.append([float(b - a), float(s[a:b].sum()), float(err2[a:b].sum())])
        while len(blocks) > 1 and blocks[-2][2] / blocks[-2][0] >= blocks[-1][2] / blocks[-1][0]:
            w, ss, ee = blocks.pop()
            blocks[-1] = [blocks[-1][0] + w, blocks[-1][1] + ss, blocks[-1][2] + ee]
    knots = np.array([b[1] / b[0] for b in blocks])
    g = np.sqrt(np.maximum(np.array([b[2] / b[0] for b in blocks]), 1e-300))
    keep = np.concatenate([[True], np.diff(knots) > 0]) & (knots > 0)
    if not keep.any():
        raise CalibrationError("every predicted std is zero; nothing to calibrate")
    knots, g = knots[keep], g[keep]
    if len(knots) == 1:
        return StdMap.scale(float(g[0] / knots[0]))
    return StdMap("isotonic", tuple(knots), tuple(g / knots))


def fit_map(kind: str, mu, sigma, y, quantity: str) -> StdMap:
    """A ``kind`` map for ``quantity`` (``"forces"`` or ``"energy"``) fitted on ``y``."""
    if kind == "scale":
        return StdMap.scale(fit_scale(mu, sigma, y))
    if kind == "isotonic":
        return fit_isotonic(mu, sigma, y, GROUP[quantity], MIN_PER_BIN[quantity])
    raise CalibrationError(f"calibration kind {kind!r}: use one of {', '.join(KINDS)}")


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
    #: what the halt rules of bnnmd.uq._halt need (validation frames); None: not recorded
    halt: Optional[Any] = None

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
        from bnnmd.uq._halt import HaltStatistics

        try:
            halt = HaltStatistics.from_dict(d.get("halt"))
        except (KeyError, TypeError, ValueError) as exc:
            raise CalibrationError(f"{where}halt statistics are malformed ({exc}); {fix}") from None
        return cls(maps, dict(d.get("fitted_on") or {}), dict(d.get("metrics_before") or {}),
                   dict(d.get("metrics_after") or {}), None if path is None else Path(path), halt)

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
