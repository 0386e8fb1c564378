"""From k per-sample Gaussians to the predictive mixture: mean and variance."""

from __future__ import annotations

from typing import Dict, NamedTuple

import torch

from bnnmd.data import keys as K


class Predictive(NamedTuple):
    """Moments of the equal-weight mixture of k Gaussians N(mu_s, sigma_s^2).

    ``variance = aleatoric + epistemic`` with ``aleatoric = mean_s sigma_s^2`` and
    ``epistemic = mean_s mu_s^2 - mean^2`` (the variance of the means, ddof 0),
    which is exactly the mixture's variance.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    epistemic: torch.Tensor
    aleatoric: torch.Tensor


def predictive(mean: torch.Tensor, std: torch.Tensor) -> Predictive:
    """Mixture moments over the leading sample dimension.

    ``mean`` and ``std`` broadcast: per-atom force std ``[k, N]`` may be given
    with ``[k, N, 3]`` means as ``std.unsqueeze(-1)``.

    Examples
    --------
    >>> p = predictive(torch.tensor([[1.0], [3.0]]), torch.tensor([[1.0], [1.0]]))
    >>> p.mean.item(), p.epistemic.item(), p.aleatoric.item(), p.variance.item()
    (2.0, 1.0, 1.0, 2.0)
    """
    m = mean.mean(dim=0)
    epistemic = mean.var(dim=0, unbiased=False) if mean.shape[0] > 1 else torch.zeros_like(m)
    aleatoric = (std ** 2).expand_as(mean).mean(dim=0) if std.dim() == mean.dim() else (std ** 2).mean(dim=0)
    return Predictive(m, epistemic + aleatoric, epistemic, aleatoric)


def predict(outputs: Dict[str, torch.Tensor]) -> Dict[str, Predictive]:
    """Mixture moments of energies (per frame) and force components (per atom and axis)."""
    return {
        K.TOTAL_ENERGY: predictive(outputs[K.TOTAL_ENERGY], outputs[K.TOTAL_ENERGY_STD]),
        K.FORCES: predictive(outputs[K.FORCES], outputs[K.FORCES_STD].unsqueeze(-1)),
    }
