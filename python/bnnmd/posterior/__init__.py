"""The on-disk contract between the stages: what training writes and inference, export, LAMMPS,
the ASE calculator, analysis and ``bnn-learn`` read.

* **Sample files** (``RUN_DIR/samples/sample_XXX.pt``): one posterior sample each, with the plan
  that makes k of them one model (:class:`Inference`); :func:`choose` and :func:`load_samples` need
  nothing of the method that wrote them.
* **Calibration** (``samples/calibration.json``): one :class:`StdMap` per quantity
  (:class:`Calibration`), and the :class:`HaltStatistics` of the calibrated model.
* **Halt rules**: :func:`halt_threshold` turns the statistics into the threshold an exported model
  carries and LAMMPS reads as ``c_unc[5]``.
* **Mixture moments**: :func:`energy_stats`, :func:`force_stats` and :func:`virial_stats`, computed
  by the C++ core that LAMMPS runs.
* **Export metadata** (``bnnmd.txt`` in an exported file): :func:`metadata_to_text` and
  :func:`parse_metadata`: the C++ writer and reader; keys, format version and file name from the C++ core.

Training (:mod:`bnnmd.train`) writes these; :mod:`bnnmd.uq`, :mod:`bnnmd.deploy`,
:mod:`bnnmd.calculator`, :mod:`bnnmd.analysis` and :mod:`bnnmd.learn` read them. Units travel in
them (sample metadata, calibration, export metadata), so no reader assumes kcal/mol.
"""

from bnnmd.posterior._arrays import check_predictions
from bnnmd.posterior._calibration import (CALIBRATION_FILE, CALIBRATION_FORMAT, QUANTITIES, Calibration,
                                          find_calibration)
from bnnmd.posterior._halt import (DEFAULT_HALT_RULE, HALT_RULES, HaltRuleError, HaltStatistics, halt_statistics,
                                   halt_step, halt_threshold, parse_rule, per_atom_stds)
from bnnmd.posterior._metadata import EXTRA_FILE, FORMAT_VERSION
from bnnmd.posterior._metadata import KEYS as METADATA_KEYS
from bnnmd.posterior._metadata import OPTIONAL_KEYS as OPTIONAL_METADATA_KEYS
from bnnmd.posterior._metadata import parse as parse_metadata
from bnnmd.posterior._metadata import to_text as metadata_to_text
from bnnmd.posterior._moments import energy_stats, force_stats, virial_stats
from bnnmd.posterior._samples import (SAMPLE_FORMAT, Inference, InferencePlan, SampleError, SampleSet, choose,
                                      evenly_spaced, inference_plan, load_chosen, load_samples, read_sample,
                                      sample_files, sample_path, save_sample)
from bnnmd.posterior._stdmap import GROUP, KINDS, CalibrationError, StdMap, scale_predictions, unit_std

__all__ = [
    "CALIBRATION_FILE", "CALIBRATION_FORMAT", "Calibration", "CalibrationError", "DEFAULT_HALT_RULE", "EXTRA_FILE",
    "FORMAT_VERSION", "GROUP", "HALT_RULES", "HaltRuleError", "HaltStatistics", "Inference", "InferencePlan", "KINDS",
    "METADATA_KEYS", "OPTIONAL_METADATA_KEYS", "QUANTITIES", "SAMPLE_FORMAT", "SampleError", "SampleSet", "StdMap",
    "check_predictions", "choose", "energy_stats", "evenly_spaced", "find_calibration", "force_stats",
    "halt_statistics", "halt_step", "halt_threshold", "inference_plan", "load_chosen", "load_samples", "metadata_to_text",
    "parse_metadata", "parse_rule", "per_atom_stds", "read_sample", "sample_files", "sample_path", "save_sample",
    "scale_predictions", "unit_std", "virial_stats",
]
