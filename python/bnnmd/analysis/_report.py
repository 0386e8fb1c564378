"""PNG plots (matplotlib's Agg canvas, no pyplot state) and the Markdown report of an analysis.

* ``uncertainty_time.png``      largest and mean per-atom uncertainty over the steps, the threshold,
                                the first crossing and the selected frames; the fraction of atoms above
* ``uncertainty_elements.png``  per-element mean (and max) over the steps
* ``uncertainty_hist.png``      histogram of all per-atom values per element, with the threshold
* ``geometry_time.png``         smallest d_ij / (R_i + R_j) and shortest distance over the steps, with
                                ``close_factor``, the first crossing and the first unphysical frame
                                (only when the analysis has a geometry report)
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bnnmd._files import write_atomic
from bnnmd.analysis._analyze import AnalysisResult
from bnnmd.analysis._trajectory import UncertaintyTrajectory

PathLike = Union[str, os.PathLike]
PLOT_FILES = ("uncertainty_time.png", "uncertainty_elements.png", "uncertainty_hist.png", "geometry_time.png")
REPORT_FILE = "report.md"


def _figure(rows: int = 1, width: float = 7.0, height: float = 3.6, sharex: bool = True):
    fig = Figure(figsize=(width, height * rows), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(rows, 1, 1)]
    for i in range(1, rows):
        axes.append(fig.add_subplot(rows, 1, i + 1, sharex=axes[0] if sharex else None))
    return fig, axes


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return write_atomic(path, buf.getvalue())


def _xlabel(result: AnalysisResult) -> str:
    return "MD step" if result.format == "lammpsdump" else "step (info['step'] or frame index)"


def write_plots(result: AnalysisResult, traj: UncertaintyTrajectory, directory: PathLike) -> List[Path]:
    """Draw :data:`PLOT_FILES` into ``directory`` (the last only when ``result.geometry`` is set); return
    their paths."""
    directory = Path(directory)
    s = result.series
    steps = np.array(s["step"])
    unit, thr = result.unit, result.threshold
    files = []

    fig, (ax, ax2) = _figure(2, height=3.0)
    ax.plot(steps, s["max"], color="C3", lw=1.2, label="max over atoms")
    ax.plot(steps, s["mean"], color="C0", lw=1.2, label="mean over atoms")
    ax.axhline(thr, color="k", ls="--", lw=1, label=f"threshold {thr:g}")
    if result.first_crossing is not None:
        ax.axvline(result.first_crossing["step"], color="C1", ls=":", lw=1,
                   label=f"first crossing (step {result.first_crossing['step']})")
    if result.selection is not None and result.selection.frames:
        sel = result.selection
        ax.plot(sel.steps, [f.value for f in sel.frames], "o", mfc="none", color="C2", ms=7,
                label=f"selected ({len(sel.frames)})")
    ax.set_ylabel(f"{result.column} force std ({unit})")
    ax.legend(fontsize=8)
    ax2.plot(steps, s["fraction_above"], color="C4", lw=1.2)
    ax2.set_ylabel("fraction of atoms\nabove threshold")
    ax2.set_xlabel(_xlabel(result))
    ax2.set_ylim(bottom=0)
    files.append(_save(fig, directory / PLOT_FILES[0]))

    fig, (ax,) = _figure(1)
    for i, (e, mean) in enumerate(s["element_mean"].items()):
        ax.plot(steps, mean, color=f"C{i}", lw=1.2, label=f"{e} mean ({result.elements[e]} atoms)")
        ax.plot(steps, s["element_max"][e], color=f"C{i}", lw=0.8, ls=":", label=f"{e} max")
    ax.axhline(thr, color="k", ls="--", lw=1, label=f"threshold {thr:g}")
    ax.set_xlabel(_xlabel(result))
    ax.set_ylabel(f"{result.column} force std ({unit})")
    ax.legend(fontsize=8, ncol=2)
    files.append(_save(fig, directory / PLOT_FILES[1]))

    fig, (ax,) = _figure(1)
    u = traj.values(result.column)
    els = np.asarray(traj.elements).astype(str)
    edges = np.linspace(0.0, max(float(u.max()), thr) * 1.02 + 1e-12, 61)
    for i, e in enumerate(result.elements):
        ax.hist(u[:, els == e].ravel(), bins=edges, histtype="step", lw=1.4, color=f"C{i}", label=e)
    ax.axvline(thr, color="k", ls="--", lw=1, label=f"threshold {thr:g}")
    ax.set_yscale("log")
    ax.set_xlabel(f"per-atom {result.column} force std ({unit})")
    ax.set_ylabel("atom-frames")
    ax.legend(fontsize=8)
    files.append(_save(fig, directory / PLOT_FILES[2]))

    geo = result.geometry
    if geo is not None:
        fig, (ax, ax2) = _figure(2, height=3.0)
        ax.plot(geo.steps, geo.min_ratio, color="C0", lw=1.2, label="min over pairs")
        ax.axhline(geo.close_factor, color="C3", ls="--", lw=1, label=f"too close ({geo.close_factor:g})")
        for a in (ax, ax2):
            if result.first_crossing is not None:
                a.axvline(result.first_crossing["step"], color="C1", ls=":", lw=1,
                          label=f"first crossing (step {result.first_crossing['step']})")
            if geo.first_unphysical is not None:
                a.axvline(geo.first_unphysical["step"], color="C3", ls="-.", lw=1,
                          label=f"first unphysical (step {geo.first_unphysical['step']})")
        ax.set_ylabel("$d_{ij} / (R_i + R_j)$")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax2.plot(geo.steps, geo.min_distance, color="C2", lw=1.2)
        ax2.set_ylabel("shortest distance (A)")
        ax2.set_xlabel(_xlabel(result))
        ax2.set_ylim(bottom=0)
        files.append(_save(fig, directory / PLOT_FILES[3]))
    return files


def _f(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.4g}"


def _event_row(name: str, event: Optional[dict], what: str = "") -> str:
    if event is None:
        return f"| {name} | never | - | - |"
    return f"| {name} | {event['step']} | {event['frame']} | {what or event['description']} |"


def _geometry_section(result: AnalysisResult) -> List[str]:
    geo, timing = result.geometry, result.halt_vs_geometry
    radii = ", ".join(f"{e} {r:.2f}" for e, r in geo.radii.items())
    bonds = ", ".join(geo.initial_bonds[:20]) + (f", ... ({len(geo.initial_bonds)} in all)"
                                                 if len(geo.initial_bonds) > 20 else "")
    out = ["", "## Geometry", "",
           f"Covalent radii R (A, `ase.data.covalent_radii`): {radii}. Bonded: d < {geo.bond_factor:g} "
           f"(R_i + R_j); too close: d < {geo.close_factor:g} (R_i + R_j); distances "
           + ("with the minimum image" if geo.periodic else "in open space (no periodic box)")
           + f". Frame 0 has {len(geo.initial_bonds)} bonds" + (f": {bonds}." if bonds else "."),
           "", f"**{timing['text'][:1].upper() + timing['text'][1:]}.**", ""]
    out += ["| event | step | frame | what |", "|---|---|---|---|"]
    fc = result.first_crossing
    out.append(_event_row("first threshold crossing", fc, "" if fc is None else
                          f"atom {fc['atom_id']} {fc['element']}, {_f(fc['value'])} > {result.threshold:g}"))
    out.append(_event_row("**first unphysical geometry**", geo.first_unphysical))
    out.append(_event_row(f"first lasting bond-graph change (>= {geo.lasting_frames} frames or to the end)",
                          geo.first_lasting_bond_change))
    out.append(_event_row("first bond-graph change (any length)", geo.first_bond_change))
    out.append(_event_row("first atoms too close", geo.first_too_close))
    out.append(_event_row("first H2 formed", geo.first_h2_formed))
    if geo.n_frames and np.isfinite(geo.min_ratio).any():
        k = int(np.nanargmin(geo.min_ratio))
        out.append(f"| smallest d/(R_i + R_j) | {geo.steps[k]} | {k} | {geo.min_ratio[k]:.3f} "
                   f"({geo.min_ratio_pair[k]}) |")
        k = int(np.nanargmin(geo.min_distance))
        out.append(f"| shortest distance | {geo.steps[k]} | {k} | {geo.min_distance[k]:.3f} A "
                   f"({geo.min_distance_pair[k]}) |")
    out += ["", f"Unphysical: atoms too close, a new H-H bond, or a change of frame 0's bond graph that lasts "
                f"{geo.lasting_frames} frames or to the last frame (a bond broken or formed leaves the intact "
                f"molecules a model is trained on; a shorter change is usually a hot bond vibration). Only dumped "
                f"frames are seen."]
    return out


def markdown(result: AnalysisResult, plots: Optional[List[str]] = None, selection_file: Optional[str] = None) -> str:
    """The compact Markdown report (plots and the selection are linked by file name)."""
    s, u = result.summary, result.unit
    series = result.series
    out = [f"# Uncertainty analysis: `{Path(result.source).name}`", ""]
    out.append(f"{result.n_frames} frames, steps {series['step'][0]} to {series['step'][-1]}; {result.n_atoms} atoms "
               f"({', '.join(f'{n} {e}' for e, n in result.elements.items())}; elements from "
               f"{result.element_source}). Quantity: **{result.column}** per-atom force std in {u}; "
               f"threshold **{result.threshold:g}** (a frame is above when its largest atom is `>` it).")
    out += ["", "| | value |", "|---|---|",
            f"| largest per-atom std | {_f(s['max'])} (step {s['max_step']}, atom {s['max_atom_id']} "
            f"{s['max_element']}) |",
            f"| mean per-atom std | {_f(s['mean'])} |",
            f"| 95th percentile per-atom std | {_f(s['p95'])} |",
            f"| frames above threshold | {s['frames_above']} of {result.n_frames} ({s['fraction_frames_above']:.1%}) |",
            f"| atom-frames above threshold | {s['atom_frames_above']} ({s['fraction_atoms_above']:.2%}) |"]
    fc = result.first_crossing
    out.append("| first crossing | never |" if fc is None else
               f"| first crossing | step {fc['step']} (frame {fc['frame']}): atom {fc['atom_id']} {fc['element']}, "
               f"{_f(fc['value'])}; {fc['atoms_above']} atom(s) above |")
    out.append(f"| excursions above threshold | {len(result.excursions)} |")
    if s.get("epistemic_variance_fraction") is not None:
        out.append(f"| epistemic share of the variance | {s['epistemic_variance_fraction']:.1%} |")
    out += ["", "Per element:", "", f"| element | atoms | mean | max | atom-frames above |", "|---|---|---|---|---|"]
    for e, v in s["per_element"].items():
        out.append(f"| {e} | {v['n_atoms']} | {_f(v['mean'])} | {_f(v['max'])} | {v['fraction_above']:.2%} |")
    if result.geometry is not None:
        out += _geometry_section(result)
    if plots:
        out += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    if result.excursions:
        out += ["", "## Excursions above the threshold", "",
                "| steps | frames | peak step | peak atom | peak |", "|---|---|---|---|---|"]
        for ex in result.excursions[:20]:
            p = ex["peak"]
            out.append(f"| {ex['start_step']}-{ex['end_step']} | {ex['n_frames']} | {p['step']} | "
                       f"{p['atom_id']} {p['element']} | {_f(p['value'])} |")
        if len(result.excursions) > 20:
            out.append(f"| ... {len(result.excursions) - 20} more (JSON) | | | | |")
    if result.top_atoms:
        out += ["", f"## Most uncertain atoms (each at its peak frame; neighbours within {result.radius:g} A)", "",
                "| # | atom | element | step | std | frames above | nearest (A) | CN | neighbours |",
                "|---|---|---|---|---|---|---|---|---|"]
        for a in result.top_atoms:
            env = a["environment"]
            nb = ", ".join(f"{n['element']}{n['atom_id']} {n['distance']:.2f}" for n in env["neighbours"][:6])
            if len(env["neighbours"]) > 6:
                nb += ", ..."
            out.append(f"| {a['rank']} | {a['atom_id']} | {a['element']} | {a['step']} | {_f(a['value'])} | "
                       f"{a['frames_above']} | {_f(env['nearest_distance'])} ({env['nearest_element']}"
                       f"{env['nearest_atom_id']}) | {env['coordination']} | {nb or '-'} |")
    if result.top_frames:
        out += ["", "## Most uncertain frames", "", "| step | frame | max | mean | atoms above | atom |",
                "|---|---|---|---|---|---|"]
        for f in result.top_frames:
            out.append(f"| {f['step']} | {f['frame']} | {_f(f['max'])} | {_f(f['mean'])} | {f['atoms_above']} | "
                       f"{f['atom_id']} {f['element']} |")
    sel = result.selection
    if sel is not None:
        out += ["", "## Selected for labelling", "",
                f"{len(sel.frames)} of {sel.n_candidates} frames above the threshold (cap {sel.n_max}; at least "
                f"{sel.min_gap} steps apart; greedy farthest-point on the structural descriptor)"
                + (f", written to [`{Path(selection_file).name}`]({Path(selection_file).name})" if selection_file
                   and sel.frames else "") + ".", ""]
        if sel.frames:
            out += ["| pick | step | frame | max | atom | atoms above | descriptor distance |",
                    "|---|---|---|---|---|---|---|"]
            for i, f in enumerate(sel.frames):
                out.append(f"| {i + 1} | {f.step} | {f.frame} | {_f(f.value)} | {f.atom_id} {f.element} | "
                           f"{f.atoms_above} | {_f(f.distance)} |")
    if result.notes:
        out += ["", "Notes:", ""] + [f"* {n}" for n in result.notes]
    return "\n".join(out) + "\n"


def write_report(result: AnalysisResult, traj: UncertaintyTrajectory, directory: PathLike, plots: bool = True,
                 selection_file: Optional[PathLike] = None) -> Dict[str, str]:
    """Write the plots and ``report.md`` into ``directory``; record and return the files written."""
    directory = Path(directory)
    files = write_plots(result, traj, directory) if plots else []
    result.files.update({p.stem: str(p) for p in files})
    sel = None if selection_file is None else str(selection_file)
    report = write_atomic(directory / REPORT_FILE, markdown(result, [str(p) for p in files], sel))
    result.files["report"] = str(report)
    return dict(result.files)
