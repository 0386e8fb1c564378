"""Structural context of atoms and a structural descriptor of frames, with MDAnalysis distances.

Distances use MDAnalysis's minimum-image convention when the box is periodic
(``MDAnalysis.lib.distances``): one distance per pair, so a radius beyond half the
smallest box width misses periodic images.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from ase.data import atomic_numbers
from MDAnalysis.analysis.rdf import InterRDF
from MDAnalysis.lib.distances import distance_array, self_capped_distance
from MDAnalysis.lib.mdamath import triclinic_vectors

from bnnmd.analysis._errors import AnalysisError

from bnnmd.analysis._trajectory import UncertaintyTrajectory


def half_box_width(box: Optional[np.ndarray]) -> float:
    """Half the smallest perpendicular width of an MDAnalysis box (inf for no box)."""
    if box is None:
        return float("inf")
    v = np.asarray(triclinic_vectors(box), dtype=np.float64)
    volume = abs(np.linalg.det(v))
    widths = [volume / np.linalg.norm(np.cross(v[(i + 1) % 3], v[(i + 2) % 3])) for i in range(3)]
    return 0.5 * min(widths)


def atom_environment(traj: UncertaintyTrajectory, frame: int, atom: int, radius: float = 3.0) -> dict:
    """Neighbours of atom index ``atom`` in ``frame`` within ``radius`` (A), nearest first.

    Returns ``{"coordination": int, "nearest_distance": float, "nearest_atom_id": int,
    "nearest_element": str, "neighbours": [{"atom_id", "element", "distance"}, ...]}``;
    the nearest neighbour is found among all atoms, also beyond the radius.
    """
    pos = traj.positions(frame)
    box = traj.box(frame)
    d = distance_array(pos[atom:atom + 1], pos, box=box)[0]
    d[atom] = np.inf
    order = np.lexsort((np.arange(len(d)), d))
    inside = [int(j) for j in order if d[j] < radius]
    out = {
        "coordination": len(inside),
        "neighbours": [{"atom_id": int(traj.ids[j]), "element": str(traj.elements[j]),
                        "distance": float(d[j])} for j in inside],
    }
    if len(d) > 1:
        j = int(order[0])
        out.update(nearest_distance=float(d[j]), nearest_atom_id=int(traj.ids[j]),
                   nearest_element=str(traj.elements[j]))
    else:
        out.update(nearest_distance=None, nearest_atom_id=None, nearest_element=None)
    return out


def element_order(elements: Sequence[str]) -> List[str]:
    """The distinct elements sorted by atomic number."""
    return sorted(set(str(e) for e in elements), key=lambda e: atomic_numbers[e])


def _smeared(d: np.ndarray, centres: np.ndarray, sigma: float) -> np.ndarray:
    return np.exp(-0.5 * ((d[:, None] - centres[None, :]) / sigma) ** 2)


def frame_descriptor(positions: np.ndarray, elements: Sequence[str], box: Optional[np.ndarray],
                     centre: Optional[int] = None, cutoff: float = 5.0, width: float = 0.1,
                     species: Optional[Sequence[str]] = None) -> np.ndarray:
    """A SOAP-free structural fingerprint of one frame: Gaussian-smeared distance histograms.

    Two blocks, concatenated:

    * global: for each unordered element pair (A, B), the histogram of all A-B distances below
      ``cutoff``, each distance smeared with a Gaussian of std ``width`` onto bin centres
      ``width/2, 3 width/2, ... < cutoff``, divided by the number of atoms;
    * local: the same histogram of the distances from atom ``centre`` (the frame's most uncertain
      atom) to its neighbours, per (centre element, neighbour element).

    Both blocks have the scale of one atom's neighbour count, so neither dominates. Frames that
    differ in structure (near the uncertain atom or anywhere) are far apart in the Euclidean norm.
    """
    species = list(species) if species is not None else element_order(elements)
    index = {e: i for i, e in enumerate(species)}
    n_el = len(species)
    el = np.array([index[str(e)] for e in elements])
    centres = np.arange(width / 2, cutoff, width)
    pos = np.asarray(positions, dtype=np.float32)
    glob = np.zeros((n_el, n_el, len(centres)))
    if len(pos) > 1:
        pairs, dist = self_capped_distance(pos, cutoff, box=box)
        if len(pairs):
            a, b = np.minimum(el[pairs[:, 0]], el[pairs[:, 1]]), np.maximum(el[pairs[:, 0]], el[pairs[:, 1]])
            np.add.at(glob, (a, b), _smeared(np.asarray(dist, dtype=np.float64), centres, width))
    iu = np.triu_indices(n_el)
    glob = glob[iu] / max(len(pos), 1)
    local = np.zeros((n_el, n_el, len(centres)))
    if centre is not None and len(pos) > 1:
        d = distance_array(pos[centre:centre + 1], pos, box=box)[0].astype(np.float64)
        d[centre] = np.inf
        near = np.flatnonzero(d < cutoff)
        if len(near):
            np.add.at(local, (el[centre], el[near]), _smeared(d[near], centres, width))
    return np.concatenate([glob.ravel(), local.ravel()])


def radial_distribution(traj: UncertaintyTrajectory, first: str, second: str, r_max: Optional[float] = None,
                        bins: int = 100, start: int = 0, stop: Optional[int] = None):
    """The radial distribution function g(r) between the atoms of element ``first`` and of ``second``
    (e.g. ``"O", "O"``) over frames ``start .. stop - 1`` of a periodic trajectory (MDAnalysis's
    ``InterRDF``, normalised by the density of each frame's box, an atom never counted with itself).

    ``r_max`` defaults to half the smallest box width of the first frame used (the minimum image
    reaches no farther). Returns ``(r, g)``: bin centres and g(r).
    """
    u = traj.universe
    a = u.atoms[np.flatnonzero(traj.elements == first)]
    b = u.atoms[np.flatnonzero(traj.elements == second)]
    if len(a) == 0 or len(b) == 0:
        raise AnalysisError(f"no {first if len(a) == 0 else second} atoms in {traj.source}",
                            f"use elements of the trajectory: {', '.join(element_order(traj.elements))}")
    u.trajectory[start]
    box = u.dimensions
    if box is None or not np.all(traj.pbc):
        raise AnalysisError(f"{traj.source} is not periodic in x, y and z", "g(r) needs a periodic box")
    half = half_box_width(box)
    r_max = half if r_max is None else float(r_max)
    if r_max > half + 1e-9:
        raise AnalysisError(f"r_max = {r_max:.4g} is beyond half the box width ({half:.4g})",
                            f"use r_max <= {half:.4g}")
    # the same element: an atom is not its own neighbour (N_a (N_a - 1) pairs)
    rdf = InterRDF(a, b, nbins=int(bins), range=(0.0, r_max), exclusion_block=(1, 1) if first == second else None)
    rdf.run(start=start, stop=stop)
    return np.asarray(rdf.results.bins, dtype=np.float64), np.asarray(rdf.results.rdf, dtype=np.float64)
