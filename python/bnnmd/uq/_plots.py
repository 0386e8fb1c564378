"""PNG plots of the predictive uncertainty (matplotlib's Agg canvas, no pyplot state).

* ``error_density.png``  observed vs predicted density of force-component errors (paper Fig. 4)
* ``roc.png``            ROC curve of detecting |force error| > threshold from the predicted variance
                         (paper Figs. 3, 5)
* ``error_vs_std.png``   error over predicted std with the 2-sigma envelope, energies and forces
                         (paper Fig. 6)
* ``reliability.png``    observed vs expected fraction inside central predictive intervals
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bnnmd._files import write_atomic
from bnnmd.uq._metrics import (auc_threshold_in, central_interval_coverage, error_detection_auc, moments, nece_bins,
                              roc_curve)

PathLike = Union[str, os.PathLike]
PLOT_FILES = ("error_density.png", "roc.png", "error_vs_std.png", "reliability.png")


def _figure(ncols: int = 1, width: float = 5.0, height: float = 4.0):
    fig = Figure(figsize=(width * ncols, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_atomic(path, buf.getvalue())


def plot_error_density(ax, qp, unit: str = "", label: str = "", width=None, limit=None, log: bool = False,
                       uncalibrated=None):
    """Observed histogram density of ``y - mean`` and the model's predicted density of it (Fig. 4)."""
    if width is None or limit is None:
        m = moments(qp.mu, qp.sigma)
        err = qp.y - m.mean
        limit = limit or float(np.quantile(np.abs(err), 0.995) * 1.2 + 1e-12)
        width = width or limit / 60.0
    b = nece_bins(qp.mu, qp.sigma, qp.y, width=width, limit=limit)
    centres = 0.5 * (b.edges[1:] + b.edges[:-1])
    ax.stairs(b.observed / b.width, b.edges, label="observed", color="C0", fill=True, alpha=0.4)
    ax.plot(centres, b.predicted / b.width, color="C3", label="predicted")
    if uncalibrated is not None:
        u = nece_bins(uncalibrated.mu, uncalibrated.sigma, uncalibrated.y, width=width, limit=limit)
        ax.plot(centres, u.predicted / u.width, ":", color="C1", label="predicted, uncalibrated")
    ax.set_xlabel(f"error {label} ({unit})" if unit else f"error {label}")
    ax.set_ylabel("density")
    if log:
        ax.set_yscale("log")
    ax.legend()


def plot_roc(ax, qp, threshold: float, label: str = "model"):
    m = moments(qp.mu, qp.sigma)
    labels = np.abs(qp.y - m.mean) > threshold
    fpr, tpr = roc_curve(m.variance, labels)
    auc = error_detection_auc(qp.mu, qp.sigma, qp.y, threshold)
    ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f}, {int(labels.sum())} outliers)")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.legend(loc="lower right")


def plot_error_vs_std(ax, qp, unit: str = "", title: str = "", max_points: int = 20000):
    """Signed error (prediction - observation, as the paper's Fig. 6) over predicted std, 2-sigma envelope."""
    m = moments(qp.mu, qp.sigma)
    std = np.sqrt(m.variance)
    err = m.mean - qp.y
    idx = np.arange(err.size)
    if err.size > max_points:
        idx = np.random.default_rng(0).choice(err.size, max_points, replace=False)
    outside = np.mean(np.abs(err) > 2 * std)
    ax.scatter(std[idx], err[idx], s=3, alpha=0.4, color="C0", rasterized=True)
    s = np.linspace(0, float(std.max()) * 1.05, 50)
    ax.plot(s, 2 * s, "C3", label=f"2 sigma ({outside:.1%} outside; Gaussian 4.6%)")
    ax.plot(s, -2 * s, "C3")
    ax.set_xlabel(f"predicted std ({unit})" if unit else "predicted std")
    ax.set_ylabel(f"prediction - truth ({unit})" if unit else "prediction - truth")
    ax.set_title(title)
    ax.legend(loc="upper left")


def plot_reliability(ax, qp, label: str, style: str = "o-", color=None):
    levels = np.linspace(0.0, 1.0, 21)
    ax.plot(levels, central_interval_coverage(qp.mu, qp.sigma, qp.y, levels), style, ms=3, label=label,
            color=color)


def write_plots(pred, directory: PathLike, auc_threshold: Optional[float] = None,
                uncalibrated=None) -> List[Path]:
    """Write the plots of :class:`~bnnmd.uq.Predictions` ``pred`` as PNG files into ``directory``.

    ``uncalibrated`` (predictions before calibration) adds their curves to the density
    and reliability plots (the ROC curve does not change: calibration keeps the ranking). Quantities missing from the data are left out.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    fu, eu = pred.force_unit, pred.energy_unit
    thr = auc_threshold if auc_threshold is not None else auc_threshold_in(pred.energy_unit, pred.length_unit)
    written = []

    if pred.forces is not None:
        fig, (a, b) = _figure(2)
        unc = None if uncalibrated is None else uncalibrated.forces
        plot_error_density(a, pred.forces, fu, "of force components", uncalibrated=unc)
        plot_error_density(b, pred.forces, fu, "of force components", log=True, uncalibrated=unc)
        a.set_title("force errors: observed vs predicted density")
        b.set_title("(log scale)")
        written.append(_save(fig, directory / "error_density.png"))

        fig, (ax,) = _figure(1)
        plot_roc(ax, pred.forces, thr, "model")
        ax.set_title(f"detecting |force error| > {thr:.3g} {fu}")
        written.append(_save(fig, directory / "roc.png"))

    present = [(q, getattr(pred, q)) for q in ("energy", "forces") if getattr(pred, q) is not None]
    fig, axes = _figure(len(present))
    for ax, (q, qp) in zip(axes, present):
        plot_error_vs_std(ax, qp, eu if q == "energy" else fu, "energies" if q == "energy" else "force components")
    written.append(_save(fig, directory / "error_vs_std.png"))

    fig, (ax,) = _figure(1)
    for i, (q, qp) in enumerate(present):
        plot_reliability(ax, qp, q, color=f"C{i}")
        raw = None if uncalibrated is None else uncalibrated.get(q)
        if raw is not None:
            plot_reliability(ax, raw, f"{q} (uncalibrated)", style=":", color=f"C{i}")
    ax.plot([0, 1], [0, 1], "k:", lw=1, label="ideal")
    ax.set_xlabel("expected fraction in central interval")
    ax.set_ylabel("observed fraction")
    ax.set_title("reliability (below the diagonal: overconfident)")
    ax.legend(loc="upper left")
    written.append(_save(fig, directory / "reliability.png"))
    return written
