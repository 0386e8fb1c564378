"""Layers whose every parameter carries the leading sample dimension ``k``.

Inputs are ``[k, M, d]``: sample ``s`` of the output only sees parameters
``[s]``, so k posterior samples, chains, ensemble members or dropout masks run
in one pass. Weights are drawn from N(0, 1) and the fan-in normalisation lives
in ``forward`` (as in e3nn), so the N(0, I) prior of the paper is on the scale
of the initialisation.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch
from e3nn import o3
from e3nn.math import normalize2mom
from e3nn.util.jit import compile_mode
from torch import nn


@compile_mode("script")
class StackedLinear(nn.Module):
    """Equivariant linear map ``irreps_in -> irreps_out`` with ``k`` weight sets.

    Only equal irreps are connected (like :class:`e3nn.o3.Linear`, no biases):
    output block ``o`` is ``sum_i x_i W_io / sqrt(sum_i mul_i)`` over the input
    blocks ``i`` with the same irrep.

    Examples
    --------
    >>> lin = StackedLinear(o3.Irreps("4x0e+2x1o"), o3.Irreps("3x0e+1x1o"), num_samples=5)
    >>> lin
    StackedLinear(4x0e+2x1o -> 3x0e+1x1o | 5 x 14 weights)
    >>> lin(torch.randn(5, 7, 10)).shape
    torch.Size([5, 7, 6])
    """

    def __init__(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps, num_samples: int):
        super().__init__()
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_out = o3.Irreps(irreps_out)
        self.num_samples = num_samples
        in_slices = self.irreps_in.slices()
        # per path: (in_start, in_stop, mul_in, mul_out, ir_dim, w_start, w_stop, out_index)
        paths: List[Tuple[int, int, int, int, int, int, int, int]] = []
        # per output block: (width, first path, stop path); its paths are paths[first:stop]
        out_blocks: List[Tuple[int, int, int]] = []
        numel = 0
        fan_in = [0] * len(self.irreps_out)
        for io, (mul_o, ir_o) in enumerate(self.irreps_out):
            first = len(paths)
            for ii, (mul_i, ir_i) in enumerate(self.irreps_in):
                if ir_i == ir_o and mul_i > 0 and mul_o > 0:
                    paths.append((in_slices[ii].start, in_slices[ii].stop, mul_i, mul_o, ir_o.dim,
                                  numel, numel + mul_i * mul_o, io))
                    numel += mul_i * mul_o
                    fan_in[io] += mul_i
            out_blocks.append((mul_o * ir_o.dim, first, len(paths)))
        self.paths = paths
        self.path_norm = [1.0 / math.sqrt(fan_in[p[7]]) for p in paths]
        self.out_blocks = out_blocks
        self.weight_numel = numel
        self.dim_out = self.irreps_out.dim
        self.weight = nn.Parameter(torch.randn(num_samples, numel))

    def forward(self, x: torch.Tensor, s0: int = 0, s1: int = -1) -> torch.Tensor:
        """``x`` is ``[s1 - s0, ..., dim_in]``: samples ``s0 .. s1 - 1`` (``s1 < 0``: all)."""
        weight = self.weight if s1 < 0 else self.weight[s0:s1]
        k = weight.shape[0]
        lead = x.shape[1:-1]
        out = self.transform(x.reshape(k, -1, x.shape[-1]), weight.unsqueeze(1))
        return out.reshape([k] + list(lead) + [self.dim_out])

    def transform(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x`` ``[k, M, dim_in]`` through T weight sets of this layer's layout, ``weight``
        ``[k, T, weight_numel]``: ``[k, M, T, dim_out]``, one matrix product per path for all T.

        Each output block is computed whole and the blocks are concatenated: an accumulation into
        slices of a zero tensor compiles (AOTInductor, its backward included) into masked
        slice-scatter kernels, slower to run and to compile (docs/benchmarks.md)."""
        k, m, t = x.shape[0], x.shape[1], weight.shape[1]
        blocks: List[torch.Tensor] = []
        for width, first, stop in self.out_blocks:
            acc: Optional[torch.Tensor] = None
            for n in range(first, stop):
                p = self.paths[n]
                i0, i1, mul_i, mul_o, d, w0, w1 = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
                w = weight[:, :, w0:w1].reshape(k, t, mul_i, mul_o).transpose(1, 2).reshape(k, mul_i, t * mul_o)
                w = w * self.path_norm[n]
                if d == 1:
                    y = torch.bmm(x[:, :, i0:i1], w)
                else:  # [k, M, T * mul_o, d]: (T, mul_o, d) in a row, as the output block wants
                    y = torch.einsum("knud,kuv->knvd", x[:, :, i0:i1].reshape(k, m, mul_i, d), w)
                y = y.reshape(k, m, t, mul_o * d)
                acc = y if acc is None else acc + y
            blocks.append(x.new_zeros(k, m, t, width) if acc is None else acc)
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=-1)

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.irreps_in.simplify()} -> {self.irreps_out.simplify()} "
                f"| {self.num_samples} x {self.weight_numel} weights)")


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """``softplus(x) - ln 2`` (SchNet's activation, zero at zero)."""
    return torch.nn.functional.softplus(x) - 0.6931471805599453


ACTIVATIONS = {"silu": torch.nn.functional.silu, "ssp": shifted_softplus, "tanh": torch.tanh}


@compile_mode("script")
class StackedMLP(nn.Module):
    """Scalar MLP ``dims[0] -> ... -> dims[-1]`` with ``k`` weight sets.

    ``h <- act(h @ W / sqrt(fan_in))`` (no biases, as NequIP's radial MLP); the
    activation is normalised to unit second moment (e3nn's ``normalize2mom``); no
    activation after the last layer.

    Examples
    --------
    >>> mlp = StackedMLP([8, 16, 1], num_samples=3, act="silu")
    >>> mlp(torch.randn(3, 10, 8)).shape
    torch.Size([3, 10, 1])
    """

    def __init__(self, dims: List[int], num_samples: int, act: str = "silu"):
        super().__init__()
        self.dims = list(dims)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.randn(num_samples, a, b)) for a, b in zip(dims[:-1], dims[1:])])
        self.act = normalize2mom(ACTIVATIONS[act])
        self.norms = [1.0 / math.sqrt(a) for a in dims[:-1]]

    def forward(self, x: torch.Tensor, s0: int = 0, s1: int = -1) -> torch.Tensor:
        n = len(self.norms)
        for i, w in enumerate(self.weights):
            x = torch.matmul(x, w if s1 < 0 else w[s0:s1]) * self.norms[i]
            if i < n - 1:
                x = self.act(x)
        return x

    def __repr__(self) -> str:
        k = self.weights[0].shape[0]
        return f"{self.__class__.__name__}({' -> '.join(map(str, self.dims))} | {k} samples)"
