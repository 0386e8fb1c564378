"""Kohn-Sham DFT labels with pyscf, cached on disk."""

from __future__ import annotations

import multiprocessing as mp
import time
from multiprocessing.connection import wait
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
            # optional dependency: pyscf (pip install bnnmd[label]) is needed only to compute labels
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


def _worker(labeller, atoms, conn) -> None:
    """One frame in its own process: its label or its error goes back through ``conn``."""
    try:
        out = _label_one((labeller, atoms))
    except Exception as exc:  # the labeller's own bug: this frame only, with its name
        out = LabelError(f"the labeller raised {type(exc).__name__}: {exc}")
    conn.send(out)
    conn.close()


def label_frames(labeller: PySCFLabeller, frames: Sequence, processes: int = 1,
                 timeout: Optional[float] = None) -> List[Union[Label, LabelError]]:
    """Label ``frames`` (ase.Atoms) with ``processes`` worker processes (one thread each);
    a frame that fails gives its :class:`LabelError` in its place.

    ``timeout``: seconds of wall clock per frame, its worker's start included; a frame that runs
    longer is stopped (its process killed) and gets a :class:`LabelError`. With a timeout every
    frame that is not cached runs in a process of its own."""
    if timeout is None:
        todo = [(labeller, a) for a in frames]
        if processes <= 1 or len(todo) <= 1:
            return [_label_one(t) for t in todo]
        with mp.get_context("spawn").Pool(processes) as pool:
            return pool.map(_label_one, todo, chunksize=1)
    return _label_with_timeout(labeller, frames, max(1, processes), float(timeout))


def _label_with_timeout(labeller, frames, processes: int, timeout: float):
    ctx = mp.get_context("spawn")
    results: List = [None] * len(frames)
    pending = []
    for i, atoms in enumerate(frames):
        hit = labeller.cached(atoms)
        if hit is None:
            pending.append(i)
        else:
            results[i] = hit
    running = {}  # receiving end -> (frame index, process, start time)
    try:
        while pending or running:
            while pending and len(running) < processes:
                i = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(labeller, frames[i], send), daemon=True)
                proc.start()
                send.close()
                running[recv] = (i, proc, time.monotonic())
            left = min(t0 + timeout for _, _, t0 in running.values()) - time.monotonic()
            for conn in wait(list(running), timeout=max(0.0, left)):
                i, proc, _ = running.pop(conn)
                try:
                    results[i] = conn.recv()
                except EOFError:
                    proc.join()
                    results[i] = LabelError(f"the labeller's process died (exit code {proc.exitcode}) on this "
                                            "frame; out of memory? try fewer label processes")
                conn.close()
                proc.join()
            now = time.monotonic()
            for conn, (i, proc, t0) in list(running.items()):
                if now - t0 >= timeout:
                    proc.kill()
                    proc.join()
                    conn.close()
                    del running[conn]
                    results[i] = LabelError(f"labelling took longer than the timeout ({timeout:g} s) and was "
                                            "stopped; raise the timeout (bnn-learn: label.timeout) or use a "
                                            "cheaper method or basis")
    finally:
        for conn, (_, proc, _) in running.items():
            proc.kill()
            proc.join()
    return results
