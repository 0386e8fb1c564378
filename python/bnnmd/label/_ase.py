"""Labels from any ASE calculator, named by import path, cached like the pyscf labels."""

from __future__ import annotations

import hashlib
import importlib
import io
from pathlib import Path
from typing import Optional

import numpy as np

from bnnmd import units
from bnnmd._files import write_atomic
from bnnmd.label._pyscf import Label, LabelError


class ASELabeller:
    """``ASELabeller("MODULE:FACTORY", kwargs, energy_unit)(atoms) -> Label`` (kcal/mol, kcal/mol/A).

    ``FACTORY(**kwargs)`` must return an ASE calculator (a class works); its energies are in
    ``energy_unit`` (ASE's convention is eV) and lengths in A.
    """

    def __init__(self, path: str, kwargs: Optional[dict] = None, energy_unit: str = "eV", cache=None):
        module, _, name = str(path).partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise LabelError(f"labeller {path!r} cannot be imported ({type(exc).__name__}: {exc}); give pyscf or "
                             "MODULE:FACTORY of an importable function or class returning an ASE calculator, "
                             "e.g. ase.calculators.emt:EMT") from None
        self.path, self.kwargs, self.energy_unit = path, dict(kwargs or {}), units.check_energy_unit(energy_unit)
        self.factory = factory
        self.cache = None if cache is None else Path(cache)

    def key(self, atoms) -> str:
        h = hashlib.sha256()
        h.update(f"{self.path}|{sorted(self.kwargs.items())}|".encode())
        h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
        h.update(np.round(np.asarray(atoms.positions, dtype=np.float64), 8).tobytes())
        return "ase-" + h.hexdigest()[:24]

    def __call__(self, atoms) -> Label:
        path = None if self.cache is None else self.cache / f"{self.key(atoms)}.npz"
        if path is not None and path.exists():
            with np.load(path) as d:
                return Label(float(d["energy"]), d["forces"].copy())
        a = atoms.copy()
        try:
            a.calc = self.factory(**self.kwargs)
            e = float(a.get_potential_energy()) * units.energy_factor(self.energy_unit, "kcal/mol")
            f = np.asarray(a.get_forces(), dtype=np.float64) * units.energy_factor(self.energy_unit, "kcal/mol")
        except Exception as exc:  # a calculator's own failure: this frame only
            raise LabelError(f"labeller {self.path} failed on this frame ({type(exc).__name__}: {exc})") from None
        label = Label(e, f)
        if path is not None:
            buf = io.BytesIO()
            np.savez(buf, energy=e, forces=f)
            write_atomic(path, buf.getvalue())
        return label
