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


def virial_stats(virial: np.ndarray, virial_std: np.ndarray) -> Dict[str, Union[float, np.ndarray]]:
    """Mixture moments of ``[k, 3, 3]`` virials W (energy units, W = -V x stress) and their ``[k]`` sigma_W.

    ``virial`` (mean) and per-component ``virial_std``, ``virial_std_epistemic``,
    ``virial_std_aleatoric`` (each ``[3, 3]``): epistemic^2 = the variance (ddof 0) of the k virials,
    aleatoric^2 = mean over samples of sigma_W^2, total^2 = the sum. ``pressure_volume`` = tr(W)/3
    (the virial pressure times the volume) and its ``pressure_volume_std`` (+ ``_epistemic``,
    ``_aleatoric``): epistemic^2 = the variance of the k values tr(W_s)/3, aleatoric^2 = mean of
    sigma_W^2 / 3 (the components independent). Not calibrated: there is no calibration map for stress.
    """
    return _core.virial_stats(np.asarray(virial, dtype=np.float64).reshape(-1, 3, 3),
                              np.asarray(virial_std, dtype=np.float64).reshape(-1))
