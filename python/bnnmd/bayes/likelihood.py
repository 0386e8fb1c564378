"""The likelihood of the stochastic model (paper section 3.2).

``E ~ N(mu_E, sigma_E^2)`` and, for every atom, ``F_i ~ N(mu_Fi, sigma_Fi^2 I)``
(one sigma for the three components), all independent given the parameters.
"""

from __future__ import annotations

import math
from typing import Dict

import torch

from bnnmd.data import keys as K

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_nll(y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Element-wise ``-ln N(y; mean, std^2)``.

    Examples
    --------
    >>> round(gaussian_nll(torch.tensor(1.0), torch.tensor(0.0), torch.tensor(1.0)).item(), 6)
    1.418939
    """
    z = (y - mean) / std
    return 0.5 * z * z + torch.log(std) + _HALF_LOG_2PI


def negative_log_likelihood(outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
                            ) -> Dict[str, torch.Tensor]:
    """``-ln p(y | x, theta)`` of a batch, summed over its frames, for each sample.

    Returns ``{"energy": [k], "forces": [k], "total": [k]}``: the energy term is
    one Gaussian per frame, the force term one Gaussian per force component.
    """
    nll_e = gaussian_nll(batch[K.TOTAL_ENERGY], outputs[K.TOTAL_ENERGY], outputs[K.TOTAL_ENERGY_STD]).sum(dim=1)
    nll_f = gaussian_nll(batch[K.FORCES], outputs[K.FORCES], outputs[K.FORCES_STD].unsqueeze(-1)).sum(dim=(1, 2))
    return {"energy": nll_e, "forces": nll_f, "total": nll_e + nll_f}
