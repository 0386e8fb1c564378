"""The one registry of data keys.

Every dictionary of tensors that travels between bnnmd's data layer, model,
training loop and exporter uses these names. The shape of each entry is given in
the comment; ``num_atoms`` and ``num_edges`` count over all frames of a batch.

Sample dimension
----------------
Model outputs that depend on the parameters carry a leading sample dimension
``k`` (posterior samples, parallel chains, ensemble members or dropout masks):
``TOTAL_ENERGY`` predicted by the model is ``(k, num_frames)``, ``FORCES`` is
``(k, num_atoms, 3)``. Reference labels from data have no sample dimension.
"""

from typing import Final

# ---- per atom --------------------------------------------------------------
POSITIONS: Final[str] = "pos"  # (num_atoms, 3) float, length unit of the dataset
ATOMIC_NUMBERS: Final[str] = "atomic_numbers"  # (num_atoms,) int64
ATOM_TYPE: Final[str] = "atom_type"  # (num_atoms,) int64 index into type_names
BATCH: Final[str] = "batch"  # (num_atoms,) int64 frame index of each atom
FORCES: Final[str] = "forces"  # (num_atoms, 3) float, energy / length
ENERGY_MASK: Final[str] = "energy_mask"  # (num_atoms,) float, optional: 1 = the atom's energy counts,
# 0 = it does not (LAMMPS ghost atoms); forces are computed on all atoms either way

# ---- per edge (directed, full list: both i->j and j->i) --------------------
EDGE_INDEX: Final[str] = "edge_index"  # (2, num_edges) int64: [centre i, neighbour j]
EDGE_CELL_SHIFT: Final[str] = "edge_cell_shift"  # (num_edges, 3) float: integer image of j
EDGE_SHIFT: Final[str] = "edge_shift"  # (num_edges, 3) float: cartesian, cell_shift @ cell
# edge vector r_ij = pos[j] - pos[i] + edge_shift

# ---- per frame -------------------------------------------------------------
TOTAL_ENERGY: Final[str] = "total_energy"  # (num_frames,) float
STRESS: Final[str] = "stress"  # (num_frames, 3, 3) float, energy / length^3, ASE's sign: (1/V) dE/d(strain)
CELL: Final[str] = "cell"  # (num_frames, 3, 3) float, rows are lattice vectors
PBC: Final[str] = "pbc"  # (num_frames, 3) bool
NUM_ATOMS: Final[str] = "num_atoms"  # (num_frames,) int64
FRAME_INDEX: Final[str] = "frame_index"  # (num_frames,) int64 index in the source dataset

ALL_KEYS: Final = (
    POSITIONS, ATOMIC_NUMBERS, ATOM_TYPE, BATCH, FORCES, ENERGY_MASK,
    EDGE_INDEX, EDGE_CELL_SHIFT, EDGE_SHIFT,
    TOTAL_ENERGY, STRESS, CELL, PBC, NUM_ATOMS, FRAME_INDEX,
)

# ---- model outputs (leading sample dimension k) -----------------------------
ATOMIC_ENERGY: Final[str] = "atomic_energy"  # (k, num_atoms)
TOTAL_ENERGY_STD: Final[str] = "total_energy_std"  # (k, num_frames) sigma_E
FORCES_STD: Final[str] = "forces_std"  # (k, num_atoms) sigma_F, one per atom for x, y, z
VIRIAL: Final[str] = "virial"  # (k, num_frames, 3, 3) -sum_edges r_ij (x) dE/dr_ij = -V * stress
VIRIAL_STD: Final[str] = "virial_std"  # (k, num_frames) sigma_W of each virial component (energy);
# 0 for a model without a stress head

MODEL_OUTPUTS: Final = (TOTAL_ENERGY, ATOMIC_ENERGY, FORCES, TOTAL_ENERGY_STD, FORCES_STD, VIRIAL, VIRIAL_STD)
