"""Active-learning frame selection: uncertain, structurally diverse, spread in time; extxyz for DFT.

The rule (``docs/analysis.md``):

1. candidates are the frames whose largest per-atom uncertainty exceeds the threshold (``>``);
2. the first pick is the candidate with the largest uncertainty;
3. each further pick is, among the candidates at least ``min_gap`` MD steps away from every
   frame picked so far, the one farthest (Euclidean, :func:`frame_descriptor`) from its nearest
   picked frame: greedy farthest-point sampling. Ties go to the larger uncertainty, then to the
   earlier frame;
4. it stops after ``n`` picks or when no candidate is left.

Everything is a pure function of the input, so the same trajectory gives the same selection.
"""

from __future__ import annotations

import io
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import ase.io
import numpy as np

from bnnmd._files import write_atomic
from bnnmd.analysis._errors import AnalysisError
from bnnmd.analysis._structure import element_order, frame_descriptor
from bnnmd.analysis._trajectory import UncertaintyTrajectory, column_kind

PathLike = Union[str, os.PathLike]
#: the default minimum gap between picks, in dump intervals (median step difference of the frames)
DEFAULT_GAP_INTERVALS = 5


@dataclass
class SelectedFrame:
    frame: int
    step: int
    value: float                      # largest per-atom uncertainty of the frame
    atom_id: int                      # the atom that has it
    element: str
    atoms_above: int                  # atoms above the threshold in this frame
    distance: Optional[float] = None  # descriptor distance to the nearest earlier pick (None for the first)


@dataclass
class Selection:
    """The frames picked for labelling, in pick order, and how they were picked."""

    frames: List[SelectedFrame]
    threshold: float
    column: str
    n_max: int
    min_gap: int
    n_candidates: int
    descriptor: dict = field(default_factory=dict)
    file: Optional[str] = None

    @property
    def frame_indices(self) -> List[int]:
        return [f.frame for f in self.frames]

    @property
    def steps(self) -> List[int]:
        return [f.step for f in self.frames]

    def to_dict(self) -> dict:
        return {"rule": "farthest-point on structural descriptor among frames with max uncertainty > threshold, "
                        "min step gap", "threshold": self.threshold, "column": self.column, "n_max": self.n_max,
                "min_gap": self.min_gap, "n_candidates": self.n_candidates, "n_selected": len(self.frames),
                "descriptor": self.descriptor, "file": self.file, "frames": [asdict(f) for f in self.frames]}


def default_min_gap(steps: np.ndarray) -> int:
    """``DEFAULT_GAP_INTERVALS`` times the median step difference between consecutive frames."""
    if len(steps) < 2:
        return 0
    return int(DEFAULT_GAP_INTERVALS * np.median(np.diff(np.asarray(steps))))


def select_frames(traj: UncertaintyTrajectory, threshold: float, n: int, column="total",
                  min_gap: Optional[int] = None, cutoff: float = 5.0, width: float = 0.1) -> Selection:
    """Pick at most ``n`` frames above ``threshold`` for labelling (the rule of this module's docstring).

    ``min_gap`` is in MD steps (default :func:`default_min_gap`); ``cutoff`` and ``width`` (A) set the
    :func:`frame_descriptor`.
    """
    kind = column_kind(column)
    if n < 0:
        raise AnalysisError(f"--select {n}: the number of frames must be 0 or more", "give e.g. --select 20")
    gap = default_min_gap(traj.steps) if min_gap is None else int(min_gap)
    if gap < 0:
        raise AnalysisError(f"--min-gap {gap}: a step gap must be 0 or more", "give e.g. --min-gap 100")
    u = traj.values(kind)
    fmax = u.max(axis=1)
    argmax = u.argmax(axis=1)
    cand = np.flatnonzero(fmax > threshold)
    species = element_order(traj.elements)
    desc_info = {"kind": "smeared pair-distance histograms (global per element pair + around the most "
                         "uncertain atom)", "cutoff": cutoff, "width": width}
    sel = Selection([], float(threshold), kind, int(n), gap, int(len(cand)), desc_info)
    if n == 0 or len(cand) == 0:
        return sel
    desc = {}

    def descriptor(f):
        if f not in desc:
            desc[f] = frame_descriptor(traj.positions(f), traj.elements, traj.box(f), centre=int(argmax[f]),
                                       cutoff=cutoff, width=width, species=species)
        return desc[f]

    steps = np.asarray(traj.steps, dtype=np.int64)
    value = fmax[cand]
    nearest = np.full(len(cand), np.inf)  # descriptor distance to the nearest pick so far
    alive = np.ones(len(cand), dtype=bool)  # not picked, and >= gap steps from every pick
    # the first pick: the largest uncertainty, ties to the earlier frame
    best = int(np.lexsort((cand, -value))[0])
    picked, distances = [], []
    while True:
        picked.append(best)
        distances.append(None if len(picked) == 1 else float(nearest[best]))
        alive &= np.abs(steps[cand] - steps[cand[best]]) >= gap
        alive[best] = False
        idx = np.flatnonzero(alive)
        if len(picked) == n or len(idx) == 0:
            break
        last = descriptor(int(cand[best]))
        for i in idx:
            nearest[i] = min(nearest[i], float(np.linalg.norm(descriptor(int(cand[i])) - last)))
        best = int(idx[np.lexsort((cand[idx], -value[idx], -nearest[idx]))[0]])
    picked = [int(cand[i]) for i in picked]
    for f, dist in zip(picked, distances):
        a = int(argmax[f])
        sel.frames.append(SelectedFrame(frame=f, step=int(steps[f]), value=float(fmax[f]), atom_id=int(traj.ids[a]),
                                        element=str(traj.elements[a]), atoms_above=int((u[f] > threshold).sum()),
                                        distance=dist))
    return sel


def write_selection(traj: UncertaintyTrajectory, selection: Selection, path: PathLike) -> Path:
    """Write the picked frames as extxyz, ready for a DFT code.

    Each frame has positions, cell, pbc and elements; the per-atom arrays ``forces_std``
    (+ ``_epistemic``, ``_aleatoric`` where known) in the trajectory's unit and ``id`` (LAMMPS
    atom id); ``info``: ``step``, ``frame``, ``source``, ``forces_std_unit``, ``forces_std_max``,
    ``selection_rank``. No forces or energies: the model's are not labels.
    """
    frames = []
    for rank, f in enumerate(selection.frames):
        atoms = traj.to_atoms(f.frame)
        atoms.info.update({"forces_std_max": f.value, "selection_rank": rank,
                           "selection_threshold": selection.threshold})
        frames.append(atoms)
    buf = io.StringIO()
    if frames:
        ase.io.write(buf, frames, format="extxyz")
    out = write_atomic(path, buf.getvalue())
    selection.file = str(out)
    return out
