"""Kohn-Sham DFT labels with pyscf, cached on disk."""

from __future__ import annotations

from typing import List, Optional, Sequence, Union

import numpy as np

from bnnmd import units
from bnnmd.label._base import CachedLabeller, Label, LabelError, PathLike


class PySCFLabeller(CachedLabeller):
    """``labeller(atoms) -> Label``: DFT energy and forces of an isolated molecule (no cell).

    ``xc`` and ``basis`` are pyscf's names (PBE/def2-SVP is rMD17's level of theory). Closed
    shells run restricted (RKS), others unrestricted (UKS) with the lowest spin multiplicity.
    An SCF that does not converge is retried with a level shift and then with second-order
    SCF; if that fails too, :class:`LabelError` is raised. With ``cache``, each result is
    stored as ``cache/<hash>.npz`` (atomically), keyed by the atoms, positions and method.
    """

    def __init__(self, xc: str = "pbe", basis: str = "def2-svp", charge: int = 0, cache: Optional[PathLike] = None,
                 threads: int = 1, max_cycle: int = 100):
        super().__init__(cache)
        self.xc, self.basis, self.charge = xc, basis, int(charge)
        self.threads, self.max_cycle = int(threads), int(max_cycle)

    def method_id(self) -> str:
        return f"{self.xc}|{self.basis}|{self.charge}|"

    def _compute(self, atoms) -> Label:
        try:
            from pyscf import dft, gto, lib
        except ImportError:
            raise LabelError("pyscf is not installed; install it (pip install pyscf; make install does)") from None
        if any(atoms.pbc):
            raise LabelError("PySCFLabeller labels isolated molecules; give atoms without periodic boundaries "
                             "(atoms.pbc = False)")
        lib.num_threads(self.threads)
        symbols = atoms.get_chemical_symbols()
        n_electrons = int(np.sum(atoms.numbers)) - self.charge
        mol = gto.M(atom=[(s, tuple(p)) for s, p in zip(symbols, atoms.positions)], basis=self.basis,
                    unit="Angstrom", charge=self.charge, spin=n_electrons % 2, verbose=0)
        attempts = ("plain", "level_shift", "newton")
        for attempt in attempts:
            mf = (dft.RKS(mol) if mol.spin == 0 else dft.UKS(mol))
            mf.xc, mf.max_cycle = self.xc, self.max_cycle
            if attempt == "level_shift":
                mf.level_shift = 0.3
            elif attempt == "newton":
                mf = mf.newton()
            cycles = []
            mf.callback = lambda env: cycles.append(1)
            energy = mf.kernel()
            if mf.converged:
                grad = mf.nuc_grad_method().kernel()
                e = float(energy) * units.energy_factor("Hartree", "kcal/mol")
                f = -np.asarray(grad) * units.energy_factor("Hartree", "kcal/mol") / units.length_factor("Bohr", "A")
                return Label(e, f, True, len(cycles))
        raise LabelError(f"SCF ({self.xc}/{self.basis}) did not converge in {self.max_cycle} cycles, also with a "
                         "level shift and with second-order SCF; the geometry may be far from any bonded "
                         "structure: skip this frame, or raise max_cycle")


def _label_one(args):
    labeller, atoms = args
    try:
        return labeller(atoms)
    except LabelError as exc:
        return exc


def label_frames(labeller: PySCFLabeller, frames: Sequence, processes: int = 1) -> List[Union[Label, LabelError]]:
    """Label ``frames`` (ase.Atoms) with ``processes`` worker processes (one thread each);
    a frame that fails gives its :class:`LabelError` in its place."""
    todo = [(labeller, a) for a in frames]
    if processes <= 1 or len(todo) <= 1:
        return [_label_one(t) for t in todo]
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(processes) as pool:
        return pool.map(_label_one, todo, chunksize=1)
