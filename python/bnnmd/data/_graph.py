"""Radius graphs (neighbour lists) with periodic images, built with vesin.

Conventions
-----------
* Full list: every pair appears twice, as ``i -> j`` and ``j -> i``.
* An edge ``(i, j, S)`` means atom ``j`` in lattice image ``S`` (integers) is a
  neighbour of atom ``i``; its vector is
  ``r_ij = positions[j] - positions[i] + S @ cell``.
* An edge is kept when ``|r_ij|**2 < cutoff**2`` (computed in float64 exactly
  as written above): the cutoff is *exclusive*, as in vesin and ASE. Only the
  self pair (``i == j`` with ``S == 0``) is left out; an atom's own periodic
  images (``i == j``, ``S != 0``) are edges when closer than the cutoff.
* Edges are sorted by ``i``, then ``j``, then ``S`` (lexicographic), so the
  result does not depend on vesin's internal order or thread count.

How vesin is used (and what it gets wrong)
------------------------------------------
The edges vesin 0.6.2 returns were right in every case checked against the
brute-force reference in ``tests/test_graph.py`` (cells shorter than the
cutoff, triclinic and rotated cells, slabs, wires, molecules). Its failures
are crashes and slowness, which this module steers around:

* its cell list is capped at 1e5 cells by scaling every direction by the same
  factor; a direction that truncates to 0 cells is a division by zero that
  kills the process (SIGFPE), e.g. a periodic 2000 x 2000 x 6 A box with
  cutoff 5 A, or a molecule with one atom 1e6 A away. The radius handed to
  vesin is raised (in 5% steps) until that cannot happen;
* with a non-periodic direction it bins atoms over their bounding box, which
  was slow (15 s for 3 atoms spread over 5e4 A in a slab) and crashes as
  above for wider spreads. So vesin never sees a non-periodic direction: gaps
  wider than 1.5 x the search radius between atoms along it are shrunk to that
  width (no pair within the cutoff crosses such a gap, so no edge changes),
  and the direction gets a fake lattice vector orthogonal to the periodic ones
  and longer than the atoms' extent plus the gap, then is declared periodic;
  edges with a non-zero shift along a fake vector are dropped;
* it is asked for a slightly larger radius than ``cutoff``, and the exact
  ``|r_ij|**2 < cutoff**2`` test is applied here to the real positions and
  cell, so edges at the boundary do not depend on its rounding or on the
  moved positions;
* zero, linearly dependent or non-finite cell vectors and non-finite
  positions are rejected here with :class:`DataError` (vesin would raise a
  bare RuntimeError, crash, or accept a nearly singular cell).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import numpy as np
import vesin

from bnnmd import _core
from bnnmd.data._errors import DataError

#: Atoms closer than this (length units) are at the same place: refused, as LAMMPS' pair_style bnn does.
SAME_PLACE: float = _core.same_place_distance

__all__ = ["NeighbourGraph", "neighbour_list"]

PbcLike = Union[None, bool, np.bool_, Sequence[bool], np.ndarray]

# vesin's cell list never uses more cells than this (cpu_cell_list.cpp).
_VESIN_MAX_CELLS = 1e5
# A periodic cell flatter than this (volume / product of vector lengths) is singular.
_MIN_RELATIVE_VOLUME = 1e-6
# More periodic images than this per atom means the cell is absurdly small for the cutoff.
_MAX_IMAGES = 10_000_000


@dataclass(frozen=True)
class NeighbourGraph:
    """A directed radius graph with periodic images (full list, both directions).

    Attributes
    ----------
    edge_index : numpy.ndarray
        ``(2, E)`` int64; row 0 is the centre atom ``i``, row 1 the neighbour ``j``.
    cell_shift : numpy.ndarray
        ``(E, 3)`` int64; the lattice image ``S`` of ``j`` (zero along
        non-periodic directions).
    shift_vector : numpy.ndarray
        ``(E, 3)`` float64; ``cell_shift @ cell`` (cell rows are lattice vectors),
        so the edge vector is ``positions[j] - positions[i] + shift_vector``.
    """

    edge_index: np.ndarray
    cell_shift: np.ndarray
    shift_vector: np.ndarray

    @property
    def num_edges(self) -> int:
        """Number of directed edges ``E``."""
        return int(self.edge_index.shape[1])

    def edge_vectors(self, positions: np.ndarray) -> np.ndarray:
        """``(E, 3)`` edge vectors ``positions[j] - positions[i] + shift_vector``."""
        pos = np.asarray(positions, dtype=np.float64)
        return np.take(pos, self.edge_index[1], axis=0) - np.take(pos, self.edge_index[0], axis=0) + self.shift_vector


def neighbour_list(
    positions,
    cutoff: float,
    cell=None,
    pbc: PbcLike = None,
) -> NeighbourGraph:
    """All pairs of atoms closer than ``cutoff``, periodic images included.

    Parameters
    ----------
    positions : array_like
        ``(N, 3)`` Cartesian positions (finite). ``N`` may be 0 or 1. Atoms may
        lie outside the cell; shifts refer to the positions as given.
    cutoff : float
        Radius, finite and > 0, in the unit of ``positions``. Pairs with
        ``|r_ij| < cutoff`` are edges (exclusive, like vesin and ASE).
    cell : array_like, optional
        ``(3, 3)`` lattice vectors as rows. Only rows of periodic directions are
        used; the others may be zero. Required when any direction is periodic.
    pbc : None, bool or 3 bools, optional
        Periodicity of each cell vector. ``None`` means no periodicity when
        ``cell`` is None and periodic in all three directions otherwise; a
        single bool applies to all three directions.

    Returns
    -------
    NeighbourGraph
        Full list (``i -> j`` and ``j -> i``) sorted by ``i``, ``j``, then shift.
        The only pair left out is an atom with itself in the same image; an
        atom's own periodic images are edges when closer than ``cutoff``.

    Raises
    ------
    DataError
        When ``cutoff`` is not finite and positive, ``positions`` is not a
        finite ``(N, 3)`` array, ``pbc`` is not None/bool/3 bools, a periodic
        direction has no cell, a zero or linearly dependent cell vector or
        non-finite cell values, the cell is so small that one atom would have
        more than 10 million periodic images, or two atoms sit at the same
        place (distance 0, which no radial basis can handle).

    Examples
    --------
    Two atoms 1 A apart give one edge each way:

    >>> g = neighbour_list([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], cutoff=1.5)
    >>> g.edge_index.tolist()
    [[0, 1], [1, 0]]
    >>> g.cell_shift.tolist()
    [[0, 0, 0], [0, 0, 0]]

    One atom in a periodic 2 A cube sees its six nearest images (cutoff 2.5 A):

    >>> g = neighbour_list([[0.5, 0.5, 0.5]], cutoff=2.5, cell=2.0 * np.eye(3))
    >>> g.num_edges
    6
    >>> g.cell_shift[0].tolist(), g.shift_vector[0].tolist()
    ([-1, 0, 0], [-2.0, 0.0, 0.0])

    A slab, periodic along x and y only:

    >>> g = neighbour_list([[0.0, 0.0, 0.0]], cutoff=2.5, cell=np.diag([2.0, 2.0, 0.0]),
    ...                    pbc=[True, True, False])
    >>> g.num_edges
    4
    """
    cutoff = _check_cutoff(cutoff)
    pos = _check_positions(positions)
    periodic = _check_pbc(pbc, cell)
    cell_used = _check_cell(cell, periodic)
    n_atoms = pos.shape[0]

    if n_atoms == 0:
        return _empty()

    # The radius vesin searches: a little larger than the cutoff, so that pairs
    # at the boundary do not depend on its rounding; the exact test is below.
    scale = float(np.max(np.abs(pos))) + float(np.max(np.abs(cell_used)))
    search = cutoff * (1.0 + 1e-6) + 1e-12 * scale

    box, vesin_pos = _vesin_box(pos, cell_used, periodic, search)
    _check_image_count(box, periodic, cutoff)
    search = _safe_search_radius(box, search)

    nl = vesin.NeighborList(cutoff=search, full_list=True)
    i, j, shift = nl.compute(vesin_pos, box, True, quantities="ijS")
    # (np.take is much faster than fancy indexing for rows of (E, 3) arrays)
    i = i.astype(np.int64)
    j = j.astype(np.int64)
    shift = np.asarray(shift).reshape(-1, 3)

    # The exact cutoff, with the real cell and positions. Self pairs (vesin never
    # returns them) and shifts along fake lattice vectors are dropped to be sure.
    vec = np.take(pos, j, axis=0) - np.take(pos, i, axis=0) + shift.astype(np.float64) @ cell_used
    d2 = np.einsum("ij,ij->i", vec, vec)
    keep = d2 < cutoff * cutoff
    same = np.flatnonzero(i == j)
    keep[same[~shift[same].any(axis=1)]] = False
    for d in np.flatnonzero(~periodic):
        keep &= shift[:, d] == 0
    if not keep.all():
        i, j, shift, d2 = i[keep], j[keep], np.take(shift, np.flatnonzero(keep), axis=0), d2[keep]

    same_place = d2 < SAME_PLACE * SAME_PLACE
    if np.any(same_place):
        k = int(np.flatnonzero(same_place)[0])
        raise DataError(
            f"atoms {int(i[k])} and {int(j[k])} (image {shift[k].tolist()}) are at the same place",
            field="positions",
            fix="remove duplicate atoms; a radius graph needs distinct positions",
        )

    order = _edge_order(i, j, shift, n_atoms)
    edge_index = np.empty((2, len(order)), dtype=np.int64)
    np.take(i, order, out=edge_index[0])
    np.take(j, order, out=edge_index[1])
    shift = np.take(shift, order, axis=0).astype(np.int64)
    return NeighbourGraph(
        edge_index=edge_index,
        cell_shift=shift,
        shift_vector=shift.astype(np.float64) @ cell_used,
    )


# --------------------------------------------------------------------------- checks


def _check_cutoff(cutoff) -> float:
    if isinstance(cutoff, (bool, np.bool_)):
        raise DataError(f"cutoff must be a number, got {cutoff!r}", field="cutoff",
                        fix="pass a positive, finite radius such as cutoff=5.0")
    try:
        value = float(cutoff)
    except (TypeError, ValueError):
        raise DataError(f"cutoff must be a number, got {cutoff!r}", field="cutoff",
                        fix="pass a positive, finite radius such as cutoff=5.0") from None
    if not math.isfinite(value) or value <= 0.0:
        raise DataError(f"cutoff must be finite and > 0, got {value!r}", field="cutoff",
                        fix="pass a positive, finite radius such as cutoff=5.0")
    return value


def _check_positions(positions) -> np.ndarray:
    try:
        pos = np.asarray(positions, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("positions must be numbers", field="positions",
                        fix="pass an (N, 3) array of Cartesian coordinates") from None
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise DataError(f"positions must have shape (N, 3), got {pos.shape}", field="positions",
                        fix="pass an (N, 3) array of Cartesian coordinates")
    finite = np.isfinite(pos).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise DataError(f"positions has NaN or infinite values (first at atom {bad})",
                        field="positions", fix="remove or repair frames with non-finite positions")
    return np.ascontiguousarray(pos)


def _check_pbc(pbc, cell) -> np.ndarray:
    if pbc is None:
        return np.full(3, cell is not None)
    if isinstance(pbc, (bool, np.bool_)):
        return np.full(3, bool(pbc))
    arr = np.asarray(pbc)
    if arr.dtype == object or arr.shape != (3,) or not (
        arr.dtype == np.bool_ or (np.issubdtype(arr.dtype, np.integer) and np.isin(arr, (0, 1)).all())
    ):
        raise DataError(f"pbc must be None, a bool or 3 bools, got {pbc!r}", field="pbc",
                        fix="pass e.g. pbc=True, pbc=False or pbc=[True, True, False]")
    return arr.astype(bool)


def _check_cell(cell, periodic: np.ndarray) -> np.ndarray:
    """The cell as float64 (3, 3), zeros when None; periodic rows validated."""
    if cell is None:
        if periodic.any():
            raise DataError(f"pbc={periodic.tolist()} asks for periodicity but cell is None",
                            field="cell", fix="pass the (3, 3) lattice vectors as cell, or pbc=False")
        return np.zeros((3, 3))
    try:
        c = np.asarray(cell, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("cell must be numbers", field="cell",
                        fix="pass a (3, 3) array with lattice vectors as rows") from None
    if c.shape != (3, 3):
        raise DataError(f"cell must have shape (3, 3), got {c.shape}", field="cell",
                        fix="pass a (3, 3) array with lattice vectors as rows, e.g. np.diag(lengths)")
    if not np.isfinite(c).all():
        raise DataError("cell has NaN or infinite values", field="cell",
                        fix="pass finite lattice vectors (use zeros for non-periodic directions)")
    rows = np.flatnonzero(periodic)
    if len(rows) == 0:
        return c
    vecs = c[rows]
    norms = np.linalg.norm(vecs, axis=1)
    if np.any(norms == 0.0):
        d = int(rows[np.flatnonzero(norms == 0.0)[0]])
        raise DataError(f"cell vector {d} is zero but pbc[{d}] is True", field="cell",
                        fix=f"give lattice vector {d} a length, or set pbc[{d}] = False")
    # volume (or area) of the periodic vectors relative to the product of their lengths
    unit = vecs / norms[:, None]
    rel_volume = math.sqrt(max(float(np.linalg.det(unit @ unit.T)), 0.0))
    if rel_volume < _MIN_RELATIVE_VOLUME:
        raise DataError(
            f"the periodic cell vectors {rows.tolist()} are linearly dependent "
            f"(singular or zero-volume cell, relative volume {rel_volume:.3g})",
            field="cell", fix="pass three independent lattice vectors as the rows of cell")
    return c


def _check_image_count(box: np.ndarray, periodic: np.ndarray, cutoff: float) -> None:
    heights = _heights(box)
    images = 1.0
    for d in np.flatnonzero(periodic):
        images *= 2 * math.ceil(cutoff / heights[d]) + 1
    if images > _MAX_IMAGES:
        raise DataError(
            f"the cell is too small for cutoff {cutoff:g}: each atom would have about "
            f"{images:.3g} periodic images (cell heights {np.round(heights[periodic], 6).tolist()})",
            field="cell", fix="check the cell's length unit, or use a smaller cutoff")


# --------------------------------------------------------------------------- vesin helpers


def _empty() -> NeighbourGraph:
    return NeighbourGraph(edge_index=np.zeros((2, 0), dtype=np.int64),
                          cell_shift=np.zeros((0, 3), dtype=np.int64),
                          shift_vector=np.zeros((0, 3), dtype=np.float64))


def _cross(a, b) -> np.ndarray:
    """Cross product of two 3-vectors (np.cross is slow for single vectors)."""
    return np.array([a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]])


def _heights(box: np.ndarray) -> np.ndarray:
    """Distance between opposite faces for each lattice vector of a non-singular box."""
    normals = np.array([_cross(box[(d + 1) % 3], box[(d + 2) % 3]) for d in range(3)])
    volume = abs(float(np.dot(box[0], normals[0])))
    return volume / np.sqrt(np.einsum("ij,ij->i", normals, normals))


def _nonperiodic_directions(cell: np.ndarray, periodic: np.ndarray) -> np.ndarray:
    """Unit vectors for the non-periodic rows, orthogonal to the periodic rows."""
    rows = np.flatnonzero(periodic)
    out = np.zeros((3, 3))
    if len(rows) == 0:
        return np.eye(3)
    if len(rows) == 2:
        n = _cross(cell[rows[0]], cell[rows[1]])
        out[np.flatnonzero(~periodic)[0]] = n / np.linalg.norm(n)
        return out
    if len(rows) == 1:
        a = cell[rows[0]] / np.linalg.norm(cell[rows[0]])
        t = np.array([0.0, 1.0, 0.0]) if abs(a[1]) < 0.9 else np.array([0.0, 0.0, 1.0])
        u = _cross(a, t)
        u /= np.linalg.norm(u)
        w = _cross(a, u)
        others = np.flatnonzero(~periodic)
        out[others[0]], out[others[1]] = u, w
        return out
    return out


def _vesin_box(pos: np.ndarray, cell: np.ndarray, periodic: np.ndarray,
               search: float) -> Tuple[np.ndarray, np.ndarray]:
    """A fully periodic box for vesin, and the positions to give it.

    Non-periodic rows become orthogonal vectors longer than the atoms' extent
    plus ``gap``; gaps wider than ``gap`` along them are shrunk to ``gap``
    first. Neither step changes which pairs are closer than ``search``, and the
    edges along fake rows all have zero shift.
    """
    box = cell.copy()
    if periodic.all():
        return box, pos
    gap = 1.5 * search
    directions = _nonperiodic_directions(cell, periodic)
    moved = pos.copy()
    for d in np.flatnonzero(~periodic):
        u = directions[d]
        t = pos @ u
        order = np.argsort(t, kind="stable")
        steps = np.diff(t[order])
        removed = np.concatenate([[0.0], np.cumsum(np.where(steps > gap, steps - gap, 0.0))])
        if removed[-1] > 0.0:
            delta = np.empty_like(t)
            delta[order] = removed
            moved -= delta[:, None] * u[None, :]
        extent = float(np.ptp(moved @ u))
        box[d] = (extent + gap) * u
    return box, moved


def _vesin_cells(box: np.ndarray, search: float) -> Tuple[np.ndarray, bool]:
    """vesin's cell counts for a fully periodic box, and whether they are safe."""
    n = np.maximum(1.0, np.trunc(_heights(box) / search))
    if float(np.prod(n)) <= _VESIN_MAX_CELLS:
        return n, True
    # vesin scales every count by cbrt(MAX / total) and truncates; a count that
    # becomes 0 is a division by zero (SIGFPE) inside vesin. Keep a margin.
    ratio_xy, ratio_yz = n[0] / n[1], n[1] / n[2]
    nz = math.cbrt(_VESIN_MAX_CELLS / (ratio_xy * ratio_yz * ratio_yz))
    ny = ratio_yz * math.trunc(nz)
    nx = ratio_xy * math.trunc(ny)
    return n, min(nx, ny, nz) >= 2.0


def _safe_search_radius(box: np.ndarray, search: float) -> float:
    """The smallest radius >= ``search`` (in steps of 5%) that vesin can handle."""
    for _ in range(2000):
        _, ok = _vesin_cells(box, search)
        if ok:
            return search
        search *= 1.05
    raise DataError("the cell is too anisotropic for the neighbour-list backend", field="cell",
                    fix="check the cell vectors")  # pragma: no cover


def _edge_order(i: np.ndarray, j: np.ndarray, shift: np.ndarray, n_atoms: int) -> np.ndarray:
    """Permutation sorting edges by i, then j, then shift (lexicographic)."""
    if len(i) == 0:
        return np.zeros(0, dtype=np.int64)
    columns = np.ascontiguousarray(shift.T).astype(np.int64)
    lo = columns.min(axis=1)
    span = columns.max(axis=1) - lo + 1
    # one int64 key when it cannot overflow (keys are unique, so any sort
    # algorithm gives the same order), else a 5-key lexsort
    if float(n_atoms) ** 2 * float(np.prod(span.astype(np.float64))) < 2.0 ** 62:
        key = i * n_atoms + j
        for d in range(3):
            key *= int(span[d])
            key += columns[d]
            key -= int(lo[d])
        return np.argsort(key)
    return np.lexsort((columns[2], columns[1], columns[0], j, i))
