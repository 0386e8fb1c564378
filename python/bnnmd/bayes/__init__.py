"""Bayesian inference: the likelihood of the stochastic model, priors, and the adaptive-mass
SGHMC sampler of the paper (section 3.3).

Examples
--------
>>> import torch
>>> w = torch.nn.Parameter(torch.ones(3, 5))  # 3 chains of 5 weights
>>> opt = AdaptiveSGHMC([w], lr=1e-3, dataset_size=100, mass_freeze_step=1000, seed=0)
>>> opt.zero_grad(); gaussian_prior_potential([w]).backward(); opt.step()
>>> opt.step_count
1
"""

from bnnmd.bayes.likelihood import VOIGT_COLS, VOIGT_ROWS, gaussian_nll, negative_log_likelihood, virial_labels
from bnnmd.bayes.sghmc import AdaptiveSGHMC, gaussian_prior_potential

__all__ = ["AdaptiveSGHMC", "VOIGT_COLS", "VOIGT_ROWS", "gaussian_nll", "gaussian_prior_potential", "negative_log_likelihood", "virial_labels"]
