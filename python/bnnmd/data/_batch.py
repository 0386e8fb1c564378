"""Graphs of many frames, batched into one flat graph of tensors for training."""

from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch

from bnnmd.data import keys as K
from bnnmd.data._dataset import AtomicDataset
from bnnmd.data._errors import DataError
from bnnmd.data._graph import NeighbourGraph, neighbour_list
from bnnmd.data._types import TypeMapper


class GraphDataset:
    """An :class:`AtomicDataset` with its radius graphs, built once, ready to batch.

    Examples
    --------
    >>> from bnnmd.data import bundled_dataset
    >>> gd = GraphDataset(bundled_dataset("rmd17_ethanol_train").subset(range(4)),
    ...                   TypeMapper(["H", "C", "O"]), cutoff=4.0)
    >>> b = gd.batch([0, 3])
    >>> b["pos"].shape, b["batch"].tolist()
    (torch.Size([18, 3]), [0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1])
    """

    def __init__(self, dataset: AtomicDataset, type_mapper: TypeMapper, cutoff: float):
        self.dataset = dataset
        self.type_mapper = type_mapper
        self.cutoff = float(cutoff)
        self.atom_types = type_mapper.types_of(dataset.atomic_numbers, file=dataset.source)
        self.graphs: List[NeighbourGraph] = []
        for i in range(len(dataset)):
            f = dataset.frame(i)
            self.graphs.append(neighbour_list(f["positions"], self.cutoff, f["cell"], f["pbc"]))

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int], dtype: torch.dtype = torch.float64,
              device: Optional[torch.device] = None) -> Dict[str, torch.Tensor]:
        """Frames ``indices`` as one graph: atoms concatenated, edge indices offset.

        Keys are those of :mod:`bnnmd.data.keys`. Energies, forces and stresses are included
        when the dataset has them.
        """
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) == 0:
            raise DataError("a batch needs at least one frame", field="indices",
                            fix="pass a non-empty list of frame indices")
        ds = self.dataset
        atoms = [np.arange(ds.offsets[i], ds.offsets[i + 1]) for i in idx]
        atom_idx = np.concatenate(atoms)
        n_atoms = ds.n_atoms[idx]
        start = np.concatenate([[0], np.cumsum(n_atoms)[:-1]])
        edge_index = np.concatenate([self.graphs[i].edge_index + s for i, s in zip(idx, start)], axis=1)
        cell_shift = np.concatenate([self.graphs[i].cell_shift for i in idx])
        shift = np.concatenate([self.graphs[i].shift_vector for i in idx])
        cell = ds.cell[idx] if ds.cell is not None else np.zeros((len(idx), 3, 3))

        def f(a):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=dtype, device=device)

        def i64(a):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.int64, device=device)

        out = {
            K.POSITIONS: f(ds.positions[atom_idx]),
            K.ATOMIC_NUMBERS: i64(ds.atomic_numbers[atom_idx]),
            K.ATOM_TYPE: i64(self.atom_types[atom_idx]),
            K.BATCH: i64(np.repeat(np.arange(len(idx)), n_atoms)),
            K.EDGE_INDEX: i64(edge_index),
            K.EDGE_CELL_SHIFT: f(cell_shift),
            K.EDGE_SHIFT: f(shift),
            K.CELL: f(cell),
            K.PBC: torch.as_tensor(ds.pbc[idx], device=device),
            K.NUM_ATOMS: i64(n_atoms),
            K.FRAME_INDEX: i64(idx),
        }
        if ds.energy is not None:
            out[K.TOTAL_ENERGY] = f(ds.energy[idx])
        if ds.forces is not None:
            out[K.FORCES] = f(ds.forces[atom_idx])
        if ds.stress is not None:
            out[K.STRESS] = f(ds.stress[idx])
        return out

    def batches(self, batch_size: int, shuffle: bool = False, seed: Optional[int] = None,
                dtype: torch.dtype = torch.float64,
                device: Optional[torch.device] = None) -> Iterator[Dict[str, torch.Tensor]]:
        """All frames in batches of ``batch_size`` (the last may be smaller)."""
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}", field="batch_size",
                            fix="use a positive batch size")
        order = np.random.default_rng(seed).permutation(len(self)) if shuffle else np.arange(len(self))
        for s in range(0, len(order), batch_size):
            yield self.batch(order[s:s + batch_size], dtype=dtype, device=device)
