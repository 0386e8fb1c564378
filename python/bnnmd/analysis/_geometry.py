"""Geometry sanity along a trajectory: shortest distances, the bond graph, atoms too close, H2 formed.

A run stopped by an uncertainty halt (``fix halt ... v_umax > threshold``) stopped in time when the
geometry was still physical at the threshold crossing. :func:`geometry_report` finds, per frame, the
shortest interatomic distance and the shortest distance relative to the covalent radii
(``d_ij / (R_i + R_j)``, ``ase.data.covalent_radii``), and the first frames where the bond graph of
frame 0 changes (at all, and lastingly), where two atoms come too close and where a new H-H bond
(H2) forms.
:func:`halt_timing` puts the first unphysical frame next to the first threshold crossing.

Distances come from ``MDAnalysis.lib.distances`` with the minimum image when the box is periodic in
x, y and z (as everywhere in :mod:`bnnmd.analysis`), else in open space.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from ase.data import atomic_numbers
from ase.data import covalent_radii as _covalent_radii
from MDAnalysis.lib.distances import self_capped_distance, self_distance_array

from bnnmd.analysis._errors import AnalysisError
from bnnmd.analysis._structure import element_order
from bnnmd.analysis._trajectory import UncertaintyTrajectory

#: Default ``bond_factor``: i and j are bonded when ``d_ij < 1.2 (R_i + R_j)``.
BOND_FACTOR = 1.2
#: Default ``close_factor``: i and j are too close when ``d_ij < 0.6 (R_i + R_j)``.
CLOSE_FACTOR = 0.6
#: Default ``lasting_frames``: a bond-graph change counts towards ``first_unphysical`` when it holds this
#: many consecutive frames (or to the last frame).
LASTING_FRAMES = 3
#: The event kinds of ``first_unphysical["events"]``, in the order they are listed.
EVENTS = ("too_close", "h2_formed", "lasting_bond_change")


def covalent_radii(elements: Sequence[str]) -> np.ndarray:
    """Covalent radius (A, Cordero et al. 2008 as in ``ase.data.covalent_radii``) of each element."""
    return np.array([float(_covalent_radii[atomic_numbers[str(e)]]) for e in elements], dtype=np.float64)


@dataclass
class GeometryReport:
    """What :func:`geometry_report` found. Per-frame arrays have one entry per frame of the trajectory.

    Attributes
    ----------
    steps : int array [n_frames], the MD steps
    min_distance : float array [n_frames], the shortest interatomic distance (A); ``min_distance_pair``
        names the pair (``"C1-H7"``: element and atom id, lower id first)
    min_ratio : float array [n_frames], the smallest ``d_ij / (R_i + R_j)`` over all pairs;
        ``min_ratio_pair`` names the pair
    bonds_broken, bonds_formed : int arrays [n_frames], how many bonds of frame 0 are missing and how
        many bonds not in frame 0 are present
    initial_bonds : the bonds of frame 0 (labels)
    first_bond_change : the first frame whose bond graph differs from frame 0's (``frame, step,
        broken, formed, description``), or None; a bond stretched past ``bond_factor`` for one frame
        counts
    first_lasting_bond_change : the first frame where a change of the bond graph begins that holds for
        ``lasting_frames`` consecutive frames or to the last frame (``frame, step, broken, formed,
        n_frames, to_end, description``: the pairs whose change begins there and lasts, the longest of
        these runs in frames, whether one holds to the last frame), or None
    first_too_close : the first frame with a pair closer than ``close_factor (R_i + R_j)`` (``frame,
        step, pair, atom_ids, elements, distance, ratio, n_pairs, description``: the pair with the
        smallest ratio, the number of such pairs), or None
    first_h2_formed : the first frame with an H-H bond that frame 0 does not have (``frame, step, pairs,
        distance, description``; ``distance`` of the shortest new H-H bond), or None
    first_unphysical : the earliest of ``first_too_close``, ``first_h2_formed`` and
        ``first_lasting_bond_change`` (``frame, step, events, description``; ``events`` lists those of
        :data:`EVENTS` that happen in that frame), or None

    Notes
    -----
    ``first_bond_change`` and ``first_unphysical`` differ in what they claim. Atoms closer than
    ``close_factor (R_i + R_j)`` and a new H-H bond (in a system without that bond at the start)
    are signs of a collapsing structure, unphysical in any sense; they count from the first frame
    they appear in. A change of the bond graph (a bond breaking, a new bond) is chemistry that can
    be real (a dissociation at high temperature), but a potential trained on intact molecules has
    left its training distribution there, so its forces are extrapolations: unphysical *for this
    model*. A single frame past ``bond_factor`` is often only a hot bond vibration (in the demo run a
    C-H at 1.29 A = 1.205 (R_C + R_H), at 1.22 A one dump later), so ``first_unphysical`` counts a
    bond-graph change only once it lasts ``lasting_frames`` consecutive frames, or holds from its
    start to the last frame (a halted run cannot show whether it would have reverted).
    ``first_bond_change`` keeps the first change of any length; ``lasting_frames=1`` makes the two
    agree. Choose ``lasting_frames`` so that that many dump intervals span a few bond vibrations
    (C-H: about 11 fs). Only the dumped frames are seen: an event between two dumps shows at the
    next one, or not at all.
    """

    close_factor: float
    bond_factor: float
    lasting_frames: int
    periodic: bool
    radii: Dict[str, float]
    steps: np.ndarray
    min_distance: np.ndarray
    min_distance_pair: List[Optional[str]]
    min_ratio: np.ndarray
    min_ratio_pair: List[Optional[str]]
    bonds_broken: np.ndarray
    bonds_formed: np.ndarray
    initial_bonds: List[str]
    first_bond_change: Optional[dict]
    first_lasting_bond_change: Optional[dict]
    first_too_close: Optional[dict]
    first_h2_formed: Optional[dict]
    first_unphysical: Optional[dict]
    notes: List[str] = field(default_factory=list)

    @property
    def n_frames(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        fu = self.first_unphysical
        where = ("physical throughout" if fu is None else
                 f"first unphysical step {fu['step']} ({', '.join(fu['events'])})")
        return (f"GeometryReport({self.n_frames} frames, {len(self.initial_bonds)} bonds in frame 0, "
                f"min d/(R_i+R_j) {_num(np.nanmin(self.min_ratio)) if self.n_frames else '-'} | {where})")

    def to_dict(self) -> dict:
        return {
            "close_factor": self.close_factor, "bond_factor": self.bond_factor,
            "lasting_frames": self.lasting_frames, "periodic": self.periodic,
            "radii": self.radii, "initial_bonds": self.initial_bonds,
            "first_unphysical": self.first_unphysical, "first_bond_change": self.first_bond_change,
            "first_lasting_bond_change": self.first_lasting_bond_change,
            "first_too_close": self.first_too_close, "first_h2_formed": self.first_h2_formed,
            "series": {
                "step": [int(s) for s in self.steps],
                "min_distance": [_num(x) for x in self.min_distance], "min_distance_pair": self.min_distance_pair,
                "min_ratio": [_num(x) for x in self.min_ratio], "min_ratio_pair": self.min_ratio_pair,
                "bonds_broken": [int(x) for x in self.bonds_broken],
                "bonds_formed": [int(x) for x in self.bonds_formed],
            },
            "notes": self.notes,
        }


def _num(x) -> Optional[float]:
    x = float(x)
    return x if np.isfinite(x) else None


def check_factors(close_factor: float, bond_factor: float, lasting_frames: int = LASTING_FRAMES) -> None:
    if isinstance(lasting_frames, bool) or not isinstance(lasting_frames, (int, np.integer)) or lasting_frames < 1:
        raise AnalysisError(f"--lasting-frames {lasting_frames}: it must be a whole number >= 1",
                            f"give how many consecutive frames a bond-graph change must hold to count as "
                            f"unphysical (default {LASTING_FRAMES}; 1: any change)")
    for name, v in (("--close-factor", close_factor), ("--bond-factor", bond_factor)):
        if not np.isfinite(v) or v <= 0:
            raise AnalysisError(f"{name} {v}: it must be a finite number > 0",
                                f"give a multiple of R_i + R_j (defaults: --close-factor {CLOSE_FACTOR}, "
                                f"--bond-factor {BOND_FACTOR})")
    if close_factor >= bond_factor:
        raise AnalysisError(f"--close-factor {close_factor} is not below --bond-factor {bond_factor}",
                            "atoms 'too close' must be closer than bonded atoms: give a smaller --close-factor "
                            f"(default {CLOSE_FACTOR}) or a larger --bond-factor (default {BOND_FACTOR})")


def _pairs(pos: np.ndarray, box: Optional[np.ndarray], rsum_max: float, bond_factor: float,
           radii: np.ndarray) -> Tuple[np.ndarray, np.ndarray, bool]:
    """Pairs (i < j) and distances within ``bond_factor * rsum_max``; a flag when that list holds the
    shortest distance and the smallest ratio (else all pairs are returned)."""
    pairs, d = self_capped_distance(pos, bond_factor * rsum_max, box=box)
    pairs = np.sort(np.asarray(pairs, dtype=np.int64).reshape(-1, 2), axis=1)
    d = np.asarray(d, dtype=np.float64)
    # a pair beyond the cutoff has d >= bond_factor rsum_max and ratio >= bond_factor: the capped list holds
    # the minima when it holds a ratio at or below bond_factor
    if len(d) and (d / (radii[pairs[:, 0]] + radii[pairs[:, 1]])).min() <= bond_factor:
        return pairs, d, True
    n = len(pos)
    i, j = np.triu_indices(n, 1)
    return np.stack([i, j], axis=1).astype(np.int64), np.asarray(self_distance_array(pos, box=box),
                                                                  dtype=np.float64), False


def geometry_report(traj: UncertaintyTrajectory, close_factor: float = CLOSE_FACTOR,
                    bond_factor: float = BOND_FACTOR, lasting_frames: int = LASTING_FRAMES) -> GeometryReport:
    """Shortest distances, bond-graph changes, atoms too close and H2 formation along ``traj``.

    Parameters
    ----------
    traj : the trajectory (:func:`bnnmd.analysis.read_trajectory`)
    close_factor : atoms i, j are *too close* when ``d_ij < close_factor (R_i + R_j)``
    bond_factor : atoms i, j are *bonded* when ``d_ij < bond_factor (R_i + R_j)``
    lasting_frames : a bond-graph change counts towards ``first_unphysical`` when it holds this many
        consecutive frames, or to the last frame

    ``R`` are covalent radii (``ase.data.covalent_radii``: H 0.31, C 0.76, N 0.71, O 0.66 A). The bond
    graph of each frame is compared with frame 0's; see :class:`GeometryReport` for the fields.

    Examples
    --------
    >>> import ase, ase.io, numpy as np
    >>> from bnnmd.analysis import read_extxyz, geometry_report
    >>> frames = []
    >>> for i, d in enumerate([0.74, 0.74, 2.0, 0.3]):  # H2 breaks at frame 2, atoms collide at frame 3
    ...     a = ase.Atoms("H2", positions=[[0, 0, 0], [d, 0, 0]])
    ...     a.arrays["forces_std"] = np.zeros(2); a.info["step"] = 10 * i
    ...     frames.append(a)
    >>> import tempfile, os; path = os.path.join(tempfile.mkdtemp(), "h2.extxyz")
    >>> ase.io.write(path, frames, format="extxyz")
    >>> g = geometry_report(read_extxyz(path))
    >>> g.first_bond_change["step"], g.first_bond_change["broken"], g.first_too_close["step"]
    (20, ['H1-H2'], 30)
    >>> g.first_lasting_bond_change, g.first_h2_formed  # one frame apart; H1-H2 is a bond of frame 0
    (None, None)
    >>> g.first_unphysical["step"], g.first_unphysical["events"]
    (30, ['too_close'])
    >>> g.min_ratio.round(3).tolist()
    [1.194, 1.194, 3.226, 0.484]
    """
    check_factors(close_factor, bond_factor, lasting_frames)
    els = np.asarray(traj.elements).astype(str)
    ids = np.asarray(traj.ids, dtype=np.int64)
    steps = np.asarray(traj.steps, dtype=np.int64)
    n, n_frames = len(els), traj.n_frames
    radii = covalent_radii(els)
    rsum_max = 2.0 * float(radii.max()) if n else 0.0
    hydrogen = els == "H"

    def label(i: int, j: int) -> str:
        a, b = (i, j) if ids[i] <= ids[j] else (j, i)
        return f"{els[a]}{ids[a]}-{els[b]}{ids[b]}"

    def labels(keys: np.ndarray) -> List[str]:
        ij = [(int(k) // n, int(k) % n) for k in keys]
        ij.sort(key=lambda p: tuple(sorted((ids[p[0]], ids[p[1]]))))
        return [label(i, j) for i, j in ij]

    min_d = np.full(n_frames, np.nan)
    min_r = np.full(n_frames, np.nan)
    d_pair: List[Optional[str]] = [None] * n_frames
    r_pair: List[Optional[str]] = [None] * n_frames
    broken_n = np.zeros(n_frames, dtype=np.int64)
    formed_n = np.zeros(n_frames, dtype=np.int64)
    bonds0 = np.zeros(0, dtype=np.int64)
    first = {k: None for k in ("bond_change",) + EVENTS}
    runs: Dict[int, int] = {}                     # changed pair -> first frame of its current run
    lasting: List[Tuple[int, int, int, bool]] = []  # (start frame, pair, frames, to the last frame)
    full_frames = 0
    for f in range(n_frames):
        if n < 2:
            break
        pairs, d, capped = _pairs(traj.positions(f), traj.box(f), rsum_max, bond_factor, radii)
        full_frames += not capped
        i, j = pairs[:, 0], pairs[:, 1]
        ratio = d / (radii[i] + radii[j])
        # the smallest value, ties to the lower (i, j)
        k = int(np.lexsort((j, i, d))[0])
        min_d[f], d_pair[f] = d[k], label(int(i[k]), int(j[k]))
        k = int(np.lexsort((j, i, ratio))[0])
        min_r[f], r_pair[f] = ratio[k], label(int(i[k]), int(j[k]))
        bonded = ratio < bond_factor
        keys = np.sort(i[bonded] * n + j[bonded])
        if f == 0:
            bonds0 = keys
        broken = np.setdiff1d(bonds0, keys, assume_unique=True)
        formed = np.setdiff1d(keys, bonds0, assume_unique=True)
        broken_n[f], formed_n[f] = len(broken), len(formed)
        changed = set(broken.tolist()) | set(formed.tolist())
        for key in [r for r in runs if r not in changed]:
            if f - runs[key] >= lasting_frames:
                lasting.append((runs[key], key, f - runs[key], False))
            del runs[key]
        for key in changed:
            runs.setdefault(key, f)
        if first["bond_change"] is None and (len(broken) or len(formed)):
            b, fm = labels(broken), labels(formed)
            parts = ([f"broken {', '.join(b)}"] if b else []) + ([f"formed {', '.join(fm)}"] if fm else [])
            first["bond_change"] = {"frame": f, "step": int(steps[f]), "broken": b, "formed": fm,
                                    "description": "bond graph changed: " + "; ".join(parts)}
        close = ratio < close_factor
        if first["too_close"] is None and close.any():
            k = int(np.lexsort((j, i, ratio))[0])  # the closest pair relative to the radii is among them
            a, b = (int(i[k]), int(j[k])) if ids[i[k]] <= ids[j[k]] else (int(j[k]), int(i[k]))
            first["too_close"] = {
                "frame": f, "step": int(steps[f]), "pair": label(a, b), "atom_ids": [int(ids[a]), int(ids[b])],
                "elements": [str(els[a]), str(els[b])], "distance": float(d[k]), "ratio": float(ratio[k]),
                "n_pairs": int(close.sum()),
                "description": f"atoms too close: {label(a, b)} at {d[k]:.3f} A = {ratio[k]:.2f} x (R_i + R_j) "
                               f"(< {close_factor:g})"
                               + (f", {int(close.sum())} pairs in all" if close.sum() > 1 else "")}
        if first["h2_formed"] is None and len(formed):
            fi, fj = formed // n, formed % n
            hh = formed[hydrogen[fi] & hydrogen[fj]]
            if len(hh):
                dist = dict(zip((i * n + j).tolist(), d.tolist()))
                shortest = min(dist[int(x)] for x in hh)
                first["h2_formed"] = {"frame": f, "step": int(steps[f]), "pairs": labels(hh), "distance": shortest,
                                      "description": f"H2 formed: {', '.join(labels(hh))} (not bonded in frame 0; "
                                                     f"shortest {shortest:.3f} A)"}
    lasting += [(start, key, n_frames - start, True) for key, start in runs.items()]
    if lasting:
        start = min(r[0] for r in lasting)
        here = [r for r in lasting if r[0] == start]
        initial = set(bonds0.tolist())
        b = labels(np.array([r[1] for r in here if r[1] in initial], dtype=np.int64))
        fm = labels(np.array([r[1] for r in here if r[1] not in initial], dtype=np.int64))
        longest, to_end = max(r[2] for r in here), any(r[3] for r in here)
        parts = ([f"broken {', '.join(b)}"] if b else []) + ([f"formed {', '.join(fm)}"] if fm else [])
        span = f"{longest} frame" + ("s" if longest != 1 else "")
        first["lasting_bond_change"] = {
            "frame": start, "step": int(steps[start]), "broken": b, "formed": fm, "n_frames": int(longest),
            "to_end": bool(to_end),
            "description": "lasting bond-graph change: " + "; ".join(parts)
                           + (f" (to the last frame, {span})" if to_end else f" ({span})")}
    happened = [e for e in EVENTS if first[e] is not None]
    unphysical = None
    if happened:
        frame = min(first[e]["frame"] for e in happened)
        events = [e for e in happened if first[e]["frame"] == frame]
        unphysical = {"frame": frame, "step": int(steps[frame]), "events": events,
                      "description": "; ".join(first[e]["description"] for e in events)}
    notes = []
    if full_frames:
        notes.append(f"{full_frames} frame(s) had no pair within {bond_factor:g} x (R_i + R_j): their shortest "
                     "distances were found among all pairs")
    return GeometryReport(
        close_factor=float(close_factor), bond_factor=float(bond_factor), lasting_frames=int(lasting_frames),
        periodic=traj.periodic, radii={e: float(covalent_radii([e])[0]) for e in element_order(els)},
        steps=steps, min_distance=min_d, min_distance_pair=d_pair, min_ratio=min_r, min_ratio_pair=r_pair,
        bonds_broken=broken_n, bonds_formed=formed_n, initial_bonds=labels(bonds0),
        first_bond_change=first["bond_change"], first_lasting_bond_change=first["lasting_bond_change"],
        first_too_close=first["too_close"], first_h2_formed=first["h2_formed"], first_unphysical=unphysical,
        notes=notes)


def halt_timing(geometry: GeometryReport, first_crossing: Optional[dict]) -> dict:
    """The first threshold crossing next to the first unphysical geometry.

    Returns ``{"crossing_step", "crossing_frame", "unphysical_step", "unphysical_frame", "lead_steps",
    "in_time", "text"}``: ``lead_steps = unphysical_step - crossing_step`` (positive: the crossing,
    where ``fix halt`` at this threshold stops the run, came that many steps before the geometry went
    unphysical) or None when either is missing; ``in_time`` is True when the crossing came first (also
    when the geometry stayed physical), False when the crossing came in the same frame, later or never
    while the geometry went unphysical, None when neither happened.
    """
    fu = geometry.first_unphysical
    c = None if first_crossing is None else int(first_crossing["step"])
    u = None if fu is None else int(fu["step"])
    out = {"crossing_step": c, "crossing_frame": None if first_crossing is None else int(first_crossing["frame"]),
           "unphysical_step": u, "unphysical_frame": None if fu is None else int(fu["frame"]),
           "lead_steps": None if c is None or u is None else u - c}
    last = int(geometry.steps[-1]) if geometry.n_frames else None
    if c is not None and u is not None:
        lead = u - c
        out["in_time"] = lead > 0
        out["text"] = (f"the threshold crossing came {lead} steps before the first unphysical geometry" if lead > 0
                       else f"the threshold crossing came {-lead} steps after the first unphysical geometry"
                       if lead < 0 else f"the threshold crossing came in the same frame as the first unphysical "
                                        f"geometry (step {u}): not in time at the dump interval")
    elif u is not None:
        out["in_time"] = False
        out["text"] = f"the threshold was never crossed; the geometry was unphysical from step {u}"
    elif c is not None:
        out["in_time"] = True
        out["text"] = ("the threshold crossing came before any unphysical geometry (none up to the last frame, "
                       f"step {last})")
    else:
        out["in_time"] = None
        out["text"] = f"neither a threshold crossing nor an unphysical geometry up to the last frame (step {last})"
    return out
