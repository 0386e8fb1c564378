"""When MD should stop: a threshold on the per-atom force std, from a rule on validation data.

``bnn-eval --calibrate-on split:val`` records :class:`HaltStatistics` of the calibrated model
on the validation frames in ``samples/calibration.json``; ``bnn-export`` turns them into one
number with a rule (``--halt-rule``), stores it in the exported file, and prints it. LAMMPS
reads it as ``c_unc[5]`` of ``compute bnn/atom``, so an input halts with

    variable ratio equal c_unc[4]/c_unc[5]      # largest per-atom std / the model's threshold
    fix stop all halt 20 v_ratio > 1.0 error soft

Rules (``NAME:FACTOR``; default :data:`DEFAULT_HALT_RULE`):

``envelope:F``
    F x the largest per-atom total force std the calibrated model predicts on any validation
    frame: the run stops once some atom is F times more uncertain than anything seen on data
    like the training data.
``median:F``
    F x the median over validation frames of the largest per-atom total std of a frame: like
    ``envelope`` but not set by the one most uncertain validation frame (30 frames make the
    maximum a noisy statistic).
``rmse:F``
    F x the validation force RMSE (per component): the run stops once the model itself expects
    an atom's force error of F x its typical error.

The per-atom std is the one LAMMPS computes (:func:`bnnmd.posterior.force_stats`: a
per-component std, calibrated). ``bench/halt_truth.py`` compares the rules against DFT.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np

from bnnmd._errors import BnnmdError
from bnnmd.posterior._moments import force_stats

HALT_RULES = ("envelope", "median", "rmse")
#: Measured by bench/halt_truth.py (docs/results.md): on heated rMD17 ethanol and malonaldehyde it
#: fired 0 and 40 steps after the true error first left its test-set range, with no false alarm.
DEFAULT_HALT_RULE = "median:1.5"


class HaltRuleError(BnnmdError, ValueError):
    """A halt rule that cannot be applied; the message says why and what to give instead."""


@dataclass
class HaltStatistics:
    """What the rules need, from the calibrated model on validation frames (model units)."""

    frame_max_std: List[float]  # per frame: the largest per-atom total force std
    frame_max_std_epistemic: List[float]  # per frame: the largest per-atom epistemic force std
    force_rmse: float  # per component
    force_unit: str
    data: str = ""
    # per frame of data with stresses: the std of the virial pressure tr(W)/(3V), total (energy/length^3
    # of the model, e.g. eV/A^3; as LAMMPS' c_unc[6] and BNNCalculator's pressure_std); None without
    frame_pressure_std: Optional[List[float]] = None
    pressure_unit: str = ""

    def to_dict(self) -> dict:
        d = {"frame_max_std": [float(x) for x in self.frame_max_std],
             "frame_max_std_epistemic": [float(x) for x in self.frame_max_std_epistemic],
             "force_rmse": float(self.force_rmse), "force_unit": self.force_unit, "data": self.data}
        if self.frame_pressure_std is not None:
            d.update(frame_pressure_std=[float(x) for x in self.frame_pressure_std], pressure_unit=self.pressure_unit)
        return d

    @classmethod
    def from_dict(cls, d: Optional[dict]) -> Optional["HaltStatistics"]:
        if not d:
            return None
        p = d.get("frame_pressure_std")
        return cls([float(x) for x in d["frame_max_std"]], [float(x) for x in d["frame_max_std_epistemic"]],
                   float(d["force_rmse"]), str(d["force_unit"]), str(d.get("data", "")),
                   None if p is None else [float(x) for x in p], str(d.get("pressure_unit", "")))


def per_atom_stds(mu: np.ndarray, sigma: np.ndarray, calibration) -> Dict[str, np.ndarray]:
    """Per-atom calibrated stds from per-component predictions ``mu, sigma [k, 3 n]`` (x, y, z of
    each atom in a row, uncalibrated), as the C++ evaluator computes them."""
    k = mu.shape[0]
    forces = np.asarray(mu, dtype=np.float64).reshape(k, -1, 3)
    sig = np.asarray(sigma, dtype=np.float64).reshape(k, -1, 3)[:, :, 0]  # shared by x, y, z
    return force_stats(forces, sig, calibration)


def frame_pressure_std(stress_mu, stress_sigma) -> np.ndarray:
    """Per frame, the total std of the virial pressure from per-sample stresses ``stress_mu [k, 6 M]``
    (Voigt xx yy zz yz xz xy of each of M frames, ASE's sign: -W/V) and their ``stress_sigma [k, 6 M]``
    (sigma_W / V, the same on the 6 components): epistemic^2 = the variance (ddof 0) over the k samples
    of tr(W)/(3V), aleatoric^2 = the mean of sigma_W^2 / (3 V^2); the moments of
    :func:`~bnnmd.posterior.virial_stats` divided by the volume."""
    k = np.asarray(stress_mu).shape[0]
    mu = np.asarray(stress_mu, dtype=np.float64).reshape(k, -1, 6)
    sig = np.asarray(stress_sigma, dtype=np.float64).reshape(k, -1, 6)[:, :, 0]
    pressure = -mu[:, :, :3].sum(axis=2) / 3.0
    return np.sqrt(pressure.var(axis=0) + (sig ** 2).mean(axis=0) / 3.0)


def halt_statistics(mu, sigma, y, n_atoms, calibration, force_unit: str, data: str = "",
                    stress=None, pressure_unit: str = "") -> HaltStatistics:
    """:class:`HaltStatistics` of frames with ``n_atoms`` atoms each; ``mu, sigma [k, 3 N]``
    uncalibrated, ``y [3 N]`` the reference forces, ``calibration`` the forces' std map;
    ``stress`` (the frames' per-sample ``(stress_mu, stress_sigma)``, :func:`frame_pressure_std`):
    the pressure statistics too."""
    stats = per_atom_stds(mu, sigma, calibration)
    frame = np.repeat(np.arange(len(n_atoms)), np.asarray(n_atoms))
    total, epi = stats["forces_std"], stats["forces_std_epistemic"]
    maxima = np.full(len(n_atoms), -np.inf)
    np.maximum.at(maxima, frame, total)
    maxima_epi = np.full(len(n_atoms), -np.inf)
    np.maximum.at(maxima_epi, frame, epi)
    err = np.asarray(mu).mean(axis=0) - np.asarray(y)
    pressure = None if stress is None else frame_pressure_std(*stress).tolist()
    return HaltStatistics(maxima.tolist(), maxima_epi.tolist(), float(np.sqrt(np.mean(err ** 2))), force_unit,
                          data, pressure, pressure_unit if stress is not None else "")


def parse_rule(rule: str) -> Tuple[str, float]:
    name, _, factor = str(rule).partition(":")
    try:
        f = float(factor)
    except ValueError:
        f = float("nan")
    if name not in HALT_RULES or not np.isfinite(f) or f <= 0:
        raise HaltRuleError(f"halt rule {rule!r}: use NAME:FACTOR with NAME one of {', '.join(HALT_RULES)} "
                            f"and FACTOR > 0, e.g. {DEFAULT_HALT_RULE} or rmse:3")
    return name, f


def halt_threshold(stats: HaltStatistics, rule: str = DEFAULT_HALT_RULE,
                   part: str = "total") -> Tuple[float, str]:
    """The threshold (model force unit) of ``rule`` and a one-line description of it; ``part``
    ``"epistemic"``: of the epistemic std (the rmse rule does not depend on the part); ``"pressure"``:
    of the std of the pressure (model energy/length^3; envelope and median only), the halt that
    sees a box squeezed or stretched beyond its training densities, which the per-atom force std
    does not (docs/results.md, water compressed to 0.7 of its volume)."""
    name, f = parse_rule(rule)
    if part == "pressure":
        if not stats.frame_pressure_std:
            raise HaltRuleError(f"no pressure statistics in the calibration of {stats.data or 'this model'}: "
                                "calibrate on periodic frames with stresses (bnn-eval --calibrate-on split:val of a "
                                "model trained with stresses)")
        if name == "rmse":
            raise HaltRuleError(f"halt rule {rule!r} on the pressure std: use envelope:F or median:F")
        maxima, kind, unit = stats.frame_pressure_std, "pressure std", stats.pressure_unit
        n = len(maxima)
        base = max(maxima) if name == "envelope" else float(np.median(maxima))
        what = (f"the largest {kind} on {n} validation frames" if name == "envelope"
                else f"the median {kind} over {n} validation frames")
        value = f * base
        return value, f"{rule}: {f:g} x {what} ({base:.4g} {unit}) = {value:.4g} {unit}"
    maxima = stats.frame_max_std_epistemic if part == "epistemic" else stats.frame_max_std
    kind = "epistemic force std" if part == "epistemic" else "force std"
    n = len(maxima)
    if name == "envelope":
        base = max(maxima)
        what = f"the largest per-atom {kind} on {n} validation frames"
    elif name == "median":
        base = float(np.median(maxima))
        what = f"the median over {n} validation frames of a frame's largest per-atom {kind}"
    else:
        base = stats.force_rmse
        what = f"the force RMSE on {n} validation frames"
    value = f * base
    return value, f"{rule}: {f:g} x {what} ({base:.4g} {stats.force_unit}) = {value:.4g} {stats.force_unit}"


def halt_step(stds, threshold: float, every: int = 20, window: int = 1) -> Optional[int]:
    """The step a windowed halt fires on, from per-step per-atom stds ``stds [steps + 1, atoms]``
    (row i = step i, as a dump every step gives them); None when it does not. Every ``every`` steps
    (``fix halt every``), each atom's std averaged over the ``window`` steps up to the check (``fix
    ave/atom 1 window every``; window 1: the check's step alone) and the largest average compared
    with ``threshold``. The Python twin of bnn-learn's built-in recipe with ``md.halt_window``."""
    stds = np.asarray(stds, dtype=np.float64)
    if not 1 <= window <= every:
        raise HaltRuleError(f"halt window {window}: give 1 to the check interval {every}")
    for s in range(every, stds.shape[0], every):
        if stds[s - window + 1:s + 1].mean(axis=0).max() > threshold:
            return s
    return None

