"""Uncertainty metrics of an equal-weight mixture of k Gaussians (NumPy in, floats out).

Every function takes per-sample means ``mu`` and standard deviations ``sigma`` of
shape ``[k, n]`` (k posterior samples, n scalar predictions: force components or
frame energies) and observations ``y`` of shape ``[n]``. A 1-D ``mu``/``sigma`` is
one sample (k = 1). The predictive distribution of prediction j is the mixture
``(1/k) sum_s N(mu_sj, sigma_sj^2)`` (paper section 4.2, DESIGN.md).
"""

from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from scipy.special import logsumexp, ndtr

from bnnmd import units
from bnnmd.posterior import check_predictions

_LOG_SQRT_2PI = 0.5 * np.log(2.0 * np.pi)

#: Fraction of a Gaussian within 1, 2, 3 standard deviations (reference for ``within_*sigma``).
GAUSSIAN_COVERAGE = {1: 0.6826894921370859, 2: 0.9544997361036416, 3: 0.9973002039367398}


#: The paper's outlier threshold for force components (kcal/mol/A), converted to the data's units.
AUC_THRESHOLD_KCAL_MOL_A = 1.0


def auc_threshold_in(energy_unit: str, length_unit: str, kcal_mol_a: float = AUC_THRESHOLD_KCAL_MOL_A) -> float:
    """The force threshold ``kcal_mol_a`` (kcal/mol/A) in ``energy_unit/length_unit``.

    >>> round(auc_threshold_in("eV", "A"), 6)
    0.043364
    """
    return kcal_mol_a * units.energy_factor("kcal/mol", energy_unit) / units.length_factor("A", length_unit)


def auc_threshold_kcal_mol_a(text: str) -> float:
    """``"VALUE [UNIT]"`` (a force unit; a bare number is kcal/mol/A) -> kcal/mol/A.

    >>> round(auc_threshold_kcal_mol_a("0.05 eV/A"), 5), auc_threshold_kcal_mol_a("2")
    (1.15303, 2.0)
    """
    parts = str(text).split()
    if len(parts) not in (1, 2):
        raise ValueError("give a value and a force unit, e.g. '0.05 eV/A' or '1 kcal/mol/A'")
    try:
        value = float(parts[0])
    except ValueError:
        raise ValueError(f"{parts[0]!r} is not a number; e.g. '0.05 eV/A'") from None
    if not value > 0 or not np.isfinite(value):
        raise ValueError("the threshold must be a positive number")
    return value * (units.force_factor(parts[1], "kcal/mol/A") if len(parts) == 2 else 1.0)


class Moments(NamedTuple):
    """Mean and variance of the mixture, per prediction: ``variance = epistemic + aleatoric``."""

    mean: np.ndarray
    variance: np.ndarray
    epistemic: np.ndarray
    aleatoric: np.ndarray


def moments(mu, sigma) -> Moments:
    """Mixture moments: mean of the means; aleatoric = mean sigma^2; epistemic = variance of the means.

    Examples
    --------
    >>> m = moments([[1.0], [3.0]], [[1.0], [1.0]])
    >>> float(m.mean[0]), float(m.epistemic[0]), float(m.aleatoric[0]), float(m.variance[0])
    (2.0, 1.0, 1.0, 2.0)
    """
    mu, sigma, _ = check_predictions(mu, sigma)
    mean = mu.mean(axis=0)
    epistemic = ((mu - mean) ** 2).mean(axis=0)
    aleatoric = (sigma ** 2).mean(axis=0)
    return Moments(mean, epistemic + aleatoric, epistemic, aleatoric)


def mae(mu, y) -> float:
    """Mean absolute error of the point prediction (the mean over samples of ``mu``).

    >>> mae([[0.0, 2.0], [2.0, 2.0]], [0.0, 0.0])
    1.5
    """
    mu = np.asarray(mu, dtype=np.float64)
    mean = mu.mean(axis=0) if mu.ndim == 2 else mu
    return float(np.mean(np.abs(np.asarray(y, dtype=np.float64).reshape(-1) - mean)))


def rmse(mu, y) -> float:
    """Root mean square error of the point prediction (the mean over samples of ``mu``).

    >>> rmse([[0.0, 2.0], [2.0, 2.0]], [0.0, 0.0])
    1.5811388300841898
    """
    mu = np.asarray(mu, dtype=np.float64)
    mean = mu.mean(axis=0) if mu.ndim == 2 else mu
    return float(np.sqrt(np.mean((np.asarray(y, dtype=np.float64).reshape(-1) - mean) ** 2)))


def log_likelihood(mu, sigma, y) -> np.ndarray:
    """Per-prediction log density of ``y`` under the mixture, ``[n]`` (log-sum-exp over samples)."""
    mu, sigma, y = check_predictions(mu, sigma, y)
    z = (y - mu) / sigma
    logp = -0.5 * z * z - np.log(sigma) - _LOG_SQRT_2PI
    return logsumexp(logp, axis=0) - np.log(mu.shape[0])


def mll(mu, sigma, y) -> float:
    """Mean log-likelihood: ``mean_j log((1/k) sum_s N(y_j; mu_sj, sigma_sj^2))``.

    Examples
    --------
    >>> round(mll([[0.0]], [[1.0]], [0.0]), 6)  # log N(0; 0, 1) = -log sqrt(2 pi)
    -0.918939
    """
    return float(np.mean(log_likelihood(mu, sigma, y)))


def mixture_cdf(mu, sigma, x) -> np.ndarray:
    """``F_j(x_j) = (1/k) sum_s Phi((x_j - mu_sj) / sigma_sj)``, ``x`` of shape ``[n]`` or ``[n, m]``."""
    mu, sigma, _ = check_predictions(mu, sigma)
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return ndtr((x[None] - mu) / sigma).mean(axis=0)
    return ndtr((x[None] - mu[:, :, None]) / sigma[:, :, None]).mean(axis=0)


def pit(mu, sigma, y) -> np.ndarray:
    """Probability integral transform ``F_j(y_j)`` of each observation under its mixture, ``[n]``."""
    mu, sigma, y = check_predictions(mu, sigma, y)
    return mixture_cdf(mu, sigma, y)


class NeceBins(NamedTuple):
    """What :func:`nece_bins` binned: bin edges, observed fractions f_i and predicted probabilities e_i."""

    edges: np.ndarray
    observed: np.ndarray
    predicted: np.ndarray
    width: float

    @property
    def value(self) -> float:
        """``sum_i f_i / d * |f_i - e_i|``."""
        return float(np.sum(self.observed / self.width * np.abs(self.observed - self.predicted)))


def nece_bins(mu, sigma, y, width: Optional[float] = None, limit: Optional[float] = None,
              normalise: bool = False, max_bins: int = 2000) -> NeceBins:
    """The bins behind :func:`nece`; see there for the definition and the defaults."""
    mu, sigma, y = check_predictions(mu, sigma, y)
    n = y.shape[0]
    m = moments(mu, sigma)
    err = y - m.mean
    scale = np.sqrt(m.variance) if normalise else np.ones(n)
    q = err / scale
    if width is None:
        width = 0.1 if normalise else 0.1 * float(np.mean(np.abs(q)))
    if limit is None:
        limit = 10.0 if normalise else 10.0 * float(np.sqrt(np.mean(q * q)))
    if not (np.isfinite(width) and width > 0 and np.isfinite(limit) and limit > 0):
        # all errors exactly zero: one bin around 0
        width = limit = 1.0
    nbins = int(min(max(np.ceil(2.0 * limit / width - 1e-9), 1), max_bins))
    edges = np.linspace(-limit, limit, nbins + 1)
    d = 2.0 * limit / nbins
    observed = np.histogram(q, bins=edges)[0] / n
    # G(b) = (1/n) sum_j F_j(mean_j + b * scale_j): predicted probability of q <= b
    g = np.zeros(nbins + 1)
    chunk = max(1, int(2_000_000 // (mu.shape[0] * (nbins + 1))))  # ~16 MB of CDF values at a time
    for s in range(0, n, chunk):
        sl = slice(s, s + chunk)
        x = m.mean[sl, None] + edges[None, :] * scale[sl, None]
        g += mixture_cdf(mu[:, sl], sigma[:, sl], x).sum(axis=0)
    predicted = np.diff(g / n)
    return NeceBins(edges, observed, predicted, d)


def nece(mu, sigma, y, width: Optional[float] = None, limit: Optional[float] = None,
         normalise: bool = False, max_bins: int = 2000) -> float:
    """Normalised expected calibration error of the paper (section 4.2): ``sum_i f_i/d |f_i - e_i|``.

    What is binned: the error ``q_j = y_j - mean_j`` of each prediction (observation
    minus point prediction, in data units), as in the paper's Fig. 4, which compares
    the observed density of these errors with the density the model predicts for
    them. ``m`` bins of equal width ``d`` cover ``[-limit, limit]``:

    * ``f_i`` = fraction of the n errors in bin i (errors outside the range count in n
      but in no bin; their bins would be infinitely wide, so ``f_i/d = 0``);
    * ``e_i = (1/n) sum_j P_j(q in bin i)`` = the predicted probability of bin i, where
      ``P_j`` is the distribution of ``y_j - mean_j`` under prediction j's mixture,
      i.e. ``F_j(mean_j + b_{i+1}) - F_j(mean_j + b_i)`` with the mixture CDF ``F_j``.

    For small d, ``f_i/d`` is the observed density r and the sum estimates
    ``E_r |r(q) - r_predicted(q)|``, the paper's continuous form. The value has the
    units of 1/q (e.g. (kcal/mol/A)^-1): like the paper's NECE it is comparable
    between models on the same data, not between quantities.

    ``normalise=True`` bins ``z_j = q_j / std_j`` instead (std_j the total predictive
    std) with ``P_j(z in [a, b]) = F_j(mean_j + b std_j) - F_j(mean_j + a std_j)``:
    unit-free, and it also checks that the model puts its large stds on its large
    errors, which the paper's pooled-error form does not.

    Defaults: ``width = MAE/10`` and ``limit = 10 * RMSE`` of the errors (``0.1`` and
    ``10`` when normalised); the number of bins is capped at ``max_bins``. Pass both
    to compare runs on identical bins.

    Examples
    --------
    One sample N(0, 1), four observations, two bins [-1, 0) and [0, 1]: f = (1/4, 2/4)
    (1.5 is outside), e = (0.3413, 0.3413), NECE = 1/4 |1/4 - 0.3413| + 2/4 |2/4 - 0.3413|:

    >>> round(nece([[0.0] * 4], [[1.0] * 4], [-0.5, 0.5, 0.25, 1.5], width=1.0, limit=1.0), 5)
    0.10216
    """
    return nece_bins(mu, sigma, y, width, limit, normalise, max_bins).value


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties get the average of the ranks they span."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    return (last - (counts - 1) / 2.0)[inverse.reshape(-1)]


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (Mann-Whitney U with tied ranks).

    ``nan`` when one class is empty (the paper: "NA" for benzene, no large errors).

    Examples
    --------
    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])
    0.75
    >>> roc_auc([1.0, 1.0, 1.0], [0, 1, 1])  # all tied: chance
    0.5
    """
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(scores)
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def roc_curve(scores, labels) -> Tuple[np.ndarray, np.ndarray]:
    """False and true positive rates for every threshold on ``scores`` (from (0, 0) to (1, 1))."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(bool)
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], labels[order]
    cut = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]  # last index of each distinct score
    tp = np.cumsum(lab)[cut]
    fp = (cut + 1) - tp
    n_pos, n_neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def error_detection_auc(mu, sigma, y, threshold: float = 1.0) -> float:
    """ROC-AUC of detecting ``|y - mean| > threshold`` from the total predictive variance."""
    mu, sigma, y = check_predictions(mu, sigma, y)
    m = moments(mu, sigma)
    return roc_auc(m.variance, np.abs(y - m.mean) > threshold)


def within_sigma(mu, sigma, y, c: float) -> float:
    """Fraction of predictions with ``|y - mean| <= c * std`` (std: total predictive std)."""
    mu, sigma, y = check_predictions(mu, sigma, y)
    m = moments(mu, sigma)
    return float(np.mean(np.abs(y - m.mean) <= c * np.sqrt(m.variance)))


def central_interval_coverage(mu, sigma, y, levels: Sequence[float]) -> np.ndarray:
    """Observed fraction of ``y`` inside each central predictive interval of probability ``levels``.

    Uses the mixture's own CDF: y_j is inside the central p-interval iff
    ``|F_j(y_j) - 1/2| <= p/2``. A calibrated model gives ``coverage == levels``.
    """
    u = pit(mu, sigma, y)
    levels = np.asarray(levels, dtype=np.float64)
    return np.array([np.mean(np.abs(u - 0.5) <= p / 2.0) for p in levels])


def compute_metrics(mu, sigma, y, auc_threshold: Optional[float] = None,
                    nece_width: Optional[float] = None, nece_limit: Optional[float] = None) -> Dict[str, float]:
    """All metrics of one quantity as a flat dict (keys without the ``forces.``/``energy.`` prefix).

    ``auc_threshold`` (in the units of ``y``) adds ``auc`` and ``n_outliers``.

    Examples
    --------
    >>> r = compute_metrics([[0.0, 1.0]], [[1.0, 1.0]], [0.5, 1.0], auc_threshold=0.25)
    >>> r["mae"], r["rmse"], r["within_1sigma"], r["n_outliers"]
    (0.25, 0.3535533905932738, 1.0, 1)
    """
    mu, sigma, y = check_predictions(mu, sigma, y)
    m = moments(mu, sigma)
    bins = nece_bins(mu, sigma, y, nece_width, nece_limit)
    out = {
        "mae": mae(mu, y),
        "rmse": rmse(mu, y),
        "mll": mll(mu, sigma, y),
        "nece": bins.value,
        "nece_bin_width": bins.width,
        "nece_normalised": nece(mu, sigma, y, normalise=True),
    }
    if auc_threshold is not None:
        out["auc"] = error_detection_auc(mu, sigma, y, auc_threshold)
        out["auc_threshold"] = float(auc_threshold)
        out["n_outliers"] = int(np.sum(np.abs(y - m.mean) > auc_threshold))
    out.update({
        "mean_std": float(np.mean(np.sqrt(m.variance))),
        "mean_epistemic_std": float(np.mean(np.sqrt(m.epistemic))),
        "mean_aleatoric_std": float(np.mean(np.sqrt(m.aleatoric))),
        "rms_std": float(np.sqrt(np.mean(m.variance))),
        "epistemic_variance_fraction": float(np.sum(m.epistemic) / np.sum(m.variance)),
    })
    for c in (1, 2, 3):
        out[f"within_{c}sigma"] = within_sigma(mu, sigma, y, c)
    out["n"] = int(y.shape[0])
    return out
