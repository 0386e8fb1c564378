"""Radial basis of the edge lengths: trainable Bessel functions times a polynomial cutoff."""

from __future__ import annotations

import math

import torch
from e3nn.util.jit import compile_mode
from torch import nn


@compile_mode("script")
class BesselBasis(nn.Module):
    """``b_n(r) = (2 / c) sin(w_n r / c) / r`` with trainable ``w_n``, initialised to ``n pi``.

    The frequencies carry the sample dimension: ``weight`` is ``[k, num_basis]``
    and ``r`` is ``[k, E]``; the result is ``[k, E, num_basis]``.
    """

    def __init__(self, cutoff: float, num_basis: int, num_samples: int):
        super().__init__()
        self.cutoff = float(cutoff)
        self.prefactor = 2.0 / self.cutoff
        w = torch.arange(1, num_basis + 1, dtype=torch.get_default_dtype()) * math.pi
        self.weight = nn.Parameter(w.unsqueeze(0).repeat(num_samples, 1))

    def forward(self, r: torch.Tensor, s0: int = 0, s1: int = -1) -> torch.Tensor:
        w = self.weight if s1 < 0 else self.weight[s0:s1]
        arg = w.unsqueeze(1) * (r.unsqueeze(-1) / self.cutoff)
        return self.prefactor * torch.sin(arg) / r.unsqueeze(-1)


@compile_mode("script")
class PolynomialCutoff(nn.Module):
    """Smooth envelope, 1 at r = 0 and zero with p derivatives at r = cutoff (NequIP, DimeNet)."""

    def __init__(self, cutoff: float, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        p = self.p
        x = r / self.cutoff
        out = (1.0 - (p + 1.0) * (p + 2.0) / 2.0 * torch.pow(x, p) + p * (p + 2.0) * torch.pow(x, p + 1.0)
               - p * (p + 1.0) / 2.0 * torch.pow(x, p + 2.0))
        return out * (x < 1.0).to(out.dtype)
