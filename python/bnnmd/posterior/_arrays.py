"""The one check of predictive arrays ``mu, sigma [k, n]`` (and observations ``y [n]``) that the
calibration maps and the metrics share."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def check_predictions(mu, sigma, y=None) -> Tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """``mu, sigma`` as float64 ``[k, n]`` (a 1-D array is one sample; ``sigma`` broadcast to ``mu``),
    ``y`` as float64 ``[n]``; raises ``ValueError`` naming the bad shape or a non-positive sigma."""
    mu = np.asarray(mu, dtype=np.float64)
    sigma = np.asarray(sigma, dtype=np.float64)
    if mu.ndim == 1:
        mu = mu[None]
    if sigma.ndim == 1:
        sigma = sigma[None]
    if mu.ndim != 2:
        raise ValueError(f"mu must have shape [k, n], got {mu.shape}")
    sigma = np.broadcast_to(sigma, mu.shape)
    if not (sigma > 0).all():
        raise ValueError("every sigma must be positive")
    if y is not None:
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if y.shape[0] != mu.shape[1]:
            raise ValueError(f"y has {y.shape[0]} values for {mu.shape[1]} predictions")
    return mu, sigma, y
