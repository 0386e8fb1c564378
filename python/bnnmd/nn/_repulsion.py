"""A fixed short-range repulsion added to the learned energy, so that atoms cannot fuse.

The pair energy is the Ziegler-Biersack-Littmark (ZBL) universal screened nuclear
repulsion, switched off smoothly between ``inner`` and ``outer`` times the sum of the
two atoms' covalent radii:

    E_ij(r) = Z_i Z_j e^2 / (4 pi eps0 r) * phi(r / a_ij) * S(t),   t = (r - r_in) / (r_out - r_in)
    phi(x)  = 0.18175 e^(-3.19980 x) + 0.50986 e^(-0.94229 x) + 0.28022 e^(-0.40290 x)
              + 0.02817 e^(-0.20162 x)
    a_ij    = 0.8854 a_0 / (Z_i^0.23 + Z_j^0.23)
    S(t)    = 1 - 10 t^3 + 15 t^4 - 6 t^5 for t in [0, 1]; 1 below, 0 above

S has zero first and second derivatives at both ends, so energy, forces and their
derivatives are continuous; beyond ``r_out`` the term is exactly zero. With the defaults
(0.5, 0.8) it is zero for every pair in the bundled rMD17 ethanol data (the closest pair
there is 0.91 x the covalent sum), so it does not change what the network learns
there, and a C-H pair at 0.4 A costs about 1000 kcal/mol.

The term is the same for every posterior sample: it adds to the mean energy and forces
and leaves the predicted stds unchanged. e^2 / (4 pi eps0) is one Hartree x Bohr, taken
from :mod:`bnnmd.units`; Z and the covalent radii (Cordero et al. 2008) come from ASE.
"""

from __future__ import annotations

from typing import Sequence

import torch
from ase.data import atomic_numbers, covalent_radii
from e3nn.util.jit import compile_mode
from torch import nn

from bnnmd import units

#: ZBL universal screening function: (coefficient, exponent) pairs.
ZBL_PHI = ((0.18175, 3.19980), (0.50986, 0.94229), (0.28022, 0.40290), (0.02817, 0.20162))
#: The screening length's prefactor, in Bohr.
ZBL_LENGTH = 0.8854
ZBL_EXPONENT = 0.23
REPULSIONS = ("zbl", "none")


def pair_tables(type_names: Sequence[str], inner: float, outer: float, energy_unit: str, length_unit: str):
    """Per type pair ``[T * T]``: Z_i Z_j e^2/(4 pi eps0), a_ij, r_in, r_out in the model's units."""
    to_a = units.length_factor("A", length_unit)
    coulomb = units.energy_factor("Hartree", energy_unit) * units.length_factor("Bohr", length_unit)
    bohr = units.length_factor("Bohr", length_unit)
    z = [float(atomic_numbers[t]) for t in type_names]
    rc = [float(covalent_radii[atomic_numbers[t]]) * to_a for t in type_names]
    zz, a, r_in, r_out = [], [], [], []
    for i in range(len(z)):
        for j in range(len(z)):
            zz.append(z[i] * z[j] * coulomb)
            a.append(ZBL_LENGTH * bohr / (z[i] ** ZBL_EXPONENT + z[j] ** ZBL_EXPONENT))
            r_in.append(inner * (rc[i] + rc[j]))
            r_out.append(outer * (rc[i] + rc[j]))
    return tuple(torch.tensor(v, dtype=torch.float64) for v in (zz, a, r_in, r_out))


@compile_mode("script")
class ZBLRepulsion(nn.Module):
    """``forward(r [k, E], type_i [E], type_j [E]) -> [k, E]``: the pair energy E_ij(r) of each edge."""

    def __init__(self, type_names: Sequence[str], inner: float, outer: float, energy_unit: str, length_unit: str):
        super().__init__()
        self.num_types = len(type_names)
        zz, a, r_in, r_out = pair_tables(type_names, inner, outer, energy_unit, length_unit)
        # derived from the config, so not stored in sample files (persistent=False)
        self.register_buffer("zz", zz, persistent=False)
        self.register_buffer("screening", a, persistent=False)
        self.register_buffer("r_in", r_in, persistent=False)
        self.register_buffer("r_out", r_out, persistent=False)
        self.coefficients = [c for c, _ in ZBL_PHI]
        self.exponents = [e for _, e in ZBL_PHI]

    def forward(self, r: torch.Tensor, type_i: torch.Tensor, type_j: torch.Tensor) -> torch.Tensor:
        pair = type_i * self.num_types + type_j
        zz = self.zz.index_select(0, pair)
        x = r / self.screening.index_select(0, pair)
        phi = torch.zeros_like(x)
        for c, e in zip(self.coefficients, self.exponents):
            phi = phi + c * torch.exp(-e * x)
        r_in = self.r_in.index_select(0, pair)
        t = torch.clamp((r - r_in) / (self.r_out.index_select(0, pair) - r_in), 0.0, 1.0)
        switch = 1.0 - t * t * t * (10.0 - 15.0 * t + 6.0 * t * t)
        return zz * phi / r * switch
