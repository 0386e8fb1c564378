"""Datasets, splits, statistics and graphs.

Readers turn rMD17 npz, sGDML npz and anything ASE reads into one
:class:`AtomicDataset`; :class:`TypeMapper` maps elements to type indices;
:func:`protocol_split` reproduces the paper's splits and saves them as JSON;
:func:`neighbour_list` builds radius graphs (periodic images included) and
:class:`GraphDataset` batches frames into one flat graph. Bad input raises
:class:`DataError` naming the file, the field and the fix.
"""

from importlib import resources
from pathlib import Path

from bnnmd.data import keys
from bnnmd.data._batch import GraphDataset
from bnnmd.data._dataset import AtomicDataset
from bnnmd.data._errors import DataError
from bnnmd.data._graph import NeighbourGraph, neighbour_list
from bnnmd.data._readers import read_ase, read_dataset, read_rmd17, read_sgdml, write_extxyz
from bnnmd.data._split import PROTOCOLS, Split, SplitPart, protocol_split, random_split
from bnnmd.data._statistics import (
    DatasetStatistics,
    average_num_neighbours,
    compute_statistics,
    force_rms,
    per_species_energy,
    species_counts,
    virial_rms,
)
from bnnmd.data._types import TypeMapper

#: Real data shipped with bnnmd (see ``_bundled/PROVENANCE.md``): name -> file in ``_bundled``.
_BUNDLED_FILES = {
    "rmd17_ethanol_train": "rmd17_ethanol_train.npz",
    "rmd17_ethanol_test": "rmd17_ethanol_test.npz",
    "water_gfn2_train": "water_gfn2_train.extxyz.gz",  # 32 H2O, periodic, GFN2-xTB, strained cells
    "water_gfn2_test": "water_gfn2_test.extxyz.gz",
    "water_gfn2_ood": "water_gfn2_ood.extxyz.gz",  # hot (600-1000 K) and compressed frames
}
BUNDLED = tuple(_BUNDLED_FILES)


def bundled_path(name: str) -> Path:
    """Path of a bundled data file, e.g. ``bundled_path("rmd17_ethanol_train")``."""
    if name not in _BUNDLED_FILES:
        raise DataError(f"unknown bundled dataset {name!r}", field="name",
                        fix=f"use one of {', '.join(BUNDLED)}")
    return Path(str(resources.files("bnnmd.data") / "_bundled" / _BUNDLED_FILES[name]))


def resolve_data_path(spec: str) -> Path:
    """``bundled:NAME`` -> the bundled file; anything else is a path."""
    if spec.startswith("bundled:"):
        return bundled_path(spec.split(":", 1)[1])
    return Path(spec)


def bundled_dataset(name: str) -> AtomicDataset:
    """A bundled dataset, read with :func:`read_dataset`."""
    return read_dataset(bundled_path(name))


__all__ = [
    "AtomicDataset", "BUNDLED", "DataError", "DatasetStatistics", "GraphDataset",
    "NeighbourGraph", "PROTOCOLS", "Split", "SplitPart", "TypeMapper",
    "average_num_neighbours", "bundled_dataset", "bundled_path", "compute_statistics",
    "force_rms", "keys", "neighbour_list", "per_species_energy", "protocol_split",
    "random_split", "read_ase", "read_dataset", "read_rmd17", "read_sgdml", "resolve_data_path", "species_counts",
    "virial_rms", "write_extxyz",
]
