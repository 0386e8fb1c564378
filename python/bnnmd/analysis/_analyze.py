"""The numbers of the report: time series, threshold crossings, the atoms and frames responsible."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np

from bnnmd._files import write_atomic
from bnnmd.analysis._errors import AnalysisError
from bnnmd.analysis._geometry import (BOND_FACTOR, CLOSE_FACTOR, LASTING_FRAMES, GeometryReport, check_factors,
                                      geometry_report, halt_timing)
from bnnmd.analysis._select import Selection
from bnnmd.analysis._structure import atom_environment, element_order, half_box_width
from bnnmd.analysis._trajectory import UncertaintyTrajectory, column_kind

PathLike = Union[str, os.PathLike]


@dataclass
class AnalysisResult:
    """What :func:`analyze` found. ``series`` holds one value per frame; all uncertainties in ``unit``.

    Attributes
    ----------
    series : ``step``, ``max``, ``mean``, ``fraction_above`` (fraction of atoms with uncertainty >
        threshold), ``atoms_above``, ``max_atom_id``, ``max_element`` (lists, one entry per frame) and
        ``element_mean`` / ``element_max``: element -> list
    first_crossing : the first frame whose largest per-atom uncertainty exceeds the threshold
        (``frame, step, atom_id, atom_index, element, value, atoms_above``), or None
    excursions : runs of consecutive frames above the threshold with their peak
    top_atoms : the atoms with the largest uncertainty, each at its peak frame, with the structural
        context there (``environment``: neighbours within ``radius``, nearest-neighbour distance,
        coordination number)
    top_frames : the frames with the largest uncertainty
    summary : overall numbers (``max``, ``mean``, ``frames_above`` ...), ``per_element`` and ``per_kind``
    geometry : the geometry sanity of every frame (:class:`~bnnmd.analysis.GeometryReport`: shortest
        distances, the first bond-graph change, atoms too close, H2 formed, the first unphysical frame),
        or None when :func:`analyze` ran with ``geometry=False``
    halt_vs_geometry : the first crossing next to the first unphysical frame
        (:func:`~bnnmd.analysis.halt_timing`: ``lead_steps``, ``in_time``, ``text``), or None
    """

    source: str
    format: str
    unit: str
    column: str
    threshold: float
    n_frames: int
    n_atoms: int
    elements: Dict[str, int]
    element_source: str
    radius: float
    series: dict
    summary: dict
    first_crossing: Optional[dict]
    excursions: List[dict]
    top_atoms: List[dict]
    top_frames: List[dict]
    selection: Optional[Selection] = None
    geometry: Optional[GeometryReport] = None
    halt_vs_geometry: Optional[dict] = None
    notes: List[str] = field(default_factory=list)
    files: Dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "format": 1, "source": self.source, "input_format": self.format, "unit": self.unit,
            "column": self.column, "threshold": self.threshold, "n_frames": self.n_frames, "n_atoms": self.n_atoms,
            "elements": self.elements, "element_source": self.element_source, "radius": self.radius,
            "summary": self.summary, "first_crossing": self.first_crossing, "excursions": self.excursions,
            "top_atoms": self.top_atoms, "top_frames": self.top_frames,
            "selection": None if self.selection is None else self.selection.to_dict(),
            "geometry": None if self.geometry is None else self.geometry.to_dict(),
            "halt_vs_geometry": self.halt_vs_geometry,
            "series": self.series, "notes": self.notes, "files": self.files,
        }

    def to_json(self, path: PathLike) -> Path:
        return write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    def text(self) -> str:
        """A few lines for the terminal."""
        s, u = self.summary, self.unit
        lines = [f"{self.source}: {self.n_frames} frames (steps {self.series['step'][0]}..{self.series['step'][-1]}), "
                 f"{self.n_atoms} atoms ({', '.join(f'{n} {e}' for e, n in self.elements.items())}); "
                 f"{self.column} force std in {u}, threshold {self.threshold:g}",
                 f"max {s['max']:.4g} (step {s['max_step']}, atom {s['max_atom_id']} {s['max_element']}), "
                 f"mean {s['mean']:.4g}; frames above threshold {s['frames_above']}/{self.n_frames} "
                 f"({s['fraction_frames_above']:.1%}), atom-frames above {s['fraction_atoms_above']:.2%}"]
        fc = self.first_crossing
        lines.append("threshold never crossed" if fc is None else
                     f"first crossing: step {fc['step']} (frame {fc['frame']}), atom {fc['atom_id']} "
                     f"{fc['element']} {fc['value']:.4g}; {len(self.excursions)} excursion(s) above threshold")
        if self.geometry is not None:
            fu, fc = self.geometry.first_unphysical, self.first_crossing
            lines.append("geometry: " + ("no unphysical frame" if fu is None else
                                         f"first unphysical step {fu['step']} (frame {fu['frame']}: "
                                         f"{', '.join(e.replace('_', ' ') for e in fu['events'])})")
                         + "; first threshold crossing " + ("none" if fc is None else f"step {fc['step']}")
                         + f": {self.halt_vs_geometry['text']}")
        if self.selection is not None:
            sel = self.selection
            lines.append(f"selected {len(sel.frames)} of {sel.n_candidates} candidate frames (cap {sel.n_max}, "
                         f"min gap {sel.min_gap} steps): steps {', '.join(str(x) for x in sel.steps) or '-'}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _r(x: float) -> float:
    return float(x)


def analyze(traj: UncertaintyTrajectory, threshold: float, column="total", top: int = 10,
            radius: float = 3.0, geometry: bool = True, close_factor: float = CLOSE_FACTOR,
            bond_factor: float = BOND_FACTOR, lasting_frames: int = LASTING_FRAMES) -> AnalysisResult:
    """Time series, crossings, top atoms (with neighbours within ``radius`` A) and frames of one trajectory.

    With ``geometry`` (default) also the geometry sanity of every frame
    (:func:`~bnnmd.analysis.geometry_report` with ``close_factor``, ``bond_factor`` and
    ``lasting_frames``) and its
    timing against the first crossing (:func:`~bnnmd.analysis.halt_timing`).
    """
    kind = column_kind(column)
    if not np.isfinite(threshold) or threshold < 0:
        raise AnalysisError(f"threshold {threshold}: it must be a finite number >= 0",
                            f"give the force std above which a frame is uncertain, in {traj.unit}")
    if top < 0:
        raise AnalysisError(f"--top {top}: must be 0 or more", "give e.g. --top 10")
    if radius <= 0:
        raise AnalysisError(f"--radius {radius}: must be positive", "give a neighbour radius in A, e.g. 3.0")
    if geometry:
        check_factors(close_factor, bond_factor, lasting_frames)
    u = traj.values(kind)
    n_frames, n_atoms = u.shape
    if n_frames == 0:
        raise AnalysisError(f"{traj.source} holds no frames", "give a trajectory with at least one frame")
    steps = np.asarray(traj.steps)
    els = np.asarray(traj.elements).astype(str)
    species = element_order(els)
    above = u > threshold
    fmax, fmean, arg = u.max(1), u.mean(1), u.argmax(1)
    n_above = above.sum(1)
    series = {
        "frame": list(range(n_frames)), "step": [int(s) for s in steps],
        "max": [_r(x) for x in fmax], "mean": [_r(x) for x in fmean],
        "fraction_above": [_r(x) for x in n_above / n_atoms], "atoms_above": [int(x) for x in n_above],
        "max_atom_id": [int(traj.ids[a]) for a in arg], "max_element": [str(els[a]) for a in arg],
        "element_mean": {e: [_r(x) for x in u[:, els == e].mean(1)] for e in species},
        "element_max": {e: [_r(x) for x in u[:, els == e].max(1)] for e in species},
    }
    crossing = np.flatnonzero(fmax > threshold)

    def at(f: int, a: int) -> dict:
        return {"frame": int(f), "step": int(steps[f]), "atom_id": int(traj.ids[a]), "atom_index": int(a),
                "element": str(els[a]), "value": _r(u[f, a])}

    first = None
    if len(crossing):
        f = int(crossing[0])
        first = dict(at(f, int(arg[f])), atoms_above=int(n_above[f]))
    excursions = []
    if len(crossing):
        breaks = np.flatnonzero(np.diff(crossing) > 1)
        for run in np.split(crossing, breaks + 1):
            peak = int(run[np.argmax(fmax[run])])
            excursions.append({"start_frame": int(run[0]), "end_frame": int(run[-1]),
                               "start_step": int(steps[run[0]]), "end_step": int(steps[run[-1]]),
                               "n_frames": int(len(run)), "peak": at(peak, int(arg[peak]))})
    # atoms by their peak over the trajectory (each atom once), ties to the lower index
    peak_val, peak_frame = u.max(0), u.argmax(0)
    order = np.lexsort((np.arange(n_atoms), -peak_val))[:top]
    top_atoms = []
    notes = list(traj.notes)
    for rank, a in enumerate(order):
        f = int(peak_frame[a])
        entry = dict(at(f, int(a)), rank=rank + 1, frames_above=int(above[:, a].sum()))
        for k in traj.kinds:
            entry[k] = _r(traj.uncertainty[k][f, a])
        entry["environment"] = atom_environment(traj, f, int(a), radius)
        top_atoms.append(entry)
    if traj.periodic and top_atoms:
        half = min(half_box_width(traj.box(e["frame"])) for e in top_atoms)
        if radius > half:
            notes.append(f"--radius {radius:g} A exceeds half the box width ({half:.3g} A): minimum-image "
                         "distances count each neighbour once, periodic images beyond are missed")
    forder = np.lexsort((np.arange(n_frames), -fmax))[:top]
    top_frames = [{"frame": int(f), "step": int(steps[f]), "max": _r(fmax[f]), "mean": _r(fmean[f]),
                   "atoms_above": int(n_above[f]), "fraction_above": _r(n_above[f] / n_atoms),
                   "atom_id": int(traj.ids[arg[f]]), "element": str(els[arg[f]])} for f in forder]
    fm = int(np.argmax(fmax))
    summary = {
        "max": _r(fmax[fm]), "max_frame": fm, "max_step": int(steps[fm]), "max_atom_id": int(traj.ids[arg[fm]]),
        "max_element": str(els[arg[fm]]), "mean": _r(u.mean()), "median_frame_max": _r(np.median(fmax)),
        "p95": _r(np.percentile(u, 95)),
        "frames_above": int(len(crossing)), "fraction_frames_above": _r(len(crossing) / n_frames),
        "atom_frames_above": int(above.sum()), "fraction_atoms_above": _r(above.mean()),
        "first_crossing_step": None if first is None else first["step"],
        "per_element": {e: {"n_atoms": int((els == e).sum()), "mean": _r(u[:, els == e].mean()),
                            "max": _r(u[:, els == e].max()), "fraction_above": _r(above[:, els == e].mean())}
                        for e in species},
        "per_kind": {k: {"max": _r(v.max()), "mean": _r(v.mean()), "p95": _r(np.percentile(v, 95))}
                     for k, v in traj.uncertainty.items()},
    }
    if "epistemic" in traj.uncertainty and "total" in traj.uncertainty:
        tot = float((traj.uncertainty["total"] ** 2).sum())
        summary["epistemic_variance_fraction"] = _r((traj.uncertainty["epistemic"] ** 2).sum() / tot) if tot else None
    geo = timing = None
    if geometry:
        geo = geometry_report(traj, close_factor=close_factor, bond_factor=bond_factor, lasting_frames=lasting_frames)
        timing = halt_timing(geo, first)
        notes += geo.notes
    return AnalysisResult(
        source=traj.source, format=traj.format, unit=traj.unit, column=kind, threshold=float(threshold),
        n_frames=n_frames, n_atoms=n_atoms, elements={e: int((els == e).sum()) for e in species},
        element_source=traj.element_source, radius=float(radius), series=series, summary=summary,
        first_crossing=first, excursions=excursions, top_atoms=top_atoms, top_frames=top_frames, geometry=geo,
        halt_vs_geometry=timing, notes=notes)
