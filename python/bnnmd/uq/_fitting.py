"""Fitting a calibration map on validation data (:func:`fit_map`): the ``scale`` and ``isotonic``
kinds of :class:`bnnmd.posterior.StdMap` (what the maps mean: :mod:`bnnmd.posterior._calibration`).
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
from scipy.optimize import minimize_scalar

from bnnmd.posterior import GROUP, KINDS, CalibrationError, StdMap, check_predictions, scale_predictions, unit_std
from bnnmd.uq._metrics import mll

#: Fewest units per bin before the isotonic regression (its knots are bins or pooled bins).
MIN_PER_BIN = {"forces": 20, "energy": 5}


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
    mu, sigma, y = check_predictions(mu, sigma, y)
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
    mu, sigma, y = check_predictions(mu, sigma, y)
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
