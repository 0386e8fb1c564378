"""Labels from any ASE calculator, named by import path, cached like the pyscf labels; tblite's
GFN-xTB built in (:class:`TBLiteLabeller`)."""

from __future__ import annotations

import importlib
from typing import Optional

import numpy as np
from ase.calculators.calculator import PropertyNotImplementedError

from bnnmd import units
from bnnmd.label._base import LABEL_UNITS, CachedLabeller, Label, LabelError


class ASELabeller(CachedLabeller):
    """``ASELabeller("MODULE:FACTORY", kwargs, energy_unit)(atoms) -> Label`` (kcal/mol, kcal/mol/A).

    ``FACTORY(**kwargs)`` must return an ASE calculator (a class works); its energies are in
    ``energy_unit`` (ASE's convention is eV) and lengths in A. A frame periodic in x, y and z also
    gets its stress (kcal/mol/A^3, ASE's sign) when the calculator computes one.
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
            s = _stress(a, to_label)
        except Exception as exc:  # a calculator's own failure: this frame only
            raise LabelError(f"labeller {self.path} failed on this frame ({type(exc).__name__}: {exc})") from None
        return Label(e, f, stress=s)


def _stress(atoms, factor: float) -> Optional[np.ndarray]:
    """The 3 x 3 stress of a frame periodic in x, y and z times ``factor`` (None: not periodic, or the
    calculator has no stress)."""
    if not all(atoms.pbc):
        return None
    try:
        return np.asarray(atoms.get_stress(voigt=False), dtype=np.float64) * factor
    except PropertyNotImplementedError:
        return None


class TBLiteLabeller(ASELabeller):
    """GFN-xTB labels from tblite (``method`` GFN2-xTB, GFN1-xTB or IPEA1-xTB): energies, forces and,
    for periodic frames (Gamma point), stresses. An SCF that does not converge is retried with more
    iterations and stronger mixer damping (:data:`SCF_TRIES`) before the frame fails."""

    prefix = "tblite-"
    #: (max_iterations, mixer_damping) per try: tblite's defaults, then slower and safer mixing
    SCF_TRIES = ((250, 0.4), (500, 0.2), (1000, 0.1))

    def __init__(self, method: str = "GFN2-xTB", cache=None, **kwargs):
        super().__init__("tblite.ase:TBLite", dict(kwargs, method=method, verbosity=0), "eV", cache=cache)

    def _compute(self, atoms) -> Label:
        errors = []
        for max_it, damping in self.SCF_TRIES:
            a = atoms.copy()
            a.calc = self.factory(**self.kwargs, max_iterations=max_it, mixer_damping=damping)
            try:
                to_label = units.energy_factor("eV", LABEL_UNITS["energy"])
                e = float(a.get_potential_energy()) * to_label
                f = np.asarray(a.get_forces(), dtype=np.float64) * to_label
                return Label(e, f, stress=_stress(a, to_label))
            except Exception as exc:  # tblite raises CalculationFailed when the SCF does not converge
                errors.append(f"{max_it} iterations, damping {damping}: {str(exc).strip()[:200]}")
        raise LabelError(f"tblite {self.kwargs['method']} failed on this frame with every SCF setting "
                         f"({'; '.join(errors)}); the geometry may be unphysical: skip it, or try GFN1-xTB")
