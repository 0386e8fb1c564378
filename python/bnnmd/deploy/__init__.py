"""Deployment: ``bnn-export`` stacks k samples into ONE file; the C++ core evaluates it.

The file holds a :class:`DeployedModel` (input contract: positions, type
indices, edge index, edge shifts, number of local atoms) as TorchScript (``.pth``)
or compiled ahead of time by AOTInductor (``.pt2``, :mod:`bnnmd.deploy._pt2`), and
metadata (``bnnmd.txt``: format version, type names, cutoff, layers, k, units, dtype,
calibration, samples hash; :mod:`bnnmd.posterior` holds its writer and reader). ``bnnmd._core.Evaluator`` — the same C++ code the
LAMMPS plugin runs — loads either and aggregates the k samples.
"""

from bnnmd.deploy._export import ExportError, export, read_calibration, read_metadata
from bnnmd.deploy._module import DeployedModel

__all__ = ["DeployedModel", "ExportError", "export", "read_calibration", "read_metadata"]
