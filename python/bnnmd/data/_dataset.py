"""The one dataset type: frames of atoms with reference energies and forces."""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import ase
import numpy as np
from ase.data import chemical_symbols

from bnnmd import units
from bnnmd.data._errors import DataError

ArrayLike = Union[np.ndarray, Sequence]


def check_finite(array: np.ndarray, field: str, file: Optional[str], frame_of_row=None) -> None:
    """Raise :class:`DataError` naming the first frames with NaN/inf in ``array``."""
    bad = ~np.isfinite(array)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(array), -1))[0])
        frames = rows if frame_of_row is None else np.unique(frame_of_row[rows])
        shown = ", ".join(str(int(f)) for f in frames[:5]) + (" ..." if len(frames) > 5 else "")
        raise DataError(
            f"contains NaN or inf values in {len(frames)} frame(s) (frames {shown})",
            file=file, field=field,
            fix="remove or recompute those frames before training (e.g. dataset.subset(good_indices))",
        )


class AtomicDataset:
    """Frames of atoms with energies and forces, stored as flat (ragged) arrays.

    Frames may have different numbers of atoms. Per-atom arrays are concatenated
    over frames; ``offsets[f]:offsets[f + 1]`` are the atoms of frame ``f``.

    Parameters
    ----------
    atomic_numbers : (num_atoms_total,) int
    positions : (num_atoms_total, 3) float, in ``length_unit``
    n_atoms : (num_frames,) int, atoms per frame
    energy : (num_frames,) float or None, in ``energy_unit``
    forces : (num_atoms_total, 3) float or None, in ``energy_unit / length_unit``
    stress : (num_frames, 3, 3) float or None, in ``energy_unit / length_unit**3``, ASE's sign
        (``atoms.get_stress()``: ``(1/V) dE/d(strain)``); only for fully periodic frames
    cell : (num_frames, 3, 3) float or None; rows are lattice vectors
    pbc : (num_frames, 3) bool or None (no periodicity)
    energy_unit, length_unit : names from :mod:`bnnmd.units`
    source : file the frames came from (used in error messages)
    frame_index : (num_frames,) int, index of each frame in ``source``

    Examples
    --------
    >>> ds = AtomicDataset.from_frames([1, 1], [[[0, 0, 0], [0, 0, 0.74]]] * 3, energy=[-1.0, -1.1, -0.9])
    >>> ds
    AtomicDataset(3 frames, 6 atoms, elements H, energy+forces: yes+no, units kcal/mol/A)
    >>> ds.subset([2, 0]).energy
    array([-0.9, -1. ])
    """

    def __init__(
        self,
        atomic_numbers: ArrayLike,
        positions: ArrayLike,
        n_atoms: ArrayLike,
        energy: Optional[ArrayLike] = None,
        forces: Optional[ArrayLike] = None,
        cell: Optional[ArrayLike] = None,
        pbc: Optional[ArrayLike] = None,
        energy_unit: str = "kcal/mol",
        length_unit: str = "A",
        source: Optional[str] = None,
        frame_index: Optional[ArrayLike] = None,
        stress: Optional[ArrayLike] = None,
    ):
        self.source = None if source is None else str(source)
        file = self.source
        self.energy_unit = units.check_energy_unit(energy_unit)
        self.length_unit = units.check_length_unit(length_unit)
        self.n_atoms = np.asarray(n_atoms, dtype=np.int64).reshape(-1)
        n_frames = len(self.n_atoms)
        if n_frames == 0:
            raise DataError("contains no frames", file=file,
                            fix="check that the file is the one you meant and is not truncated")
        if (self.n_atoms <= 0).any():
            raise DataError("has a frame with no atoms", file=file, field="n_atoms",
                            fix="remove empty frames")
        total = int(self.n_atoms.sum())
        self.offsets = np.concatenate([[0], np.cumsum(self.n_atoms)])

        self.atomic_numbers = np.asarray(atomic_numbers).reshape(-1)
        if self.atomic_numbers.shape != (total,):
            raise DataError(f"has {self.atomic_numbers.size} atomic numbers for {total} atoms",
                            file=file, field="atomic_numbers",
                            fix="give one atomic number per atom of every frame")
        if not np.issubdtype(self.atomic_numbers.dtype, np.integer):
            raise DataError(f"must be integers, got dtype {self.atomic_numbers.dtype}",
                            file=file, field="atomic_numbers", fix="store atomic numbers as integers")
        self.atomic_numbers = self.atomic_numbers.astype(np.int64)
        bad = (self.atomic_numbers < 1) | (self.atomic_numbers > 118)
        if bad.any():
            raise DataError(f"has atomic number {int(self.atomic_numbers[bad][0])}, "
                            "not an element (valid: 1..118)", file=file, field="atomic_numbers",
                            fix="store nuclear charges, not type indices")

        self.positions = self._float_array(positions, (total, 3), "positions", file)
        self.energy = None if energy is None else self._float_array(energy, (n_frames,), "energy", file)
        self.forces = None if forces is None else self._float_array(forces, (total, 3), "forces", file)
        atom_frame = np.repeat(np.arange(n_frames), self.n_atoms)
        check_finite(self.positions, "positions", file, atom_frame)
        if self.energy is not None:
            check_finite(self.energy, "energy", file)
        if self.forces is not None:
            check_finite(self.forces, "forces", file, atom_frame)

        if pbc is None:
            self.pbc = np.zeros((n_frames, 3), dtype=bool)
        else:
            pbc = np.asarray(pbc, dtype=bool)
            self.pbc = np.broadcast_to(pbc, (n_frames, 3)).copy() if pbc.size in (1, 3) else pbc
            if self.pbc.shape != (n_frames, 3):
                raise DataError(f"has shape {pbc.shape}, expected ({n_frames}, 3)", file=file,
                                field="pbc", fix="give three booleans per frame")
        if cell is None:
            if self.pbc.any():
                raise DataError("periodic boundaries requested without a cell", file=file,
                                field="cell", fix="give the cell (3x3, rows are lattice vectors)")
            self.cell = None
        else:
            cell = np.asarray(cell, dtype=np.float64)
            if cell.shape == (3, 3):
                cell = np.broadcast_to(cell, (n_frames, 3, 3)).copy()
            self.cell = self._float_array(cell, (n_frames, 3, 3), "cell", file)
            check_finite(self.cell, "cell", file)
            vol = np.abs(np.linalg.det(self.cell))
            if (self.pbc.any(axis=1) & (vol < 1e-12)).any():
                raise DataError("is singular (zero volume) in a periodic frame", file=file,
                                field="cell", fix="give three linearly independent lattice vectors")

        self.stress = None
        if stress is not None:
            self.stress = self._float_array(stress, (n_frames, 3, 3), "stress", file)
            check_finite(self.stress, "stress", file)
            if self.cell is None or not self.pbc.all():
                frame = 0 if self.cell is None else int(np.flatnonzero(~self.pbc.all(axis=1))[0])
                raise DataError(f"is given for frame {frame}, which is not periodic in x, y and z (a stress "
                                "needs a cell and a volume)", file=file, field="stress",
                                fix="drop the stress of non-periodic frames, or give them a periodic cell")

        if frame_index is None:
            self.frame_index = np.arange(n_frames, dtype=np.int64)
        else:
            self.frame_index = np.asarray(frame_index, dtype=np.int64).reshape(-1)
            if self.frame_index.shape != (n_frames,):
                raise DataError("does not have one entry per frame", file=file, field="frame_index")

    @staticmethod
    def _float_array(value, shape, field, file) -> np.ndarray:
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise DataError(f"is not numeric ({exc})", file=file, field=field,
                            fix="store it as a float array") from None
        if arr.shape != shape:
            if arr.size == int(np.prod(shape)) and field == "energy":
                arr = arr.reshape(shape)  # (F, 1) energies as in sGDML files
            else:
                raise DataError(f"has shape {arr.shape}, expected {shape}", file=file, field=field,
                                fix="make every per-frame and per-atom array agree with the "
                                    "number of frames and atoms")
        return arr

    # ---- construction ------------------------------------------------------
    @classmethod
    def from_frames(cls, atomic_numbers, positions, energy=None, forces=None, **kwargs) -> "AtomicDataset":
        """Build from same-size frames: ``atomic_numbers (N,)``, ``positions (F, N, 3)``."""
        z = np.asarray(atomic_numbers).reshape(-1)
        pos = np.asarray(positions, dtype=np.float64)
        file = kwargs.get("source")
        if pos.ndim != 3 or pos.shape[1:] != (len(z), 3):
            raise DataError(f"has shape {pos.shape}, expected (frames, {len(z)}, 3) for "
                            f"{len(z)} atomic numbers", file=file, field="positions",
                            fix="check that positions and atomic numbers belong together")
        n_frames = pos.shape[0]
        if forces is not None:
            forces = np.asarray(forces, dtype=np.float64)
            if forces.shape != pos.shape:
                raise DataError(f"has shape {forces.shape}, expected {pos.shape} (like the positions)",
                                file=file, field="forces",
                                fix="give one 3-vector per atom and frame")
            forces = forces.reshape(-1, 3)
        if energy is not None:
            energy = np.asarray(energy, dtype=np.float64)
            if energy.size != n_frames:
                raise DataError(f"has {energy.size} values for {n_frames} frames", file=file,
                                field="energy", fix="give one energy per frame")
        return cls(np.tile(z, n_frames), pos.reshape(-1, 3), np.full(n_frames, len(z)),
                   energy=energy, forces=forces, **kwargs)

    @classmethod
    def concatenate(cls, datasets: Sequence["AtomicDataset"]) -> "AtomicDataset":
        """The frames of ``datasets`` one after the other, in the units of the first (the others are
        converted). Energies, forces and stresses are kept where every dataset has them; frames
        without a cell get a zero one beside periodic frames."""
        if not datasets:
            raise DataError("no datasets to concatenate", fix="give at least one dataset")
        first = datasets[0]
        parts = [d.convert_units(first.energy_unit, first.length_unit) for d in datasets]
        both = lambda name: all(getattr(d, name) is not None for d in parts)  # noqa: E731
        cell = None
        if any(d.cell is not None for d in parts):
            cell = np.concatenate([np.zeros((len(d), 3, 3)) if d.cell is None else d.cell for d in parts])
        return cls(
            np.concatenate([d.atomic_numbers for d in parts]), np.concatenate([d.positions for d in parts]),
            np.concatenate([d.n_atoms for d in parts]),
            energy=np.concatenate([d.energy for d in parts]) if both("energy") else None,
            forces=np.concatenate([d.forces for d in parts]) if both("forces") else None,
            cell=cell, pbc=np.concatenate([d.pbc for d in parts]), energy_unit=first.energy_unit,
            length_unit=first.length_unit, source=first.source,
            stress=np.concatenate([d.stress for d in parts]) if both("stress") else None)

    # ---- access ------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.n_atoms)

    @property
    def num_atoms_total(self) -> int:
        return int(self.offsets[-1])

    @property
    def elements(self) -> np.ndarray:
        """Sorted unique atomic numbers."""
        return np.unique(self.atomic_numbers)

    def atoms_of(self, frame: int) -> slice:
        return slice(int(self.offsets[frame]), int(self.offsets[frame + 1]))

    def frame(self, i: int) -> Dict[str, Optional[np.ndarray]]:
        """One frame as a dict of NumPy arrays (``cell`` is None when non-periodic)."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"frame {i} out of range for a dataset of {len(self)} frames")
        i = i % len(self)
        s = self.atoms_of(i)
        return {
            "atomic_numbers": self.atomic_numbers[s],
            "positions": self.positions[s],
            "forces": None if self.forces is None else self.forces[s],
            "energy": None if self.energy is None else float(self.energy[i]),
            "cell": None if self.cell is None else self.cell[i],
            "pbc": self.pbc[i],
            "stress": None if self.stress is None else self.stress[i],
        }

    def subset(self, indices: ArrayLike) -> "AtomicDataset":
        """The frames ``indices`` (in that order) as a new dataset."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise DataError(f"index {int(idx.max() if idx.max() >= len(self) else idx.min())} is out "
                            f"of range for {len(self)} frames", file=self.source,
                            fix="use indices from 0 to len(dataset) - 1")
        atom_idx = np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) \
            if len(idx) else np.zeros(0, dtype=np.int64)
        return AtomicDataset(
            self.atomic_numbers[atom_idx], self.positions[atom_idx], self.n_atoms[idx],
            energy=None if self.energy is None else self.energy[idx],
            forces=None if self.forces is None else self.forces[atom_idx],
            cell=None if self.cell is None else self.cell[idx],
            pbc=self.pbc[idx], energy_unit=self.energy_unit, length_unit=self.length_unit,
            source=self.source, frame_index=self.frame_index[idx],
            stress=None if self.stress is None else self.stress[idx],
        )

    def convert_units(self, energy_unit: Optional[str] = None, length_unit: Optional[str] = None) -> "AtomicDataset":
        """A copy in other units (energies, forces, stresses, positions and cells converted)."""
        eu = energy_unit or self.energy_unit
        lu = length_unit or self.length_unit
        fe = units.energy_factor(self.energy_unit, eu)
        fl = units.length_factor(self.length_unit, lu)
        return AtomicDataset(
            self.atomic_numbers, self.positions * fl, self.n_atoms,
            energy=None if self.energy is None else self.energy * fe,
            forces=None if self.forces is None else self.forces * (fe / fl),
            cell=None if self.cell is None else self.cell * fl, pbc=self.pbc,
            energy_unit=eu, length_unit=lu, source=self.source, frame_index=self.frame_index,
            stress=None if self.stress is None else self.stress * (fe / fl ** 3),
        )

    def to_ase(self, i: int):
        """Frame ``i`` as an :class:`ase.Atoms` (positions in the dataset's length unit)."""
        f = self.frame(i)
        return ase.Atoms(numbers=f["atomic_numbers"], positions=f["positions"],
                         cell=f["cell"], pbc=f["pbc"])

    def __repr__(self) -> str:
        els = " ".join(chemical_symbols[z] for z in self.elements)
        yn = lambda x: "no" if x is None else "yes"  # noqa: E731
        return (f"AtomicDataset({len(self)} frames, {self.num_atoms_total} atoms, elements {els}, "
                f"energy+forces: {yn(self.energy)}+{yn(self.forces)}, "
                + ("stress: yes, " if self.stress is not None else "")
                + f"units {self.energy_unit}/{self.length_unit})")
