"""What every labeller shares: the label, its error, and the on-disk cache keyed by geometry."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np

from bnnmd._errors import BnnmdError
from bnnmd._files import write_npz_atomic

PathLike = Union[str, os.PathLike]
#: The units of every :class:`Label` (and of the label cache): energies in kcal/mol, forces in kcal/mol/A.
LABEL_UNITS = {"energy": "kcal/mol", "length": "A"}


class LabelError(BnnmdError, RuntimeError):
    """A frame that could not be labelled; the message says why and what to try."""


@dataclass
class Label:
    """One labelled frame: energy and forces ``[n, 3]`` in :data:`LABEL_UNITS` (kcal/mol, kcal/mol/A),
    and for a periodic frame the stress ``[3, 3]`` in kcal/mol/A^3 with ASE's sign
    (``atoms.get_stress()``; None: not computed)."""

    energy: float
    forces: np.ndarray
    converged: bool = True
    cycles: int = 0
    stress: Optional[np.ndarray] = None


class CachedLabeller:
    """``labeller(atoms) -> Label`` with results cached as ``cache/<key>.npz`` (atomically).

    Subclasses give :meth:`method_id` (what besides the geometry decides the label), a key
    ``prefix`` and :meth:`_compute`. The key hashes the method, atomic numbers and positions
    (rounded to 1e-8 A), and for a periodic frame its cell and periodic directions.
    """

    prefix = ""

    def __init__(self, cache: Optional[PathLike] = None):
        self.cache = None if cache is None else Path(cache)

    def method_id(self) -> str:
        raise NotImplementedError

    def _compute(self, atoms) -> Label:
        raise NotImplementedError

    def key(self, atoms) -> str:
        h = hashlib.sha256()
        h.update(self.method_id().encode())
        h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(atoms.positions, dtype=np.float64), 8).tobytes())
        if any(atoms.pbc):  # a molecule's key stays what it was before periodic frames were labelled
            h.update(np.asarray(atoms.pbc, dtype=bool).tobytes())
            h.update(np.round(np.asarray(atoms.cell.array, dtype=np.float64), 8).tobytes())
        return self.prefix + h.hexdigest()[:24]

    def cached(self, atoms) -> Optional[Label]:
        """The cached label of ``atoms``, or None."""
        if self.cache is None:
            return None
        path = self.cache / f"{self.key(atoms)}.npz"
        if not path.exists():
            return None
        with np.load(path) as d:
            return Label(float(d["energy"]), d["forces"].copy(), bool(d["converged"]) if "converged" in d else True,
                         int(d["cycles"]) if "cycles" in d else 0, d["stress"].copy() if "stress" in d else None)

    def __call__(self, atoms) -> Label:
        hit = self.cached(atoms)
        if hit is not None:
            return hit
        label = self._compute(atoms)
        if self.cache is not None:
            extra = {} if label.stress is None else {"stress": label.stress}
            write_npz_atomic(self.cache / f"{self.key(atoms)}.npz", energy=label.energy, forces=label.forces,
                             converged=label.converged, cycles=label.cycles, **extra)
        return label
