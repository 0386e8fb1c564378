"""Reference labels (energies and forces) from quantum chemistry: the ground truth for the
uncertainty, and new training data for frames the model was unsure about.

:class:`PySCFLabeller` runs Kohn-Sham DFT with pyscf (default PBE/def2-SVP, the level of the
rMD17 data) and caches every result on disk, so an interrupted labelling resumes without
recomputing. :class:`TBLiteLabeller` (GFN-xTB, periodic cells with stresses) and
:class:`ASELabeller` (any ASE calculator by import path) are cached the same way. Energies and
forces come back in kcal/mol and kcal/mol/A, stresses in kcal/mol/A^3 (:mod:`bnnmd.units`).

Examples
--------
>>> from bnnmd.label import PySCFLabeller  # doctest: +SKIP
>>> labeller = PySCFLabeller(cache="labels/")  # doctest: +SKIP
>>> energy, forces = labeller(atoms)  # doctest: +SKIP
"""

from bnnmd.label._ase import ASELabeller, TBLiteLabeller
from bnnmd.label._base import LABEL_UNITS, CachedLabeller, Label, LabelError
from bnnmd.label._pyscf import PySCFLabeller, label_frames

__all__ = ["ASELabeller", "CachedLabeller", "LABEL_UNITS", "Label", "LabelError", "PySCFLabeller", "TBLiteLabeller", "label_frames"]
