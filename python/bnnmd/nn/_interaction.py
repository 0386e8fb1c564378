"""NequIP's interaction block with a sample dimension."""

from __future__ import annotations

import math
from typing import List, Tuple

import torch
from e3nn import o3
from e3nn.nn import Gate
from e3nn.util.jit import compile_mode
from torch import nn

from bnnmd.nn._stacked import ACTIVATIONS, StackedLinear, StackedMLP


def hidden_irreps(num_features: int, l_max: int, parity: bool) -> o3.Irreps:
    """``F x 0e + F x 0o + F x 1o + F x 1e + ...`` (parity) or only ``p = (-1)^l``."""
    irreps = []
    for l in range(l_max + 1):
        for p in ((1, -1) if parity else ((-1) ** l,)):
            irreps.append((num_features, (l, p)))
    return o3.Irreps(irreps).sort().irreps.simplify()


def _tp_paths(irreps_in: o3.Irreps, irreps_sh: o3.Irreps, target: o3.Irreps):
    """'uvu' tensor-product paths from irreps_in x sh that land in ``target`` irreps."""
    out, instructions = [], []
    wanted = {ir for _, ir in target}
    for i, (mul, ir_in) in enumerate(irreps_in):
        for j, (_, ir_sh) in enumerate(irreps_sh):
            for ir_out in ir_in * ir_sh:
                if ir_out in wanted:
                    instructions.append((i, j, len(out), "uvu", True))
                    out.append((mul, ir_out))
    irreps_mid = o3.Irreps(out)
    irreps_mid_sorted, perm, _ = irreps_mid.sort()
    instructions = [(i, j, perm[k], mode, train) for i, j, k, mode, train in instructions]
    return irreps_mid_sorted, instructions


@compile_mode("script")
class SpeciesLinear(nn.Module):
    """Self-connection: one :class:`StackedLinear` per species, each atom uses its own.

    Equivalent to NequIP's tensor product of the features with the one-hot
    species, evaluated atom-by-species-group so each atom is transformed once.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, num_types: int, num_samples: int):
        super().__init__()
        self.dim_out = o3.Irreps(irreps_out).dim
        self.linears = nn.ModuleList(
            [StackedLinear(irreps_in, irreps_out, num_samples) for _ in range(num_types)])
        self.traceable = False  # torch.export: every linear on every atom, no data-dependent sizes

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor, s0: int = 0, s1: int = -1) -> torch.Tensor:
        if self.traceable:  # every species' weights on every atom, one matrix product per path
            weight = torch.stack([lin.weight if s1 < 0 else lin.weight[s0:s1] for lin in self.linears], 1)
            y = self.linears[0].transform(x, weight)  # [k, N, T, dim_out]
            onehot = atom_type.unsqueeze(-1) == torch.arange(len(self.linears), device=x.device)
            return (y * onehot.to(x.dtype).unsqueeze(-1)).sum(2)
        out = x.new_zeros(x.shape[0], x.shape[1], self.dim_out)
        for t, lin in enumerate(self.linears):
            idx = torch.nonzero(atom_type == t).squeeze(-1)
            if idx.numel() > 0:
                out = out.index_copy(1, idx, lin(x.index_select(1, idx), s0, s1))
        return out


@compile_mode("script")
class InteractionBlock(nn.Module):
    """One NequIP interaction: convolution, self-connection, gate, residual.

    ``x_new = x + Gate(Linear2(sum_j TP(Linear1(x_j), Y(r_ij); R(|r_ij|)) / sqrt(avg_nn)) + SC(x, z))``

    Inputs: node features ``[k, N, irreps_in]``, spherical harmonics
    ``[k, E, irreps_sh]``, radial basis (times cutoff envelope) ``[k, E, num_basis]``.
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_sh: o3.Irreps, target: o3.Irreps, num_types: int,
                 num_basis: int, radial_hidden: int, radial_layers: int, avg_num_neighbours: float,
                 nonlinearity: str, resnet: bool, dropout: float, num_samples: int):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        k = num_samples
        irreps_mid, instructions = _tp_paths(self.irreps_in, irreps_sh, target)
        reachable = {ir for _, ir in irreps_mid}
        scalars = o3.Irreps([(m, ir) for m, ir in target if ir.l == 0 and ir in reachable])
        gated = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0 and ir in reachable])
        gates = o3.Irreps([(m, "0e") for m, _ in gated])
        act = ACTIVATIONS[nonlinearity]
        self.gate = Gate(scalars, [act if ir.p == 1 else torch.tanh for _, ir in scalars],
                         gates, [torch.sigmoid] * len(gates), gated)
        self.irreps_out = self.gate.irreps_out
        self.message_dim = irreps_mid.dim  # per edge and sample: the largest tensor of the block
        self.linear_1 = StackedLinear(self.irreps_in, self.irreps_in, k)
        self.tp = o3.TensorProduct(self.irreps_in, irreps_sh, irreps_mid, instructions,
                                   shared_weights=False, internal_weights=False)
        self.radial = StackedMLP([num_basis] + [radial_hidden] * radial_layers + [self.tp.weight_numel], k,
                                 act=nonlinearity)
        self.linear_2 = StackedLinear(irreps_mid, self.gate.irreps_in, k)
        self.self_connection = SpeciesLinear(self.irreps_in, self.gate.irreps_in, num_types, k)
        self.inv_sqrt_avg = 1.0 / math.sqrt(avg_num_neighbours)
        self.resnet = bool(resnet) and self.irreps_in == self.irreps_out
        self.num_scalars = scalars.dim
        self.dropout = float(dropout)
        self.dropout_active = False  # MC dropout: keep masks on at inference

    def forward(self, x: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor,
                sh: torch.Tensor, basis: torch.Tensor, s0: int = 0, s1: int = -1) -> torch.Tensor:
        """Samples ``s0 .. s1 - 1`` (``s1 < 0``: all); ``x``, ``sh``, ``basis`` carry only those."""
        centre, neighbour = edge_index[0], edge_index[1]
        sc = self.self_connection(x, atom_type, s0, s1)
        h = self.linear_1(x, s0, s1)
        w = self.radial(basis, s0, s1)
        msg = self.tp(h.index_select(1, neighbour), sh, w)
        agg = msg.new_zeros(msg.shape[0], x.shape[1], msg.shape[2]).index_add(1, centre, msg)
        out = self.linear_2(agg * self.inv_sqrt_avg, s0, s1) + sc
        out = self.gate(out)
        if self.dropout > 0.0 and (self.training or self.dropout_active):
            # independent masks per sample and atom, on the scalar channels only
            keep = torch.rand(out.shape[0], out.shape[1], self.num_scalars, dtype=out.dtype,
                              device=out.device) >= self.dropout
            mask = keep.to(out.dtype) / (1.0 - self.dropout)
            out = torch.cat([out[:, :, :self.num_scalars] * mask, out[:, :, self.num_scalars:]], dim=-1)
        if self.resnet:
            out = out + x
        return out
