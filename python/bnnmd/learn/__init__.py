"""``bnn-learn``: the closed active-learning loop on one machine.

Rounds of: MD in LAMMPS with the exported model until the uncertainty halt fires (or the run
reaches its target length); selection of diverse uncertain frames (:func:`bnnmd.analysis.select_frames`);
labels from a labeller (:class:`bnnmd.label.PySCFLabeller`, or any ASE calculator); fine-tuning
with SGHMC on the old and new data, each chain starting at and centred on where the last
posterior's chain ended; export. Resumable after a kill at any point. Or on the fly
(``md.mode: otf``, :class:`OnTheFly`): one trajectory, the model fine-tuned and swapped into the
running LAMMPS where the halt would fire. See ``docs/learn.md``.
"""

from bnnmd.learn._config import (FINETUNE_KEYS, ExecutorSection, FinetuneSection, LabelSection, LearnConfig, LearnError,
                                 MDSection, OTFSection, SelectSection, finetune_config)
from bnnmd.learn._loop import PHASES, ActiveLearning, heating_input, make_labeller, pick_frames, run_md
from bnnmd.learn._otf import OnTheFly
from bnnmd.learn._state import LoopState, Phase, RoundState

__all__ = ["ActiveLearning", "ExecutorSection", "FINETUNE_KEYS", "FinetuneSection", "LabelSection", "LearnConfig", "LearnError",
           "LoopState", "MDSection", "OTFSection", "OnTheFly", "PHASES", "Phase", "RoundState", "SelectSection", "finetune_config", "heating_input",
           "make_labeller", "pick_frames", "run_md"]
