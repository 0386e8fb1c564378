"""Training: ``bnn-train CONFIG.yaml --out RUN_DIR`` and its Python twin :func:`train`.

Methods (``method:`` in the config): ``sghmc`` (the paper's adaptive-mass
sampler, k samples from one or several chains), ``map`` (Adam with early
stopping), ``mc_dropout`` (the same model with dropout; k masks at inference)
and ``ensemble`` (k members trained together in one stacked pass, early
stopping per member). Every method writes ``RUN_DIR/samples/sample_XXX.pt``,
``config.yaml`` (resolved), ``split.json``, ``log.csv`` and ``checkpoint.pt``.
"""

from bnnmd.train._config import METHODS, AdamSection, DataSection, SGHMCSection, TrainConfig, TrainingSection
from bnnmd.train._trainer import RunError, RunResult, Trainer, train

__all__ = ["AdamSection", "DataSection", "METHODS", "RunError", "RunResult", "SGHMCSection", "TrainConfig",
           "Trainer", "TrainingSection", "train"]
