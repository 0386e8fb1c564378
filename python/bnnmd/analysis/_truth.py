"""Ground truth for a trajectory's uncertainty: the model's true force error on DFT-labelled frames.

For each chosen frame of an :class:`~bnnmd.analysis.UncertaintyTrajectory` (a molecule, or a
periodic box labelled in its cell), the
exported model predicts forces and per-atom stds (:class:`bnnmd.calculator.BNNCalculator`, the
C++ evaluator LAMMPS uses) and a labeller (:class:`bnnmd.label.PySCFLabeller`) gives the
reference forces. The per-atom error is ``|F_model - F_DFT| / sqrt(3)``: the RMS error per
component, on the scale of the per-component stds and of a force RMSE.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import ase
import numpy as np
from MDAnalysis.lib.mdamath import triclinic_vectors

from bnnmd import units
from bnnmd.calculator import BNNCalculator
from bnnmd.deploy import read_metadata
from bnnmd.label import LABEL_UNITS, LabelError, label_frames


@dataclass
class TruthFrames:
    """Per labelled frame (in trajectory order): the largest true per-atom error and predicted stds."""

    frames: List[int]
    steps: List[int]
    max_error: List[float]  # max over atoms of |dF| / sqrt(3), in ``unit`` (the model's force unit)
    max_std: List[float]  # max over atoms of the calibrated total std
    max_std_epistemic: List[float]
    max_std_aleatoric: List[float]
    worst_atom: List[int]  # index of the atom with the largest true error
    dft_energy: List[float]
    model_energy: List[float]
    failed: Dict[int, str] = field(default_factory=dict)  # step -> why the label failed
    unit: str = "kcal/mol/A"

    def first_error_above(self, tolerance: float) -> Optional[int]:
        """The first labelled step whose largest per-atom error exceeds ``tolerance`` (None: none)."""
        for step, err in zip(self.steps, self.max_error):
            if err > tolerance:
                return step
        return None

    def to_dict(self) -> dict:
        return {"frames": self.frames, "steps": self.steps, "max_error": self.max_error, "max_std": self.max_std,
                "max_std_epistemic": self.max_std_epistemic, "max_std_aleatoric": self.max_std_aleatoric,
                "worst_atom": self.worst_atom, "dft_energy": self.dft_energy, "model_energy": self.model_energy,
                "failed": {str(k): v for k, v in self.failed.items()}, "unit": self.unit}


def per_atom_error(forces, reference) -> np.ndarray:
    """``|F - F_ref| / sqrt 3`` per atom: the RMS error per component, ``[n]``."""
    return np.linalg.norm(np.asarray(forces) - np.asarray(reference), axis=1) / np.sqrt(3.0)


def _from_ase_forces(energy_unit: str, length_unit: str) -> float:
    """The factor from the calculator's eV/A to ``energy_unit/length_unit``."""
    return units.energy_factor("eV", energy_unit) / units.length_factor("A", length_unit)


def frame_errors(model_path, dataset, n: Optional[int] = None) -> Dict[str, np.ndarray]:
    """On (the first ``n``) labelled frames of ``dataset``: each frame's largest true per-atom error
    ``|dF| / sqrt 3`` (``"max_error"``) and largest predicted total std (``"max_std"``), from the
    exported model, in the dataset's force unit. Their spread on test data is the in-distribution
    baseline of :func:`dft_truth` (e.g. its 99th percentile as the tolerance)."""
    calc = BNNCalculator(str(model_path))
    to_model = _from_ase_forces(dataset.energy_unit, dataset.length_unit)
    errors, stds = [], []
    for i in range(len(dataset) if n is None else min(n, len(dataset))):
        atoms = dataset.to_ase(i)
        atoms.calc = calc
        ref = dataset.forces[dataset.offsets[i]:dataset.offsets[i + 1]]
        errors.append(float(per_atom_error(atoms.get_forces() * to_model, ref).max()))
        stds.append(float(calc.results["forces_std"].max() * to_model))
    return {"max_error": np.array(errors), "max_std": np.array(stds)}


def molecule_atoms(traj, frame: int):
    """Frame ``frame`` as an isolated molecule (no cell): atoms moved to their images nearest to atom 0
    one bond at a time, so that a molecule split by the periodic box is whole again."""
    pos = traj.positions(frame)
    box = traj.box(frame)
    if box is not None:
        cell = np.asarray(triclinic_vectors(box), dtype=np.float64)
        inv = np.linalg.inv(cell)
        placed = [0]
        todo = list(range(1, len(pos)))
        while todo:  # attach the atom nearest (minimum image) to any placed atom
            best = None
            for j in todo:
                d = pos[j] - pos[placed]
                d -= np.round(d @ inv) @ cell
                r = np.linalg.norm(d, axis=1)
                i = int(np.argmin(r))
                if best is None or r[i] < best[0]:
                    best = (r[i], j, pos[placed[i]] + d[i])
            _, j, p = best
            pos[j] = p
            placed.append(j)
            todo.remove(j)
    return ase.Atoms(symbols=list(traj.elements), positions=pos)


def frame_atoms(traj, frame: int, periodic: bool = False):
    """Frame ``frame`` as ``ase.Atoms`` for a labeller: with ``periodic`` the frame as it is, with the
    run's cell (a condensed phase), else the isolated molecule (:func:`molecule_atoms`)."""
    if not periodic:
        return molecule_atoms(traj, frame)
    box = traj.box(frame)
    if box is None:
        raise ValueError("a periodic frame needs the trajectory's box; this trajectory has none")
    return ase.Atoms(symbols=list(traj.elements), positions=traj.positions(frame),
                     cell=np.asarray(triclinic_vectors(box), dtype=np.float64), pbc=True)


def dft_truth(traj, model_path, labeller, frames: Sequence[int], processes: int = 1,
              periodic: bool = False) -> TruthFrames:
    """Label ``frames`` of ``traj`` and compare them with the model in ``model_path`` (see the module),
    in the model's units. ``periodic``: the frames are labelled in the run's cell
    (:func:`frame_atoms`), else as isolated molecules."""
    meta = read_metadata(model_path)
    eu, lu = meta["energy_unit"], meta["length_unit"]
    frames = sorted(set(int(f) for f in frames))
    atoms_list = [frame_atoms(traj, f, periodic) for f in frames]
    labels = label_frames(labeller, atoms_list, processes)
    calc = BNNCalculator(str(model_path))
    to_model = _from_ase_forces(eu, lu)  # forces and stds; energies: to_model_energy
    to_model_energy = units.energy_factor("eV", eu)
    label_energy = units.energy_factor(LABEL_UNITS["energy"], eu)
    label_forces = label_energy / units.length_factor(LABEL_UNITS["length"], lu)
    out = TruthFrames([], [], [], [], [], [], [], [], [], unit=f"{eu}/{lu}")
    for f, atoms, label in zip(frames, atoms_list, labels):
        step = int(traj.steps[f])
        if isinstance(label, LabelError):
            out.failed[step] = str(label)
            continue
        atoms.calc = calc
        forces = atoms.get_forces() * to_model
        err = per_atom_error(forces, label.forces * label_forces)
        out.frames.append(f)
        out.steps.append(step)
        out.max_error.append(float(err.max()))
        out.worst_atom.append(int(err.argmax()))
        out.max_std.append(float(calc.results["forces_std"].max() * to_model))
        out.max_std_epistemic.append(float(calc.results["forces_std_epistemic"].max() * to_model))
        out.max_std_aleatoric.append(float(calc.results["forces_std_aleatoric"].max() * to_model))
        out.dft_energy.append(float(label.energy * label_energy))
        out.model_energy.append(float(atoms.get_potential_energy() * to_model_energy))
    return out
