"""Trajectories with per-atom force uncertainties: LAMMPS dumps (read by MDAnalysis) and extxyz (ASE).

A LAMMPS run with ``compute unc all bnn/atom`` dumps ``c_unc[1]`` (total),
``c_unc[2]`` (epistemic) and ``c_unc[3]`` (aleatoric force std, LAMMPS force
units). MDAnalysis's ``LAMMPSDUMP`` reader reads positions, boxes and these
columns (``additional_columns``); the topology comes from the LAMMPS data file
(MDAnalysis ``DATA`` parser) or from the dump itself. An extxyz (written by ASE)
carries the same numbers as per-atom arrays ``forces_std``,
``forces_std_epistemic`` and ``forces_std_aleatoric`` (eV/A); it is read with
ASE and handed to MDAnalysis as an in-memory trajectory.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import ase
import ase.io
import MDAnalysis as mda
import numpy as np
from ase.data import atomic_masses, atomic_numbers, chemical_symbols
from MDAnalysis.coordinates.memory import MemoryReader
from MDAnalysis.lib.mdamath import triclinic_vectors
from MDAnalysis.lib.util import anyopen

from bnnmd.analysis._errors import AnalysisError
from bnnmd.units import LAMMPS_UNITS

PathLike = Union[str, os.PathLike]

#: The uncertainty kinds, in the order of the columns of ``compute bnn/atom`` (c_unc[1], [2], [3]).
KINDS: Tuple[str, ...] = ("total", "epistemic", "aleatoric")
#: Per-atom array names of each kind in an extxyz (those of ``BNNCalculator.results``).
EXTXYZ_ARRAYS: Dict[str, str] = {"total": "forces_std", "epistemic": "forces_std_epistemic",
                                 "aleatoric": "forces_std_aleatoric"}
#: ``atom_style`` of a LAMMPS data file -> the column description MDAnalysis's DATA parser needs.
ATOM_STYLES: Dict[str, str] = {
    "atomic": "id type x y z",
    "charge": "id type charge x y z",
    "full": "id resid type charge x y z",
    "molecular": "id resid type x y z",
    "bond": "id resid type x y z",
    "angle": "id resid type x y z",
}
_COORDINATES = (("x", "y", "z"), ("xs", "ys", "zs"), ("xu", "yu", "zu"), ("xsu", "ysu", "zsu"))
_UNC_COLUMN = re.compile(r"^c_([A-Za-z0-9_]+)\[(\d+)\]$")


def column_kind(column: Union[int, str]) -> str:
    """``1``/``"1"``/``"total"`` -> ``"total"``, 2 -> epistemic, 3 -> aleatoric (the c_unc[N] columns).

    >>> column_kind(2), column_kind("aleatoric")
    ('epistemic', 'aleatoric')
    """
    text = str(column).strip().lower()
    if text in KINDS:
        return text
    if text in ("1", "2", "3"):
        return KINDS[int(text) - 1]
    raise AnalysisError(f"unknown uncertainty column {column!r}",
                        "use 1 (total), 2 (epistemic) or 3 (aleatoric), as c_unc[1..3] of compute bnn/atom")


def check_elements(symbols: Sequence[str], where: str) -> List[str]:
    out = []
    for s in symbols:
        name = str(s).strip()
        name = name[:1].upper() + name[1:].lower()
        if name not in atomic_numbers or name == "X":
            raise AnalysisError(f"unknown element {s!r} in {where}",
                                "give chemical symbols such as C H O, one per LAMMPS atom type in type order "
                                "(as in pair_coeff * * model.pth C H O)")
        out.append(name)
    return out


def element_from_mass(mass: float, atom_type: str) -> str:
    """The element whose standard atomic mass is within 0.1 of ``mass`` (unique), else an error."""
    diff = np.abs(atomic_masses[1:] - mass)
    close = np.flatnonzero(diff < 0.1)
    if len(close) != 1:
        what = "no element has" if len(close) == 0 else \
            f"{', '.join(chemical_symbols[i + 1] for i in close)} all have"
        raise AnalysisError(f"atom type {atom_type} has mass {mass:g} in the data file and {what} that mass",
                            "give the element of each atom type with --elements (e.g. --elements C H O, in type "
                            "order as in pair_coeff)")
    return chemical_symbols[int(close[0]) + 1]


@dataclass
class UncertaintyTrajectory:
    """Frames, per-atom uncertainties and the MDAnalysis universe that reads the positions.

    Attributes
    ----------
    universe : MDAnalysis.Universe
        The trajectory (LAMMPSDUMP reader, or a MemoryReader for extxyz input).
        ``universe.trajectory[i]`` is frame ``i``; for extxyz input the positions
        there are rotated into MDAnalysis's box orientation (distances unchanged).
    elements : str array [n_atoms]; ids : LAMMPS atom ids (1-based frame index + 1 for extxyz)
    types : LAMMPS atom types as strings, or None for extxyz
    steps : int array [n_frames], the MD step of each frame (extxyz: ``info["step"]``, else the index)
    uncertainty : kind -> float array [n_frames, n_atoms]; kinds present among :data:`KINDS`
    unit : the unit of the uncertainties (e.g. ``kcal/mol/A``)
    pbc : the periodic directions (a LAMMPS dump: the box-bounds flags of its first frame)
    """

    universe: object
    source: str
    format: str
    elements: np.ndarray
    ids: np.ndarray
    types: Optional[np.ndarray]
    steps: np.ndarray
    uncertainty: Dict[str, np.ndarray]
    unit: str
    pbc: np.ndarray
    topology: Optional[str] = None
    element_source: str = ""
    notes: List[str] = field(default_factory=list)
    _frames: Optional[list] = field(default=None, repr=False)

    @property
    def n_frames(self) -> int:
        return len(self.steps)

    @property
    def n_atoms(self) -> int:
        return len(self.elements)

    @property
    def kinds(self) -> List[str]:
        return [k for k in KINDS if k in self.uncertainty]

    def values(self, kind: str = "total") -> np.ndarray:
        """The uncertainty of one kind, ``[n_frames, n_atoms]``."""
        kind = column_kind(kind)
        if kind not in self.uncertainty:
            if self.format == "extxyz":
                fix = f"add the per-atom array {EXTXYZ_ARRAYS[kind]!r} to the frames, or choose --column total"
                what = f"per-atom array {EXTXYZ_ARRAYS[kind]!r}"
            else:
                n = KINDS.index(kind) + 1
                fix = (f"dump it (dump ... custom ... c_unc[{n}]; c_unc[1] total, [2] epistemic, [3] aleatoric), "
                       f"or choose --column {' or '.join(str(KINDS.index(k) + 1) for k in self.kinds)}")
                what = f"{kind} uncertainty column (c_unc[{n}] of compute bnn/atom)"
            raise AnalysisError(f"{self.source} has no {what}", fix)
        return self.uncertainty[kind]

    @property
    def periodic(self) -> bool:
        """True when the box is periodic in all three directions (distances use the minimum image)."""
        return bool(np.all(self.pbc))

    def _timestep(self, frame: int):
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} out of range (0..{self.n_frames - 1})")
        return self.universe.trajectory[frame]

    def positions(self, frame: int) -> np.ndarray:
        """Positions of frame ``frame`` as MDAnalysis reads them, float64 [n_atoms, 3]."""
        return np.array(self._timestep(frame).positions, dtype=np.float64)

    def box(self, frame: int) -> Optional[np.ndarray]:
        """MDAnalysis box ``[a, b, c, alpha, beta, gamma]`` of the frame, None when not fully periodic."""
        ts = self._timestep(frame)
        if not self.periodic or ts.dimensions is None:
            return None
        return np.array(ts.dimensions, dtype=np.float64)

    def to_atoms(self, frame: int, kinds: Optional[Sequence[str]] = None):
        """The frame as ``ase.Atoms``: positions, cell, pbc, elements; the uncertainties as per-atom arrays
        (:data:`EXTXYZ_ARRAYS` names, in :attr:`unit`), the LAMMPS atom id as array ``id``, and
        ``info``: ``step``, ``frame``, ``source``, ``forces_std_unit``."""
        if self._frames is not None:
            atoms = self._frames[frame].copy()
            atoms.calc = None
        else:
            ts = self._timestep(frame)
            cell = triclinic_vectors(ts.dimensions) if ts.dimensions is not None else np.zeros((3, 3))
            atoms = ase.Atoms(symbols=list(self.elements), positions=np.array(ts.positions, dtype=np.float64),
                              cell=np.array(cell, dtype=np.float64), pbc=self.pbc)
        for kind in (kinds or self.kinds):
            atoms.arrays[EXTXYZ_ARRAYS[kind]] = np.array(self.values(kind)[frame], dtype=np.float64)
        atoms.arrays["id"] = np.array(self.ids, dtype=np.int64)
        atoms.info.update({"step": int(self.steps[frame]), "frame": int(frame), "source": self.source,
                           "forces_std_unit": self.unit})
        return atoms


# ----------------------------------------------------------------------------------------------- LAMMPS dump


@dataclass
class _DumpHeader:
    n_atoms: int
    columns: List[str]
    pbc: np.ndarray
    rows: List[List[str]]
    n_lines: int


def _open(path: PathLike):
    return anyopen(str(path), "rt")


def _scan_dump(path: PathLike) -> _DumpHeader:
    """The first frame of a dump (header, columns, rows) and the number of lines, without MDAnalysis."""
    empty = AnalysisError(f"{path} is empty: it holds no complete frame",
                          "check that the LAMMPS run reached its first dump step (dump ID all custom N FILE ...) "
                          "and give the file it wrote")
    if os.path.getsize(path) == 0:  # (MDAnalysis's anyopen cannot sniff the compression of an empty file)
        raise empty
    with _open(path) as fh:
        head = []
        for line in fh:
            head.append(line.rstrip("\n"))
            if len(head) == 9:
                break
        if not head or not "".join(head).strip():
            raise empty
        if head[0].strip() != "ITEM: TIMESTEP":
            raise AnalysisError(f"{path} is not a LAMMPS dump (its first line is {head[0][:60]!r}, not "
                                "'ITEM: TIMESTEP')",
                                "write it with dump custom (dump d all custom N traj.dump id type x y z c_unc[*]); "
                                "an extxyz file needs the extension .xyz/.extxyz or --format extxyz")
        if len(head) < 9:
            raise empty
        try:
            n_atoms = int(head[3])
        except ValueError:
            raise AnalysisError(f"{path}: bad NUMBER OF ATOMS line {head[3]!r}",
                                "give an uncorrupted LAMMPS dump") from None
        # "ITEM: BOX BOUNDS [xy xz yz] pp pp ff": the last three words are the boundary flags, if any
        flags = [w for w in head[4].split()[3:] if w not in ("xy", "xz", "yz")]
        pbc = np.array([f == "pp" for f in flags] if len(flags) == 3 else [True] * 3)
        if not head[8].startswith("ITEM: ATOMS"):
            raise AnalysisError(f"{path}: line 9 is {head[8][:60]!r}, not 'ITEM: ATOMS ...'",
                                "give a dump written by dump custom (or dump atom)")
        columns = head[8].split()[2:]
        rows = []
        for line in fh:
            rows.append(line.split())
            if len(rows) == n_atoms:
                break
        n_lines = 9 + len(rows) + sum(1 for _ in fh)
    if n_atoms == 0 or len(rows) < n_atoms:
        raise empty
    return _DumpHeader(n_atoms, columns, pbc, rows, n_lines)


def _uncertainty_columns(path: PathLike, columns: List[str], compute: Optional[str]) -> Dict[str, str]:
    found: Dict[str, Dict[int, str]] = {}
    for c in columns:
        m = _UNC_COLUMN.match(c)
        if m:
            found.setdefault(m.group(1), {})[int(m.group(2))] = c
    fix = ("add the per-atom columns of compute bnn/atom to the dump: compute unc all bnn/atom, then "
           "dump d all custom N traj.dump id type x y z c_unc[1] c_unc[2] c_unc[3]")
    if compute is not None:
        if compute not in found:
            raise AnalysisError(f"{path} has no column c_{compute}[N] (columns: {' '.join(columns)})",
                                fix if not found else f"use --compute {' or '.join(sorted(found))}, or " + fix)
        name = compute
    elif not found:
        raise AnalysisError(f"{path} has no uncertainty columns (columns: {' '.join(columns)})", fix)
    elif "unc" in found or len(found) == 1:
        name = "unc" if "unc" in found else next(iter(found))
    else:
        raise AnalysisError(f"{path} has columns of several per-atom computes ({', '.join(sorted(found))}) and "
                            "none is named unc", "name the compute bnn/atom with --compute ID")
    cols = {KINDS[i - 1]: c for i, c in found[name].items() if 1 <= i <= 3}
    if not cols:
        raise AnalysisError(f"{path}: compute {name} has no columns 1..3", fix)
    return dict(sorted(cols.items(), key=lambda kv: KINDS.index(kv[0])))


def _read_data_header(data: PathLike) -> Tuple[int, Optional[str], bool]:
    """Number of atoms, MDAnalysis atom_style description, whether the file has a Masses section."""
    path = Path(data)
    if not path.is_file():
        raise AnalysisError(f"data file {data} not found", "give the LAMMPS data file of the run (read_data FILE)")
    n_atoms, style, masses, first_atom = None, None, False, None
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        text = line.split("#")[0].strip()
        m = re.match(r"^(\d+)\s+atoms$", text)
        if m and n_atoms is None:
            n_atoms = int(m.group(1))
        if text == "Masses":
            masses = True
        if text == "Atoms":
            comment = line.split("#", 1)[1].strip() if "#" in line else ""
            style = comment.split()[0] if comment else None
            for later in lines[i + 1:]:
                if later.split("#")[0].strip():
                    first_atom = later.split("#")[0].split()
                    break
            break
    if n_atoms is None:
        raise AnalysisError(f"{data} is not a LAMMPS data file (no 'N atoms' line)",
                            "give the data file the run read with read_data, or leave out --data")
    if style is None and first_atom is not None:  # no '# style' comment: guess from the number of columns
        style = {5: "atomic", 8: "atomic", 7: "full", 10: "full"}.get(len(first_atom))
    if style is not None and style not in ATOM_STYLES:
        raise AnalysisError(f"{data}: atom_style {style} is not supported by bnn-analyze",
                            f"write the data file with one of the atom styles {', '.join(ATOM_STYLES)}, or leave "
                            "out --data (the dump's type column is used)")
    return n_atoms, (ATOM_STYLES[style] if style else None), masses


def _type_elements(types: np.ndarray, elements: Sequence[str], source: str) -> np.ndarray:
    symbols = check_elements(elements, "--elements")
    out = []
    for t in types:
        try:
            i = int(t)
        except ValueError:
            raise AnalysisError(f"atom type {t!r} in {source} is not a number, so --elements cannot map it",
                                "give a dump/data file with numeric LAMMPS types") from None
        if not 1 <= i <= len(symbols):
            raise AnalysisError(f"{source} has atom type {i} but --elements names {len(symbols)} type(s) "
                                f"({' '.join(symbols)})",
                                "give one element per LAMMPS atom type, in type order (as in pair_coeff * * "
                                "model.pth C H O)")
        out.append(symbols[i - 1])
    return np.array(out, dtype=object)


def read_lammps_dump(path: PathLike, data: Optional[PathLike] = None, elements: Optional[Sequence[str]] = None,
                     compute: Optional[str] = None, units: Optional[str] = None) -> UncertaintyTrajectory:
    """Read a LAMMPS dump with the columns of ``compute bnn/atom`` through MDAnalysis.

    Parameters
    ----------
    path : ``dump ID group custom N FILE id type x y z c_unc[1] c_unc[2] c_unc[3] ...`` (any coordinate
        convention MDAnalysis reads; fx fy fz, element and other columns allowed; gzip allowed)
    data : the LAMMPS data file of the run (topology); without it the dump's own columns are the topology
    elements : element of each LAMMPS atom type, in type order (as pair_coeff). Default: the dump's
        ``element`` column, else the masses of the data file.
    compute : the ID of ``compute bnn/atom`` (default: ``unc``, or the only per-atom array compute dumped)
    units : the LAMMPS units style (``real``/``metal``), used for the unit label only
    """
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"trajectory {path} not found", "give the dump file written by the LAMMPS run")
    head = _scan_dump(path)
    cols = _uncertainty_columns(path, head.columns, compute)
    if "id" not in head.columns:
        raise AnalysisError(f"{path} has no id column", "dump the atom ids: dump ... custom N FILE id type x y z ...")
    if not any(all(c in head.columns for c in conv) for conv in _COORDINATES):
        raise AnalysisError(f"{path} has no coordinates (columns: {' '.join(head.columns)})",
                            "dump x y z (or xs ys zs, xu yu zu)")
    if units is not None and units not in LAMMPS_UNITS:
        raise AnalysisError(f"--units {units}: bnnmd's LAMMPS plugin supports {' and '.join(LAMMPS_UNITS)}",
                            "give the units style of the run, or leave --units out")
    kwargs = dict(format="LAMMPSDUMP", additional_columns=list(cols.values()), dt=1.0)
    has_masses = False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if data is not None:
                n_data, style, has_masses = _read_data_header(data)
                if n_data != head.n_atoms:
                    raise AnalysisError(
                        f"{data} has {n_data} atoms but {path} has {head.n_atoms} per frame",
                        "give the data file of the run that wrote the dump (the dump must hold all atoms: dump ID "
                        "all custom ...), or leave out --data to take the types from the dump's type column")
                if style is not None:
                    kwargs["atom_style"] = style
                universe = mda.Universe(str(data), str(path), topology_format="DATA", **kwargs)
            else:
                universe = mda.Universe(str(path), topology_format="LAMMPSDUMP", **kwargs)
        except AnalysisError:
            raise
        except Exception as exc:  # MDAnalysis raises ValueError, IndexError, ... on malformed input
            raise AnalysisError(f"MDAnalysis cannot read {path}" + (f" with {data}" if data else "") + f": {exc}",
                                "check that the files belong together and are complete LAMMPS data/dump "
                                "files") from None
    col = {c: i for i, c in enumerate(head.columns)}
    dump_ids = np.array([int(r[col["id"]]) for r in head.rows])
    order = np.argsort(dump_ids, kind="stable")
    ids = np.asarray(universe.atoms.ids, dtype=np.int64)
    if len(set(dump_ids.tolist())) != len(dump_ids):
        raise AnalysisError(f"{path}: atom ids repeat within the first frame",
                            "give a dump of one LAMMPS run with unique atom ids")
    if not np.array_equal(np.sort(dump_ids), ids):
        raise AnalysisError(f"the atom ids of {path} differ from those of {data}",
                            "give the data file of the run that wrote the dump, or leave out --data")

    # topology: elements of the LAMMPS types
    types = np.asarray(universe.atoms.types).astype(str) if hasattr(universe.atoms, "types") else None
    if elements:
        if types is None or "type" not in head.columns and data is None:
            raise AnalysisError(f"{path} has no type column, so --elements cannot be applied",
                                "dump the types (dump ... custom N FILE id type x y z ...) or give --data")
        symbols = _type_elements(types, elements, str(data or path))
        source = "--elements"
    elif "element" in head.columns:
        symbols = np.array(check_elements([head.rows[i][col["element"]] for i in order], f"{path} element column"),
                           dtype=object)
        source = "dump element column"
    elif data is not None and has_masses:
        masses = np.asarray(universe.atoms.masses, dtype=np.float64)
        per_type: Dict[str, str] = {}
        for t, m in zip(types, masses):
            if t not in per_type:
                per_type[t] = element_from_mass(float(m), t)
        symbols = np.array([per_type[t] for t in types], dtype=object)
        source = f"masses in {Path(data).name}"
    else:
        raise AnalysisError(f"no elements for the LAMMPS atom types of {path}"
                            + ("" if data is None else f" ({data} has no Masses section)"),
                            "give --elements C H O (one element per atom type, in type order, as in pair_coeff), "
                            "or --data with a Masses section, or dump an element column (dump_modify ID element "
                            "C H O)")

    lines_per_frame = head.n_atoms + 9
    n_frames = head.n_lines // lines_per_frame
    notes = []
    if head.n_lines % lines_per_frame:
        notes.append(f"the last frame of {path.name} is incomplete ({head.n_lines % lines_per_frame} of "
                     f"{lines_per_frame} lines) and was skipped")
    steps = np.zeros(n_frames, dtype=np.int64)
    unc = {k: np.zeros((n_frames, head.n_atoms)) for k in cols}
    try:
        for i, ts in enumerate(universe.trajectory[:n_frames]):
            steps[i] = ts.data["step"]
            for k, c in cols.items():
                if c not in ts.data:
                    raise AnalysisError(f"{path}: frame {i} (step {steps[i]}) has no column {c}",
                                        "dump the same columns in every frame")
                unc[k][i] = ts.data[c]
    except AnalysisError:
        raise
    except Exception as exc:
        raise AnalysisError(f"MDAnalysis cannot read frame {i} of {path}: {exc}",
                            "bnn-analyze needs a dump of a fixed set of atoms (dump ID all ...) with the same "
                            "columns in every frame") from None
    for k, v in unc.items():
        if not np.all(np.isfinite(v)):
            bad = np.argwhere(~np.isfinite(v))[0]
            raise AnalysisError(f"{path}: {cols[k]} is {v[tuple(bad)]} at frame {bad[0]} (step {steps[bad[0]]})",
                                "the run produced non-finite uncertainties; cut the trajectory before that step")
    unit = "LAMMPS force units"
    if units is not None:
        u = LAMMPS_UNITS[units]
        unit = f"{u['energy']}/{u['length']}"
    return UncertaintyTrajectory(
        universe=universe, source=str(path), format="lammpsdump", elements=symbols, ids=ids,
        types=types, steps=steps, uncertainty=unc, unit=unit, pbc=head.pbc,
        topology=None if data is None else str(data), element_source=source, notes=notes)


# ------------------------------------------------------------------------------------------------------- extxyz


def read_extxyz(path: PathLike) -> UncertaintyTrajectory:
    """Read an extxyz (e.g. written by ASE) whose frames carry the per-atom array ``forces_std``.

    ``forces_std_epistemic`` and ``forces_std_aleatoric`` are read when present. The step of a
    frame is ``info["step"]`` when present (else its index). Units: eV/A, or the frame's
    ``info["forces_std_unit"]`` (which bnn-analyze writes into its own selections).
    """
    path = Path(path)
    if not path.is_file():
        raise AnalysisError(f"trajectory {path} not found", "give the extxyz file")
    if os.path.getsize(path) == 0:
        raise AnalysisError(f"{path} is empty: it holds no frames", "give a trajectory with at least one frame")
    try:
        frames = ase.io.read(str(path), index=":", format="extxyz")
    except Exception as exc:
        raise AnalysisError(f"ASE cannot read {path} as extxyz: {exc}",
                            "give an extended XYZ file (ase.io.write(..., format='extxyz'))") from None
    if not frames:
        raise AnalysisError(f"{path} is empty: it holds no frames", "give a trajectory with at least one frame")
    first = frames[0]
    n = len(first)
    symbols = np.array(first.get_chemical_symbols(), dtype=object)
    for i, a in enumerate(frames):
        if len(a) != n or list(a.get_chemical_symbols()) != list(symbols):
            raise AnalysisError(f"{path}: frame {i} has other atoms than frame 0 ({len(a)} vs {n} atoms)",
                                "analyse a trajectory of one fixed system")
    unc = {}
    for kind, name in EXTXYZ_ARRAYS.items():
        have = [name in a.arrays for a in frames]
        if all(have):
            unc[kind] = np.array([a.arrays[name] for a in frames], dtype=np.float64).reshape(len(frames), n)
        elif kind == "total":
            missing = have.index(False)
            arrays = ", ".join(k for k in frames[missing].arrays if k not in ("numbers", "positions"))
            raise AnalysisError(
                f"{path}: frame {missing} has no per-atom array 'forces_std' (arrays: {arrays or 'none'})",
                "store the uncertainty before writing each frame: atoms.arrays['forces_std'] = "
                "atoms.calc.results['forces_std'] (bnnmd.analysis.attach_uncertainty(atoms) copies all three)")
    for k, v in unc.items():
        if not np.all(np.isfinite(v)):
            raise AnalysisError(f"{path}: {EXTXYZ_ARRAYS[k]} has non-finite values",
                                "remove the frames with NaN/inf uncertainties")
    steps = []
    for i, a in enumerate(frames):
        s = a.info.get("step", a.info.get("timestep", i))
        try:
            steps.append(int(s))
        except (TypeError, ValueError):
            raise AnalysisError(f"{path}: frame {i} has a non-integer step {s!r}",
                                "store the MD step as an integer in atoms.info['step'], or leave it out") from None
    pbc = np.array(first.pbc, dtype=bool)
    for i, a in enumerate(frames):
        if not np.array_equal(a.pbc, pbc):
            raise AnalysisError(f"{path}: frame {i} has pbc {a.pbc.tolist()}, frame 0 {pbc.tolist()}",
                                "analyse frames of one periodicity")
    periodic = bool(pbc.all())
    coords = np.zeros((len(frames), n, 3), dtype=np.float32)
    dims = np.zeros((len(frames), 6), dtype=np.float32) if periodic else None
    for i, a in enumerate(frames):
        if periodic:
            # MDAnalysis boxes put a along x and b in the xy plane: rotate the positions with the cell
            d = a.cell.cellpar()
            dims[i] = d
            coords[i] = a.cell.scaled_positions(a.positions) @ np.asarray(triclinic_vectors(d), dtype=np.float64)
        else:
            coords[i] = a.positions
    universe = mda.Universe.empty(n, trajectory=False)
    universe.add_TopologyAttr("elements", list(symbols))
    universe.add_TopologyAttr("ids", np.arange(1, n + 1))
    universe.load_new(coords, format=MemoryReader, dimensions=dims, dt=1.0)
    unit = str(first.info.get("forces_std_unit", "eV/A"))
    return UncertaintyTrajectory(
        universe=universe, source=str(path), format="extxyz", elements=symbols,
        ids=np.array([int(x) for x in first.arrays["id"]]) if "id" in first.arrays else np.arange(1, n + 1),
        types=None, steps=np.array(steps, dtype=np.int64), uncertainty=unc, unit=unit, pbc=pbc,
        element_source="extxyz symbols", _frames=frames)


def read_trajectory(path: PathLike, data: Optional[PathLike] = None, elements: Optional[Sequence[str]] = None,
                    format: str = "auto", compute: Optional[str] = None,
                    units: Optional[str] = None) -> UncertaintyTrajectory:
    """Read a LAMMPS dump (:func:`read_lammps_dump`) or an extxyz (:func:`read_extxyz`).

    ``format="auto"`` takes ``.xyz``/``.extxyz`` (optionally ``.gz``) as extxyz and anything else
    as a LAMMPS dump.
    """
    if format not in ("auto", "lammpsdump", "extxyz"):
        raise AnalysisError(f"unknown format {format!r}", "use auto, lammpsdump or extxyz")
    if format == "auto":
        suffixes = [s.lower() for s in Path(path).suffixes]
        format = "extxyz" if any(s in (".xyz", ".extxyz") for s in suffixes[-2:]) else "lammpsdump"
    if format == "extxyz":
        if data is not None or elements or compute or units:
            raise AnalysisError("--data, --elements, --compute and --units apply to LAMMPS dumps; an extxyz names "
                                "its elements and is in eV/A", "leave them out for extxyz input")
        return read_extxyz(path)
    return read_lammps_dump(path, data=data, elements=elements, compute=compute, units=units)
