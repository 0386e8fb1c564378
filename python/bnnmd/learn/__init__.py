"""``bnn-learn``: the closed active-learning loop on one machine.

Rounds of: MD in LAMMPS with the exported model until the uncertainty halt fires (or the run
reaches its target length); selection of diverse uncertain frames (:func:`bnnmd.analysis.select_frames`);
labels from a labeller (:class:`bnnmd.label.PySCFLabeller`, or any ASE calculator); fine-tuning
with SGHMC on the old and new data, each chain starting at and centred on where the last
posterior's chain ended; export. Resumable after a kill at any point. See ``docs/learn.md``.
"""

from bnnmd.learn._config import LearnConfig, LearnError
from bnnmd.learn._loop import PHASES, ActiveLearning, make_labeller, run_md

__all__ = ["ActiveLearning", "LearnConfig", "LearnError", "PHASES", "make_labeller", "run_md"]
