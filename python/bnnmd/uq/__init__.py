"""Uncertainty metrics, recalibration and plots of the predictive mixture; ``bnn-eval``.

The predictive distribution of k posterior samples is the equal-weight mixture
``(1/k) sum_s N(mu_s, sigma_s^2)`` (paper section 4.2). :func:`evaluate` runs a
model over a dataset and reports MAE, RMSE, MLL, NECE and ROC-AUC of forces and
energies; :func:`calibrate` fits a std map per quantity on validation data
(:func:`fit_map`) and stores it as ``samples/calibration.json`` (the file and its maps:
:class:`bnnmd.posterior.Calibration`, :class:`bnnmd.posterior.StdMap`); :func:`write_plots` draws the
paper's figures. The metric functions take NumPy arrays ``mu, sigma [k, n]`` and
``y [n]`` and return floats. Definitions and choices: ``docs/evaluation.md``.

Examples
--------
>>> import numpy as np
>>> mu, sigma, y = np.array([[0.0, 1.0], [0.2, 1.2]]), np.full((2, 2), 0.5), np.array([0.1, 1.0])
>>> round(mae(mu, y), 3), round(rmse(mu, y), 3), round(mll(mu, sigma, y), 3)
(0.05, 0.071, -0.255)
"""

from bnnmd.uq._evaluate import (EvaluationError, EvaluationResult, LoadedModel, Predictions, QuantityPredictions,
                                calibrate, evaluate, format_table, load_model, metrics_of, predict, resolve_data)
from bnnmd.uq._fitting import MIN_PER_BIN, fit_isotonic, fit_map, fit_scale
from bnnmd.uq._metrics import (AUC_THRESHOLD_KCAL_MOL_A, GAUSSIAN_COVERAGE, Moments, NeceBins, auc_threshold_in,
                               auc_threshold_kcal_mol_a,
                               central_interval_coverage, compute_metrics, error_detection_auc, log_likelihood, mae,
                               mixture_cdf, mll, moments, nece, nece_bins, pit, rmse, roc_auc, roc_curve, within_sigma)
from bnnmd.uq._plots import PLOT_FILES, write_plots

__all__ = [
    "AUC_THRESHOLD_KCAL_MOL_A", "EvaluationError", "EvaluationResult", "GAUSSIAN_COVERAGE", "LoadedModel",
    "MIN_PER_BIN", "Moments", "NeceBins", "PLOT_FILES", "Predictions", "QuantityPredictions", "auc_threshold_in", "auc_threshold_kcal_mol_a",
    "calibrate", "central_interval_coverage", "compute_metrics", "error_detection_auc", "evaluate", "fit_isotonic",
    "fit_map", "fit_scale", "format_table", "load_model", "log_likelihood", "mae", "metrics_of", "mixture_cdf", "mll",
    "moments", "nece", "nece_bins", "pit", "predict", "resolve_data", "rmse", "roc_auc", "roc_curve", "within_sigma",
    "write_plots",
]
