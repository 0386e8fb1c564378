"""Post-hoc analysis of MD trajectories and their uncertainty; active-learning frame selection; ``bnn-analyze``.

:func:`read_trajectory` reads a LAMMPS dump with the per-atom columns of
``compute bnn/atom`` (through MDAnalysis, with the data file as topology) or an
extxyz with the per-atom array ``forces_std`` (ASE). :func:`analyze` reports the
time series of the largest, mean and per-element mean uncertainty, the fraction of
atoms above a threshold, the first crossing, the excursions above it, the most
uncertain atoms with their neighbours, and the geometry sanity of every frame
(:func:`geometry_report`: shortest distances against covalent radii, the first (lasting)
bond-graph change, atoms too close, H2 formed) next to the first crossing (:func:`halt_timing`).
:func:`select_frames` picks diverse uncertain frames for labelling and
:func:`write_selection` writes them as extxyz.
:func:`write_report` draws the plots and writes a Markdown report. See
``docs/analysis.md``.

Examples
--------
>>> from bnnmd.analysis import read_trajectory, analyze, select_frames  # doctest: +SKIP
>>> traj = read_trajectory("traj.dump", data="system.data", elements=["C", "H", "O"])  # doctest: +SKIP
>>> result = analyze(traj, threshold=1.5)  # doctest: +SKIP
>>> result.first_crossing["step"], result.summary["max"]  # doctest: +SKIP
>>> result.geometry.first_unphysical, result.halt_vs_geometry["text"]  # doctest: +SKIP
>>> select_frames(traj, threshold=1.5, n=20).steps  # doctest: +SKIP
"""

from bnnmd.analysis._analyze import AnalysisResult, analyze
from bnnmd.analysis._errors import AnalysisError
from bnnmd.analysis._geometry import (BOND_FACTOR, CLOSE_FACTOR, LASTING_FRAMES, GeometryReport, covalent_radii,
                                      geometry_report, halt_timing)
from bnnmd.analysis._report import PLOT_FILES, REPORT_FILE, markdown, write_plots, write_report
from bnnmd.analysis._select import (DEFAULT_GAP_INTERVALS, SelectedFrame, Selection, default_min_gap,
                                    select_frames, write_selection)
from bnnmd.analysis._truth import TruthFrames, dft_truth, frame_atoms, frame_errors, molecule_atoms
from bnnmd.analysis._structure import atom_environment, element_order, frame_descriptor, radial_distribution
from bnnmd.analysis._trajectory import (EXTXYZ_ARRAYS, KINDS, UncertaintyTrajectory, column_kind, read_extxyz,
                                        read_lammps_dump, read_trajectory)


def attach_uncertainty(atoms):
    """Copy ``forces_std`` (+ ``_epistemic``, ``_aleatoric``) from ``atoms.calc.results`` (a
    :class:`bnnmd.calculator.BNNCalculator` that has run) into ``atoms.arrays``, so that an extxyz
    written afterwards carries them; returns ``atoms``."""
    results = getattr(atoms.calc, "results", None) or {}
    if "forces_std" not in results:
        raise AnalysisError("atoms.calc has no forces_std result",
                            "attach a BNNCalculator and compute the forces (atoms.get_forces()) first")
    for name in EXTXYZ_ARRAYS.values():
        if name in results:
            atoms.arrays[name] = results[name].copy()
    return atoms


__all__ = [
    "AnalysisError", "AnalysisResult", "BOND_FACTOR", "CLOSE_FACTOR", "DEFAULT_GAP_INTERVALS", "EXTXYZ_ARRAYS",
    "GeometryReport", "KINDS", "LASTING_FRAMES", "PLOT_FILES", "REPORT_FILE", "SelectedFrame", "Selection",
    "TruthFrames", "UncertaintyTrajectory", "analyze", "atom_environment", "attach_uncertainty", "column_kind",
    "covalent_radii", "default_min_gap", "dft_truth", "element_order", "frame_atoms", "frame_descriptor", "frame_errors", "geometry_report",
    "halt_timing", "markdown", "molecule_atoms", "radial_distribution", "read_extxyz", "read_lammps_dump", "read_trajectory",
    "select_frames", "write_plots", "write_report", "write_selection",
]
