"""The calibration map of a predicted std: what ``samples/calibration.json`` and the exported
metadata store, and what the C++ evaluator and LAMMPS apply.

A map turns the uncalibrated total std ``s`` of one unit -- an atom (forces: its x, y and z
components together, ``s^2`` = mean over x, y, z of epistemic + aleatoric variance, the
per-atom std of the LAMMPS compute) or a frame (energy) -- into a factor ``c(s)`` that scales
that unit's predictive mixture about its mean: ``sigma_s -> c sigma_s`` and
``mu_s -> mean + c (mu_s - mean)``. The point prediction is unchanged and the total,
epistemic and aleatoric variances are all multiplied by ``c^2``: the rule the exporter and
the C++ evaluator apply too.

Two kinds of map (:class:`StdMap`), fitted by :func:`bnnmd.uq.fit_map`:

* ``scale``: one factor ``c`` for every unit, maximising the mean log-likelihood (MLL) of the
  validation data under the scaled mixture (:func:`bnnmd.uq.fit_scale`; for k = 1 the closed form
  ``c^2 = mean(((y - mu) / sigma)^2)``).
* ``isotonic``: ``c`` depends on ``s``. The calibrated std ``g(s) = c(s) s`` is the square
  root of an isotonic (non-decreasing) regression of the observed mean squared error of each
  unit on ``s`` (:func:`bnnmd.uq.fit_isotonic`), linear between its knots and proportional to ``s``
  beyond them (the factor of the first / last knot). ``g`` is strictly increasing, so the
  ranking of the units' stds -- the order in which atoms cross a threshold -- is kept (single
  force components of differently scaled atoms can change order, so a per-component AUC can move).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Tuple

import numpy as np

from bnnmd._errors import BnnmdError
from bnnmd.posterior._arrays import check_predictions

KINDS = ("scale", "isotonic")
#: Predictions per calibrated unit: an atom's x, y, z force components; a frame's energy.
GROUP = {"forces": 3, "energy": 1}


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
    mu, sigma, _ = check_predictions(mu, sigma)
    mean = mu.mean(axis=0, keepdims=True)
    return mean + factor * (mu - mean), factor * sigma


def unit_std(mu, sigma, group: int = 1) -> np.ndarray:
    """Uncalibrated total std of each unit of ``group`` consecutive predictions ``[n / group]``.

    ``s^2`` = mean over the unit's predictions of (variance of the k means + mean of the k
    variances): for forces (group 3) the per-atom std of the C++ evaluator.

    >>> unit_std([[0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]], 3).tolist()
    [1.1547005383792515]
    """
    mu, sigma, _ = check_predictions(mu, sigma)
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
        mu, sigma, _ = check_predictions(mu, sigma)
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
