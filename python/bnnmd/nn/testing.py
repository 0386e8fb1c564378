"""Reusable checks for bnnmd models (the model test suite is built from these).

Each function takes a model and a batch from :class:`bnnmd.data.GraphDataset`
and raises ``AssertionError`` with the largest deviation when a property fails.
Tolerances depend on the dtype.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional

import ase
import numpy as np
import torch

from bnnmd.data import keys as K
from bnnmd.data import neighbour_list

Batch = Dict[str, torch.Tensor]


def random_periodic_atoms(n: int, length: float, min_distance: float, seed: int = 0,
                          numbers=(1, 6, 8), p=None):
    """``n`` random atoms in a periodic cube, at least ``min_distance`` apart (minimum image).

    Positions are drawn first, then the atomic numbers (``rng.choice(numbers, n, p=p)``).
    Returns an :class:`ase.Atoms`.
    """
    rng = np.random.default_rng(seed)
    pts = []
    while len(pts) < n:
        q = rng.uniform(0, length, 3)
        if all(np.linalg.norm((o - q) - length * np.round((o - q) / length)) > min_distance for o in pts):
            pts.append(q)
    return ase.Atoms(numbers=rng.choice(list(numbers), n, p=p), positions=pts, cell=[length] * 3, pbc=True)


def tolerance(dtype: torch.dtype) -> float:
    """Absolute tolerance for outputs of order one to a hundred."""
    return {torch.float32: 2e-3, torch.float64: 1e-9}[dtype]


def _check(name: str, got: torch.Tensor, want: torch.Tensor, atol: float) -> None:
    err = (got - want).abs().max().item() if got.numel() else 0.0
    scale = max(want.abs().max().item() if want.numel() else 0.0, 1.0)
    if not err <= atol * scale:
        raise AssertionError(f"{name}: max deviation {err:.3g} > {atol:.1g} x {scale:.3g}")


def rebuild_edges(batch: Batch, cutoff: float) -> Batch:
    """Recompute the graph of every frame of ``batch`` from its positions (after moving atoms)."""
    out = dict(batch)
    pos = batch[K.POSITIONS].detach().cpu().double().numpy()
    frames = batch[K.BATCH].cpu().numpy()
    cells = batch[K.CELL].detach().cpu().double().numpy()
    pbcs = batch[K.PBC].cpu().numpy()
    ei, cs, sv = [], [], []
    for f in range(len(batch[K.NUM_ATOMS])):
        atoms = np.flatnonzero(frames == f)
        g = neighbour_list(pos[atoms], cutoff, cells[f] if pbcs[f].any() else None, pbcs[f])
        ei.append(g.edge_index + atoms[0])
        cs.append(g.cell_shift)
        sv.append(g.shift_vector)
    dev, dt = batch[K.POSITIONS].device, batch[K.POSITIONS].dtype
    out[K.EDGE_INDEX] = torch.as_tensor(np.concatenate(ei, axis=1), device=dev)
    out[K.EDGE_CELL_SHIFT] = torch.as_tensor(np.concatenate(cs), dtype=dt, device=dev)
    out[K.EDGE_SHIFT] = torch.as_tensor(np.concatenate(sv), dtype=dt, device=dev)
    return out


def transform(batch: Batch, rotation: Optional[torch.Tensor] = None,
              translation: Optional[torch.Tensor] = None) -> Batch:
    """Rotate/reflect (``pos @ R.T``) and translate positions, cells and edge shifts together."""
    out = dict(batch)
    R = torch.eye(3, dtype=batch[K.POSITIONS].dtype) if rotation is None else rotation
    t = torch.zeros(3, dtype=R.dtype) if translation is None else translation
    out[K.POSITIONS] = batch[K.POSITIONS] @ R.T + t
    out[K.CELL] = batch[K.CELL] @ R.T
    out[K.EDGE_SHIFT] = batch[K.EDGE_SHIFT] @ R.T
    return out


def random_rotation(dtype: torch.dtype, reflect: bool = False, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r))
    if torch.det(q) < 0:
        q[:, 0] = -q[:, 0]
    if reflect:
        q = -q
    return q.to(dtype)


def assert_equivariant(model: Callable[[Batch], Batch], batch: Batch, reflect: bool = True) -> None:
    """Energies, sigmas invariant; forces rotate; virial rotates as R W R^T."""
    tol = tolerance(batch[K.POSITIONS].dtype)
    ref = model(batch)
    for name, R, t in (("rotation", random_rotation(batch[K.POSITIONS].dtype), None),
                       ("reflection", random_rotation(batch[K.POSITIONS].dtype, reflect=True, seed=1), None),
                       ("translation", None, torch.tensor([3.0, -1.5, 0.7], dtype=batch[K.POSITIONS].dtype))):
        if name == "reflection" and not reflect:
            continue
        out = model(transform(batch, R, t))
        R = torch.eye(3, dtype=batch[K.POSITIONS].dtype) if R is None else R
        for key in (K.TOTAL_ENERGY, K.ATOMIC_ENERGY, K.TOTAL_ENERGY_STD, K.FORCES_STD):
            _check(f"{name}: {key}", out[key], ref[key], tol)
        _check(f"{name}: forces", out[K.FORCES], ref[K.FORCES] @ R.T, tol)
        _check(f"{name}: virial", out[K.VIRIAL], R @ ref[K.VIRIAL] @ R.T, tol)


def assert_permutation_equivariant(model: Callable[[Batch], Batch], batch: Batch, seed: int = 0) -> None:
    """Permuting atoms within frames permutes per-atom outputs and leaves the rest unchanged."""
    tol = tolerance(batch[K.POSITIONS].dtype)
    n = batch[K.POSITIONS].shape[0]
    g = torch.Generator().manual_seed(seed)
    frames = batch[K.BATCH]
    perm = torch.cat([torch.nonzero(frames == f).squeeze(-1)[torch.randperm(int((frames == f).sum()), generator=g)]
                      for f in range(len(batch[K.NUM_ATOMS]))])
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(n)
    out = dict(batch)
    for key in (K.POSITIONS, K.ATOM_TYPE, K.ATOMIC_NUMBERS, K.BATCH, K.FORCES):
        if key in batch:
            out[key] = batch[key][perm]
    out[K.EDGE_INDEX] = inv[batch[K.EDGE_INDEX]]
    ref, got = model(batch), model(out)
    for key in (K.TOTAL_ENERGY, K.TOTAL_ENERGY_STD, K.VIRIAL):
        _check(f"permutation: {key}", got[key], ref[key], tol)
    for key in (K.ATOMIC_ENERGY, K.FORCES_STD, K.FORCES):
        _check(f"permutation: {key}", got[key], ref[key][:, perm], tol)


def assert_forces_are_gradients(model: Callable[[Batch], Batch], batch: Batch, cutoff: float,
                                atoms=(0, 1), eps: Optional[float] = None) -> None:
    """Forces equal central finite differences of the energy (graph rebuilt at each point)."""
    dtype = batch[K.POSITIONS].dtype
    eps = eps if eps is not None else (1e-4 if dtype == torch.float64 else 1e-2)
    ref = model(batch)
    frames = batch[K.BATCH]
    for a in atoms:
        for d in range(3):
            energies = []
            for sign in (1.0, -1.0):
                moved = dict(batch)
                pos = batch[K.POSITIONS].clone()
                pos[a, d] += sign * eps
                moved[K.POSITIONS] = pos
                energies.append(model(rebuild_edges(moved, cutoff))[K.TOTAL_ENERGY][:, frames[a]])
            fd = -(energies[0] - energies[1]) / (2 * eps)
            tol = 1e-6 if dtype == torch.float64 else 5e-2
            _check(f"finite differences, atom {a} axis {d}", ref[K.FORCES][:, a, d], fd, tol)


def assert_virial_is_strain_derivative(model: Callable[[Batch], Batch], batch: Batch, cutoff: float,
                                       eps: float = 1e-5) -> None:
    """virial = -dE/d(strain) (symmetric strain applied to positions and cell)."""
    ref = model(batch)
    for a, b in ((0, 0), (1, 2), (0, 1)):
        energies = []
        for sign in (1.0, -1.0):
            strain = torch.eye(3, dtype=batch[K.POSITIONS].dtype)
            strain[a, b] += sign * eps / (2 if a != b else 1)
            strain[b, a] += sign * eps / 2 if a != b else 0.0
            moved = transform(batch, strain)
            energies.append(model(rebuild_edges(moved, cutoff))[K.TOTAL_ENERGY])
        fd = -(energies[0] - energies[1]) / (2 * eps)
        _check(f"virial[{a},{b}] vs strain derivative", ref[K.VIRIAL][:, :, a, b], fd, 1e-6)
