"""bnnmd: uncertainty-aware Bayesian neural-network interatomic potentials for LAMMPS.

Subpackages
-----------
bnnmd.data
    Datasets (rMD17, sGDML, anything ASE reads), splits, statistics, graphs, batches.
bnnmd.nn
    The stochastic NequIP model with a sample dimension.
bnnmd.bayes
    Likelihood, prior and the adaptive-mass SGHMC sampler.
bnnmd.posterior
    The on-disk contract: sample files, calibration, halt statistics and rules, the mixture
    moments, the export metadata.
bnnmd.train
    ``bnn-train``: SGHMC, MAP, MC dropout and deep ensembles; checkpoints and resume.
bnnmd.uq
    ``bnn-eval``: MAE, RMSE, MLL, NECE, ROC-AUC, recalibration and plots.
bnnmd.deploy
    ``bnn-export``: k samples as one TorchScript (.pth) or AOTInductor (.pt2) file for the C++
    evaluator and LAMMPS.
bnnmd.calculator
    The ASE calculator.
bnnmd.analysis
    ``bnn-analyze``: trajectories with uncertainty (MDAnalysis), frames to relabel.
bnnmd.units
    The one table of energy and length units.
"""

from bnnmd._extension import load_core as _load_core

_core = _load_core()

__version__: str = _core.__version__
#: ``torch.__version__`` that ``bnnmd._core`` was compiled against.
compiled_torch_version: str = _core.torch_version

__all__ = ["__version__", "compiled_torch_version"]

from bnnmd._errors import BnnmdError  # noqa: E402  (the base of every bnnmd error)
