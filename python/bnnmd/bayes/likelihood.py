"""The likelihood of the stochastic model (paper section 3.2), with stresses.

``E ~ N(mu_E, sigma_E^2)`` and, for every atom, ``F_i ~ N(mu_Fi, sigma_Fi^2 I)``
(one sigma for the three components), all independent given the parameters. For frames with a
stress (periodic data), the six independent components of the virial ``W = -V sigma`` (xx, yy,
zz, yz, xz, xy) are ``N(mu_W, sigma_W^2)`` each, one sigma per frame (the model's stress head),
and that term is multiplied by ``stress_weight``.
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


#: The six independent components of a symmetric 3 x 3 tensor, in Voigt order (xx, yy, zz, yz, xz, xy).
VOIGT_ROWS = (0, 1, 2, 1, 0, 0)
VOIGT_COLS = (0, 1, 2, 2, 2, 1)


def virial_labels(batch: Dict[str, torch.Tensor]) -> torch.Tensor:
    """The reference virials ``W = -V stress`` of a batch with stresses, ``[num_frames, 3, 3]``."""
    volume = torch.linalg.det(batch[K.CELL]).abs()
    return -batch[K.STRESS] * volume[:, None, None]


def negative_log_likelihood(outputs: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor],
                            stress_weight: float = 1.0) -> Dict[str, torch.Tensor]:
    """``-ln p(y | x, theta)`` of a batch, summed over its frames, for each sample.

    Returns ``{"energy": [k], "forces": [k], "stress": [k], "total": [k]}``: the energy term is
    one Gaussian per frame, the force term one Gaussian per force component, the stress term
    (zero unless the batch has stresses and ``stress_weight > 0``) one Gaussian per independent
    virial component, times ``stress_weight``; ``total`` is their sum.
    """
    nll_e = gaussian_nll(batch[K.TOTAL_ENERGY], outputs[K.TOTAL_ENERGY], outputs[K.TOTAL_ENERGY_STD]).sum(dim=1)
    nll_f = gaussian_nll(batch[K.FORCES], outputs[K.FORCES], outputs[K.FORCES_STD].unsqueeze(-1)).sum(dim=(1, 2))
    nll_s = torch.zeros_like(nll_e)
    if K.STRESS in batch and stress_weight > 0:
        rows, cols = list(VOIGT_ROWS), list(VOIGT_COLS)
        target = virial_labels(batch)[:, rows, cols]  # [frames, 6]
        mean = outputs[K.VIRIAL][:, :, rows, cols]  # [k, frames, 6]
        nll_s = stress_weight * gaussian_nll(target, mean, outputs[K.VIRIAL_STD].unsqueeze(-1)).sum(dim=(1, 2))
    return {"energy": nll_e, "forces": nll_f, "stress": nll_s, "total": nll_e + nll_f + nll_s}
