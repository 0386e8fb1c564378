"""The module inside an exported file: the stacked model behind the deployment contract."""

from __future__ import annotations

from typing import Dict

import torch
from e3nn.util.jit import compile_mode
from torch import nn

from bnnmd.data import keys as K
from bnnmd.nn import StochasticNequIP


@compile_mode("script")
class DeployedModel(nn.Module):
    """``forward(pos, atom_type, edge_index, edge_shift, num_local)`` for one configuration.

    Inputs (model units): positions ``[N, 3]`` of local atoms first, then ghosts;
    type indices ``[N]``; the directed graph ``[2, E]`` (centre, neighbour) over
    all N atoms; cartesian edge shifts ``[E, 3]`` (zero for LAMMPS ghosts, which
    carry their image positions); ``num_local``: only atoms ``< num_local``
    contribute energy (and energy variance).

    Outputs, per sample ``s < k``: ``total_energy [k]``, ``atomic_energy [k, N]``,
    ``forces [k, N, 3]`` on every atom passed in (ghosts included), ``total_energy_std
    [k]``, ``forces_std [k, N]``, ``virial [k, 3, 3]``, ``virial_std [k]`` (sigma_W, the std of each
    virial component; 0 for a model without a stress head). The keys and, for a ``.pt2``, their order
    are the C++ evaluator's (``bnnmd._core.output_keys``); a new output goes last, and the evaluator
    still runs files exported before it (without ``virial_std``: 0).
    """

    def __init__(self, model: StochasticNequIP):
        super().__init__()
        self.model = model

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor,
                edge_shift: torch.Tensor, num_local: int) -> Dict[str, torch.Tensor]:
        n = pos.shape[0]
        mask = (torch.arange(n, device=pos.device) < num_local).to(pos.dtype)
        data = {
            K.POSITIONS: pos,
            K.ATOM_TYPE: atom_type,
            K.EDGE_INDEX: edge_index,
            K.EDGE_SHIFT: edge_shift,
            K.BATCH: torch.zeros(n, dtype=torch.long, device=pos.device),
            K.NUM_ATOMS: torch.full((1,), n, dtype=torch.long, device=pos.device),
            K.ENERGY_MASK: mask,
        }
        out = self.model(data)
        return {
            K.TOTAL_ENERGY: out[K.TOTAL_ENERGY][:, 0],
            K.ATOMIC_ENERGY: out[K.ATOMIC_ENERGY],
            K.FORCES: out[K.FORCES],
            K.TOTAL_ENERGY_STD: out[K.TOTAL_ENERGY_STD][:, 0],
            K.FORCES_STD: out[K.FORCES_STD],
            K.VIRIAL: out[K.VIRIAL][:, 0],
            K.VIRIAL_STD: out[K.VIRIAL_STD][:, 0],
        }
