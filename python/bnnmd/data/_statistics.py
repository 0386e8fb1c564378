"""Per-species statistics the model is initialised from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Dict

import numpy as np

from bnnmd.data._dataset import AtomicDataset
from bnnmd.data._errors import DataError
from bnnmd.data._graph import neighbour_list
from bnnmd.data._types import TypeMapper


def species_counts(dataset: AtomicDataset, type_mapper: TypeMapper) -> np.ndarray:
    """``(num_frames, num_types)`` number of atoms of each type in each frame."""
    types = type_mapper.types_of(dataset.atomic_numbers, file=dataset.source)
    frame = np.repeat(np.arange(len(dataset)), dataset.n_atoms)
    counts = np.zeros((len(dataset), type_mapper.num_types))
    np.add.at(counts, (frame, types), 1.0)
    return counts


def per_species_energy(dataset: AtomicDataset, type_mapper: TypeMapper) -> np.ndarray:
    """Mean energy per atom of each type, by least squares on the total energies.

    Solves ``counts @ e = E`` in the least-squares sense. When every frame has
    the same composition (one molecule, as in rMD17) the system is rank one and
    the minimum-norm solution is returned: ``counts @ e`` still equals the mean
    energy, which is what the model's shift needs.
    """
    if dataset.energy is None:
        raise DataError("is missing, per-species energies need it", file=dataset.source,
                        field="energy", fix="use a dataset with reference energies")
    e, *_ = np.linalg.lstsq(species_counts(dataset, type_mapper), dataset.energy, rcond=None)
    return e


def force_rms(dataset: AtomicDataset) -> float:
    """Root mean square of all force components."""
    if dataset.forces is None:
        raise DataError("is missing, the force RMS needs it", file=dataset.source, field="forces",
                        fix="use a dataset with reference forces")
    return float(np.sqrt(np.mean(dataset.forces ** 2)))


def virial_rms(dataset: AtomicDataset) -> float:
    """Root mean square of the virial components per atom, ``sqrt(mean_frames |W|^2 / (9 N))`` with
    ``W = -V * stress`` (energy unit): the scale of the model's virial sigma."""
    if dataset.stress is None:
        raise DataError("is missing, the virial RMS needs it", file=dataset.source, field="stress",
                        fix="use a dataset with stresses")
    volume = np.abs(np.linalg.det(dataset.cell))
    w = dataset.stress * volume[:, None, None]
    return float(np.sqrt(np.mean(np.sum(w ** 2, axis=(1, 2)) / (9.0 * dataset.n_atoms))))


def average_num_neighbours(dataset: AtomicDataset, cutoff: float) -> float:
    """Mean number of neighbours within ``cutoff`` per atom (periodic images included)."""
    edges = 0
    for i in range(len(dataset)):
        f = dataset.frame(i)
        edges += neighbour_list(f["positions"], cutoff, f["cell"], f["pbc"]).num_edges
    return edges / dataset.num_atoms_total


@dataclass
class DatasetStatistics:
    """What the model needs from its training data, in the dataset's units."""

    type_names: list
    energy_unit: str
    length_unit: str
    cutoff: float
    per_species_energy: Dict[str, float]  # energy per atom of each type (least squares)
    force_rms: float  # RMS of force components
    avg_num_neighbours: float  # per atom, within cutoff
    num_frames: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def compute_statistics(dataset: AtomicDataset, type_mapper: TypeMapper, cutoff: float) -> DatasetStatistics:
    """Per-species energy, force RMS and average number of neighbours of ``dataset``."""
    e = per_species_energy(dataset, type_mapper)
    return DatasetStatistics(
        type_names=list(type_mapper.type_names),
        energy_unit=dataset.energy_unit, length_unit=dataset.length_unit, cutoff=float(cutoff),
        per_species_energy={n: float(v) for n, v in zip(type_mapper.type_names, e)},
        force_rms=force_rms(dataset), avg_num_neighbours=average_num_neighbours(dataset, cutoff),
        num_frames=len(dataset),
    )
