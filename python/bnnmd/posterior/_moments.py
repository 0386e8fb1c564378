"""The mixture moments of k samples, computed by the C++ core (the one implementation that LAMMPS,
the evaluator and these functions share; tests/test_deploy.py holds a NumPy twin as reference)."""

from __future__ import annotations

from typing import Dict, Union

import numpy as np

from bnnmd import _core
from bnnmd.posterior._stdmap import StdMap

Calibration = Union[StdMap, float]


def _map_text(calibration: Calibration) -> str:
    return (calibration if isinstance(calibration, StdMap) else StdMap.scale(float(calibration))).to_text()


def energy_stats(energy: np.ndarray, energy_std: np.ndarray, calibration: Calibration = 1.0) -> Dict[str, float]:
    """Mixture moments of k energies: mean, and calibrated total/epistemic/aleatoric std.

    ``calibration``: a :class:`~bnnmd.posterior.StdMap` (or a scale factor) applied to the uncalibrated
    total std; every variance is multiplied by its factor squared.
    """
    return _core.energy_stats(np.asarray(energy, dtype=np.float64).reshape(-1),
                              np.asarray(energy_std, dtype=np.float64).reshape(-1), _map_text(calibration))


def force_stats(forces: np.ndarray, forces_std: np.ndarray, calibration: Calibration = 1.0) -> Dict[str, np.ndarray]:
    """Per-atom force mean ``[n, 3]`` and stds ``[n]`` from ``[k, n, 3]`` forces and ``[k, n]`` sigmas.

    epistemic^2 = mean over x, y, z of the variance (ddof 0) of the k forces;
    aleatoric^2 = mean over samples of sigma_F^2; total^2 = the sum; all times
    ``c(total)^2`` of the calibration map. A per-component std, in force units.
    """
    return _core.force_stats(np.asarray(forces, dtype=np.float64), np.asarray(forces_std, dtype=np.float64),
                             _map_text(calibration))
