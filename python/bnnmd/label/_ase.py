"""Labels from any ASE calculator, named by import path, cached like the pyscf labels."""

from __future__ import annotations

import importlib
from typing import Optional

import numpy as np

from bnnmd import units
from bnnmd.label._base import LABEL_UNITS, CachedLabeller, Label, LabelError


class ASELabeller(CachedLabeller):
    """``ASELabeller("MODULE:FACTORY", kwargs, energy_unit)(atoms) -> Label`` (kcal/mol, kcal/mol/A).

    ``FACTORY(**kwargs)`` must return an ASE calculator (a class works); its energies are in
    ``energy_unit`` (ASE's convention is eV) and lengths in A.
    """

    prefix = "ase-"

    def __init__(self, path: str, kwargs: Optional[dict] = None, energy_unit: str = "eV", cache=None):
        module, _, name = str(path).partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise LabelError(f"labeller {path!r} cannot be imported ({type(exc).__name__}: {exc}); give pyscf or "
                             "MODULE:FACTORY of an importable function or class returning an ASE calculator, "
                             "e.g. ase.calculators.emt:EMT") from None
        super().__init__(cache)
        self.path, self.kwargs, self.energy_unit = path, dict(kwargs or {}), units.check_energy_unit(energy_unit)
        self.factory = factory

    def method_id(self) -> str:
        return f"{self.path}|{sorted(self.kwargs.items())}|"

    def _compute(self, atoms) -> Label:
        a = atoms.copy()
        try:
            a.calc = self.factory(**self.kwargs)
            to_label = units.energy_factor(self.energy_unit, LABEL_UNITS["energy"])  # ASE lengths are A
            e = float(a.get_potential_energy()) * to_label
            f = np.asarray(a.get_forces(), dtype=np.float64) * to_label
        except Exception as exc:  # a calculator's own failure: this frame only
            raise LabelError(f"labeller {self.path} failed on this frame ({type(exc).__name__}: {exc})") from None
        return Label(e, f)
