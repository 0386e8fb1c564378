"""Python twin of the C++ evaluator's aggregation (tests compare the two)."""

from __future__ import annotations

from typing import Dict, Union

import numpy as np

from bnnmd.uq._calibration import StdMap

Calibration = Union[StdMap, float]


def _factor(calibration: Calibration, s):
    m = calibration if isinstance(calibration, StdMap) else StdMap.scale(calibration)
    return m.factor_at(s)


def energy_stats(energy: np.ndarray, energy_std: np.ndarray, calibration: Calibration = 1.0) -> Dict[str, float]:
    """Mixture moments of k energies: mean, and calibrated total/epistemic/aleatoric std.

    ``calibration``: a :class:`~bnnmd.uq.StdMap` (or a scale factor) applied to the uncalibrated
    total std; every variance is multiplied by its factor squared.
    """
    epi = np.var(energy)
    alea = np.mean(np.square(energy_std))
    c2 = float(_factor(calibration, np.sqrt(epi + alea))) ** 2
    epi, alea = epi * c2, alea * c2
    return {"energy": float(np.mean(energy)), "energy_std": float(np.sqrt(epi + alea)),
            "energy_std_epistemic": float(np.sqrt(epi)), "energy_std_aleatoric": float(np.sqrt(alea))}


def force_stats(forces: np.ndarray, forces_std: np.ndarray, calibration: Calibration = 1.0) -> Dict[str, np.ndarray]:
    """Per-atom force mean ``[n, 3]`` and stds ``[n]`` from ``[k, n, 3]`` forces and ``[k, n]`` sigmas.

    epistemic^2 = mean over x, y, z of the variance (ddof 0) of the k forces;
    aleatoric^2 = mean over samples of sigma_F^2; total^2 = the sum; all times
    ``c(total)^2`` of the calibration map. A per-component std, in force units.
    """
    epi = np.var(forces, axis=0).mean(axis=-1)
    alea = np.mean(np.square(forces_std), axis=0)
    c2 = _factor(calibration, np.sqrt(epi + alea)) ** 2
    epi, alea = epi * c2, alea * c2
    return {"forces": forces.mean(axis=0), "forces_std": np.sqrt(epi + alea),
            "forces_std_epistemic": np.sqrt(epi), "forces_std_aleatoric": np.sqrt(alea)}
