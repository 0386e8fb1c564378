"""bnnmd: uncertainty-aware Bayesian neural-network interatomic potentials for LAMMPS.

Subpackages
-----------
bnnmd.data
    Datasets (rMD17, sGDML, anything ASE reads), splits, statistics, graphs, batches.
bnnmd.units
    The one table of energy and length units.
"""

from bnnmd._extension import load_core as _load_core

_core = _load_core()

__version__: str = _core.__version__
#: ``torch.__version__`` that ``bnnmd._core`` was compiled against.
compiled_torch_version: str = _core.torch_version

__all__ = ["__version__", "compiled_torch_version"]
