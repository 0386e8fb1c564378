"""Training: ``bnn-train CONFIG.yaml --out RUN_DIR`` and its Python twin :func:`train`.

Methods (``method:`` in the config), one :class:`Method` each in
:data:`REGISTRY`: ``sghmc`` (an Adam + EMA warm start, then the paper's
adaptive-mass sampler, k samples from one or several chains), ``map`` (Adam with
an EMA of the weights and early stopping), ``mc_dropout`` (the same model with
dropout; k masks at inference) and ``ensemble`` (k members trained together in
one stacked pass, early stopping per member). Every method writes ``RUN_DIR/samples/sample_XXX.pt``,
``config.yaml`` (resolved), ``split.json``, ``log.csv`` and ``checkpoint.pt``.
"""

from bnnmd.train._config import AdamSection, DataSection, SGHMCSection, TrainConfig, TrainingSection
from bnnmd.train._ema import WeightEMA
from bnnmd.train._methods import METHODS, REGISTRY, Method, get_method, register
from bnnmd.train._trainer import RunError, RunResult, Trainer, train

__all__ = ["AdamSection", "DataSection", "METHODS", "Method", "REGISTRY", "RunError", "RunResult",
           "SGHMCSection", "TrainConfig", "Trainer", "TrainingSection", "WeightEMA", "get_method", "register", "train"]
