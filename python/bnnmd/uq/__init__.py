"""Uncertainty metrics, recalibration and plots of the predictive mixture; ``bnn-eval``.

The predictive distribution of k posterior samples is the equal-weight mixture
``(1/k) sum_s N(mu_s, sigma_s^2)`` (paper section 4.2). :func:`evaluate` runs a
model over a dataset and reports MAE, RMSE, MLL, NECE and ROC-AUC of forces and
energies; :func:`calibrate` fits a std scale factor per quantity on validation
data and stores it as ``samples/calibration.json``; :func:`write_plots` draws the
paper's figures. The metric functions take NumPy arrays ``mu, sigma [k, n]`` and
``y [n]`` and return floats. Definitions and choices: ``docs/evaluation.md``.

Examples
--------
>>> import numpy as np
>>> mu, sigma, y = np.array([[0.0, 1.0], [0.2, 1.2]]), np.full((2, 2), 0.5), np.array([0.1, 1.0])
>>> round(mae(mu, y), 3), round(rmse(mu, y), 3), round(mll(mu, sigma, y), 3)
(0.05, 0.071, -0.255)
"""

from bnnmd.uq._calibration import (CALIBRATION_FILE, CALIBRATION_FORMAT, Calibration, CalibrationError, StdMap,
                                   find_calibration, fit_isotonic, fit_map, fit_scale, scale_predictions, unit_std)
from bnnmd.uq._evaluate import (AUC_THRESHOLD_KCAL_MOL_A, EvaluationError, EvaluationResult, LoadedModel,
                                Predictions, QuantityPredictions, auc_threshold_in, calibrate, evaluate,
                                evenly_spaced, format_table, load_model, metrics_of, predict, resolve_data)
from bnnmd.uq._metrics import (GAUSSIAN_COVERAGE, Moments, NeceBins, central_interval_coverage, compute_metrics,
                               error_detection_auc, log_likelihood, mae, mixture_cdf, mll, moments, nece,
                               nece_bins, pit, rmse, roc_auc, roc_curve, within_sigma)
from bnnmd.uq._plots import PLOT_FILES, write_plots

__all__ = [
    "AUC_THRESHOLD_KCAL_MOL_A", "CALIBRATION_FILE", "CALIBRATION_FORMAT", "Calibration", "CalibrationError",
    "EvaluationError", "EvaluationResult", "GAUSSIAN_COVERAGE", "LoadedModel", "Moments", "NeceBins",
    "PLOT_FILES", "Predictions", "QuantityPredictions", "StdMap", "auc_threshold_in", "calibrate",
    "central_interval_coverage", "compute_metrics", "error_detection_auc", "evaluate", "evenly_spaced",
    "find_calibration", "fit_isotonic", "fit_map", "fit_scale", "format_table", "load_model", "log_likelihood",
    "mae", "metrics_of",
    "mixture_cdf", "mll", "moments", "nece", "nece_bins", "pit", "predict", "resolve_data", "rmse", "roc_auc",
    "roc_curve", "scale_predictions", "unit_std", "within_sigma", "write_plots",
]
