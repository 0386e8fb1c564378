"""Predictions of k posterior samples on a dataset, their metrics, and the calibration fit."""

from __future__ import annotations

from bnnmd._errors import BnnmdError

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from ase.data import chemical_symbols

from bnnmd._files import jsonable, write_atomic
from bnnmd.data import AtomicDataset, DataError, GraphDataset, Split, TypeMapper, read_dataset, resolve_data_path
from bnnmd.data import keys as K
from bnnmd.bayes import VOIGT_COLS, VOIGT_ROWS
from bnnmd.posterior import (CALIBRATION_FILE, GROUP, QUANTITIES, Calibration, CalibrationError, SampleError, StdMap,
                             choose, evenly_spaced, find_calibration, halt_statistics, load_chosen, sample_files)
from bnnmd.uq._fitting import fit_map
from bnnmd.uq._metrics import AUC_THRESHOLD_KCAL_MOL_A, GAUSSIAN_COVERAGE, auc_threshold_in, compute_metrics
from bnnmd.uq._plots import write_plots

PathLike = Union[str, os.PathLike]

class EvaluationError(BnnmdError, ValueError):
    """A request bnn-eval cannot serve; the message names the problem and the fix."""


# ---- models ---------------------------------------------------------------------------------
@dataclass
class LoadedModel:
    """A stacked k-sample model with where it came from (``samples_dir`` is None for a bare model)."""

    model: Any
    samples_dir: Optional[Path] = None
    method: str = "unknown"
    k: int = 1
    available: Optional[int] = None  # sample files (None: MC dropout, any number of masks)
    indices: List[int] = field(default_factory=list)
    energy_unit: Optional[str] = None
    length_unit: Optional[str] = None


def load_model(samples_dir: PathLike, k: Optional[int] = None, dtype: torch.dtype = torch.float64) -> LoadedModel:
    """The samples of ``samples_dir`` as one model; ``k`` evenly spaced samples (MC dropout: k masks).

    Raises :class:`bnnmd.posterior.SampleError` for a missing/empty directory and
    :class:`EvaluationError` when ``k`` exceeds the samples there.
    """
    samples_dir = Path(samples_dir)
    if not samples_dir.exists():
        raise EvaluationError(f"{samples_dir}: samples directory does not exist; pass RUN_DIR/samples of a "
                              "run written by bnn-train")
    if k is not None and (isinstance(k, bool) or int(k) < 1):
        raise EvaluationError(f"k = {k}: the number of samples must be at least 1")
    sample_files(samples_dir)  # a directory without samples: SampleError
    try:
        chosen = choose(samples_dir, k)
    except SampleError as exc:
        raise EvaluationError(str(exc)) from None
    model = load_chosen(chosen, dtype)
    method, meta, available, indices = chosen.method, chosen.meta, chosen.available, chosen.indices
    return LoadedModel(model, samples_dir, method, int(model.num_samples), available, indices,
                       meta.get("energy_unit"), meta.get("length_unit"))


def _as_loaded(model_or_dir, k: Optional[int], dtype: torch.dtype) -> LoadedModel:
    if isinstance(model_or_dir, LoadedModel):
        if k is not None and k != model_or_dir.k:
            raise EvaluationError(f"k = {k} given with a model already loaded with k = {model_or_dir.k}")
        return model_or_dir
    if isinstance(model_or_dir, (str, os.PathLike)):
        return load_model(model_or_dir, k, dtype)
    model = model_or_dir
    if k is not None:
        if k > model.num_samples:
            raise EvaluationError(f"k = {k} but the model has only {model.num_samples} samples")
        model = model.select(evenly_spaced(model.num_samples, k)).eval()
    return LoadedModel(model, None, "model", int(model.num_samples), int(model.num_samples),
                       list(range(model.num_samples)))


# ---- data -----------------------------------------------------------------------------------
def resolve_data(spec: Union[PathLike, AtomicDataset], samples_dir: Optional[PathLike] = None
                 ) -> Tuple[AtomicDataset, str]:
    """A dataset and a description from a path, ``bundled:NAME``, ``split:test|val|train`` or a dataset.

    ``split:PART`` reads the frames of that part of ``RUN_DIR/split.json``, where
    ``RUN_DIR`` is the parent of ``samples_dir``.
    """
    if isinstance(spec, AtomicDataset):
        return spec, spec.source or "<dataset>"
    text = str(spec)
    if text.startswith("split:"):
        part = text.split(":", 1)[1]
        if part not in ("train", "val", "test"):
            raise EvaluationError(f"{text}: unknown split part {part!r}; use split:test, split:val or split:train")
        if samples_dir is None:
            raise EvaluationError(f"{text} needs the samples directory (its run's split.json); pass a file "
                                  "instead")
        split_file = Path(samples_dir).parent / "split.json"
        if not split_file.is_file():
            raise EvaluationError(f"{text}: no split file {split_file} (split:{part} means the frames of "
                                  "RUN_DIR/split.json next to RUN_DIR/samples); pass a data file instead")
        sp = Split.load(split_file).parts()[part]
        if len(sp) == 0:
            raise EvaluationError(f"{text}: the {part} part of {split_file} has no frames; pass another "
                                  "--data")
        return sp.load(), f"{text} ({len(sp)} frames of {sp.file})"
    path = resolve_data_path(text)
    if not path.exists():
        raise EvaluationError(f"{text}: data file does not exist; pass a dataset file, bundled:NAME, "
                              "split:test or split:val")
    return read_dataset(path), text


def _check_dataset(dataset: AtomicDataset, type_names: Sequence[str], desc: str) -> None:
    if dataset.forces is None and dataset.energy is None:
        raise EvaluationError(f"{desc}: has no reference forces and no energies, nothing to compare the "
                              "predictions with; evaluate on labelled data (e.g. the run's split:test)")
    known = {chemical_symbols.index(s) for s in type_names}
    missing = [int(z) for z in dataset.elements if int(z) not in known]
    if missing:
        names = ", ".join(chemical_symbols[z] for z in missing)
        raise EvaluationError(f"{desc}: element(s) {names} not in the model's type names "
                              f"{list(type_names)}; evaluate on data with those elements only, or train a "
                              f"model whose type_names include {names}")


# ---- predictions ----------------------------------------------------------------------------
@dataclass
class QuantityPredictions:
    """Per-sample means and stds ``[k, n]`` of n scalar predictions and the observations ``[n]``."""

    mu: np.ndarray
    sigma: np.ndarray
    y: np.ndarray

    @property
    def k(self) -> int:
        return self.mu.shape[0]

    def calibrated(self, std_map: StdMap, group: int) -> "QuantityPredictions":
        """The predictions with ``std_map`` applied to every unit of ``group`` (see bnnmd.posterior.StdMap)."""
        mu, sigma = std_map.apply(self.mu, self.sigma, group)
        return QuantityPredictions(mu, sigma, self.y)


@dataclass
class Predictions:
    """Force components (x, y, z of every atom, flattened) and frame energies of a dataset."""

    forces: Optional[QuantityPredictions]
    energy: Optional[QuantityPredictions]
    n_frames: int
    n_atoms: int
    energy_unit: str = "kcal/mol"
    length_unit: str = "A"
    # stress components (xx, yy, zz, yz, xz, xy of every frame, flattened; energy / length^3, ASE's
    # sign) when the data has stresses; sigma = sigma_W / V; not calibrated
    stress: Optional[QuantityPredictions] = None

    def get(self, quantity: str) -> Optional[QuantityPredictions]:
        return {"forces": self.forces, "energy": self.energy, "stress": self.stress}[quantity]

    def calibrated(self, cal: Optional[Calibration]) -> "Predictions":
        if cal is None:
            return self
        f = None if self.forces is None else self.forces.calibrated(cal.map("forces"), GROUP["forces"])
        e = None if self.energy is None else self.energy.calibrated(cal.map("energy"), GROUP["energy"])
        return Predictions(f, e, self.n_frames, self.n_atoms, self.energy_unit, self.length_unit, self.stress)

    @property
    def force_unit(self) -> str:
        return f"{self.energy_unit}/{self.length_unit}"


def predict(model, dataset: AtomicDataset, batch_size: int = 16, dtype: torch.dtype = torch.float64,
            seed: int = 0) -> Predictions:
    """Run the k-sample ``model`` over ``dataset`` (gradients on: forces by autograd; outputs detached).

    ``seed`` fixes the dropout masks of an MC-dropout model (the global RNG is left as it was).
    """
    type_names = list(model.config.type_names)
    _check_dataset(dataset, type_names, dataset.source or "dataset")
    if batch_size < 1:
        raise EvaluationError(f"batch_size = {batch_size}; use a positive batch size")
    gd = GraphDataset(dataset, TypeMapper(type_names), model.config.cutoff)
    model = model.to(dtype)
    was_training = model.training
    model.eval()
    parts: Dict[str, List[np.ndarray]] = {n: [] for n in ("f_mu", "f_sigma", "e_mu", "e_sigma", "s_mu", "s_sigma")}
    rows, cols = list(VOIGT_ROWS), list(VOIGT_COLS)
    try:
        with torch.random.fork_rng(devices=[]), torch.enable_grad():
            torch.manual_seed(seed)
            for batch in gd.batches(batch_size, dtype=dtype):
                out = model(batch)
                k = out[K.FORCES].shape[0]
                parts["f_mu"].append(out[K.FORCES].detach().reshape(k, -1).cpu().numpy())
                parts["f_sigma"].append(out[K.FORCES_STD].detach().unsqueeze(-1).expand(-1, -1, 3)
                                        .reshape(k, -1).cpu().numpy())
                parts["e_mu"].append(out[K.TOTAL_ENERGY].detach().cpu().numpy())
                parts["e_sigma"].append(out[K.TOTAL_ENERGY_STD].detach().cpu().numpy())
                if dataset.stress is not None:  # stress = -W / V
                    volume = torch.linalg.det(batch[K.CELL]).abs()
                    s_mu = -out[K.VIRIAL].detach()[:, :, rows, cols] / volume[None, :, None]
                    s_sigma = (out[K.VIRIAL_STD].detach() / volume[None, :]).unsqueeze(-1).expand(-1, -1, 6)
                    parts["s_mu"].append(s_mu.reshape(k, -1).cpu().numpy())
                    parts["s_sigma"].append(s_sigma.reshape(k, -1).cpu().numpy())
    finally:
        model.train(was_training)
    cat = {n: np.concatenate(v, axis=1).astype(np.float64) for n, v in parts.items() if v}
    forces = None if dataset.forces is None else QuantityPredictions(
        cat["f_mu"], cat["f_sigma"], dataset.forces.reshape(-1).astype(np.float64))
    energy = None if dataset.energy is None else QuantityPredictions(
        cat["e_mu"], cat["e_sigma"], dataset.energy.astype(np.float64))
    stress = None if dataset.stress is None else QuantityPredictions(
        cat["s_mu"], cat["s_sigma"], dataset.stress[:, rows, cols].reshape(-1).astype(np.float64))
    return Predictions(forces, energy, len(dataset), dataset.num_atoms_total, dataset.energy_unit,
                       dataset.length_unit, stress)


def _in_model_units(dataset: AtomicDataset, loaded: LoadedModel) -> AtomicDataset:
    eu, lu = loaded.energy_unit, loaded.length_unit
    if (eu and eu != dataset.energy_unit) or (lu and lu != dataset.length_unit):
        return dataset.convert_units(eu or dataset.energy_unit, lu or dataset.length_unit)
    return dataset


def metrics_of(pred: Predictions, auc_threshold: float = AUC_THRESHOLD_KCAL_MOL_A,
               nece_width: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """Flat ``{"forces.mae": ..., "energy.mll": ...}`` of every quantity present (``None`` if absent).

    ``auc_threshold`` is in kcal/mol/A (converted to the data's units).
    """
    out: Dict[str, Any] = {}
    thr = auc_threshold_in(pred.energy_unit, pred.length_unit, auc_threshold)
    for q in QUANTITIES:
        qp = pred.get(q)
        keys = ["mae", "rmse", "mll", "nece"] + (["auc"] if q == "forces" else [])
        if qp is None:
            out.update({f"{q}.{name}": None for name in keys})
            continue
        width = (nece_width or {}).get(q)
        m = compute_metrics(qp.mu, qp.sigma, qp.y, auc_threshold=thr if q == "forces" else None,
                            nece_width=width)
        out.update({f"{q}.{name}": value for name, value in m.items()})
    if pred.stress is not None:  # only for data with stresses; the std is 0 without a stress head
        qp = pred.stress
        if np.all(qp.sigma > 0):
            m = compute_metrics(qp.mu, qp.sigma, qp.y, nece_width=(nece_width or {}).get("stress"))
        else:
            m = {"mae": float(np.mean(np.abs(qp.mu.mean(axis=0) - qp.y))),
                 "rmse": float(np.sqrt(np.mean((qp.mu.mean(axis=0) - qp.y) ** 2)))}
        out.update({f"stress.{name}": value for name, value in m.items()})
    return out


# ---- results --------------------------------------------------------------------------------
@dataclass
class EvaluationResult:
    """Metrics (``metrics``: the flat JSON dict) and the predictions behind them."""

    metrics: Dict[str, Any]
    predictions: Predictions
    uncalibrated: Predictions
    calibration: Optional[Calibration] = None

    def __getitem__(self, key: str):
        return self.metrics[key]

    def to_dict(self) -> Dict[str, Any]:
        return jsonable(self.metrics)

    def to_json(self, path: Optional[PathLike] = None) -> str:
        """The metrics as strict JSON (NaN -> null); written atomically to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        if path is not None:
            write_atomic(path, text)
        return text

    def table(self) -> str:
        return format_table(self.metrics)

    def plots(self, directory: PathLike) -> List[Path]:
        """Write the PNG plots (see :func:`bnnmd.uq.write_plots`) into ``directory``."""
        return write_plots(self.predictions, directory, auc_threshold=self.metrics.get("forces.auc_threshold"),
                           uncalibrated=self.uncalibrated if self.calibration is not None else None)


def _get_calibration(calibration, loaded: LoadedModel) -> Optional[Calibration]:
    if calibration is None or calibration is False:
        return None
    if calibration is True:
        return find_calibration(loaded.samples_dir) if loaded.samples_dir is not None else None
    if isinstance(calibration, Calibration):
        return calibration
    return Calibration.load(calibration)


def evaluate(samples_or_model, data, k: Optional[int] = None, batch_size: int = 16,
             dtype: torch.dtype = torch.float64, calibration: Union[bool, Calibration, PathLike, None] = True,
             auc_threshold: float = AUC_THRESHOLD_KCAL_MOL_A, seed: int = 0,
             nece_width: Optional[Dict[str, float]] = None) -> EvaluationResult:
    """Metrics of the predictive mixture of ``k`` samples on ``data``.

    Parameters
    ----------
    samples_or_model : RUN_DIR/samples (path), a stacked ``StochasticNequIP`` or a :class:`LoadedModel`
    data : dataset file, ``bundled:NAME``, ``split:test``/``split:val`` (of the samples' run) or an
        :class:`~bnnmd.data.AtomicDataset`
    k : evenly spaced samples to use (MC dropout: number of masks); all when None
    calibration : True uses ``samples/calibration.json`` when present; False/None none; or a
        :class:`Calibration` or its path. When applied, ``metrics["uncalibrated"]`` holds the
        metrics before it.
    auc_threshold : force-error threshold of the ROC-AUC, in kcal/mol/A (paper: 1)
    nece_width : NECE bin width per quantity, e.g. ``{"forces": 0.05, "energy": 0.1}`` in the
        data's units (default: MAE/10 of the uncalibrated errors; fix it to compare models)

    Returns an :class:`EvaluationResult`; its ``metrics`` has the keys ``forces.mae``,
    ``forces.rmse``, ``forces.mll``, ``forces.nece``, ``forces.auc``, ``energy.mae``,
    ``energy.rmse``, ``energy.mll``, ``energy.nece`` and more (see docs/evaluation.md).
    """
    loaded = _as_loaded(samples_or_model, k, dtype)
    dataset, desc = resolve_data(data, loaded.samples_dir)
    dataset = _in_model_units(dataset, loaded)
    _check_dataset(dataset, loaded.model.config.type_names, desc)
    cal = _get_calibration(calibration, loaded)
    raw = predict(loaded.model, dataset, batch_size, dtype, seed)
    pred = raw.calibrated(cal)
    metrics: Dict[str, Any] = {}
    before = metrics_of(raw, auc_threshold, nece_width)
    # the same NECE bins before and after calibration (the errors do not change)
    widths = {q: before.get(f"{q}.nece_bin_width") for q in QUANTITIES}
    metrics.update(metrics_of(pred, auc_threshold, widths) if cal is not None else before)
    metrics.update({
        "n_frames": raw.n_frames, "n_atoms": raw.n_atoms, "k": loaded.k, "method": loaded.method,
        "sample_indices": loaded.indices,
        "samples": None if loaded.samples_dir is None else str(loaded.samples_dir), "data": desc,
        "units": {"energy": raw.energy_unit, "forces": raw.force_unit,
                  **({"stress": f"{raw.energy_unit}/{raw.length_unit}^3"} if raw.stress is not None else {})},
        "calibration": {"applied": cal is not None,
                        "file": None if cal is None or cal.path is None else str(cal.path),
                        "forces": None if cal is None else cal.map("forces").to_dict(),
                        "energy": None if cal is None else cal.map("energy").to_dict()},
    })
    if cal is not None:
        metrics["uncalibrated"] = before
    return EvaluationResult(metrics, pred, raw, cal)


def calibrate(samples_or_model, data, k: Optional[int] = None, batch_size: int = 16,
              dtype: torch.dtype = torch.float64, save: bool = True,
              auc_threshold: float = AUC_THRESHOLD_KCAL_MOL_A, seed: int = 0, kind: str = "scale") -> Calibration:
    """Fit one calibration map per quantity on ``data`` (the validation set).

    ``kind``: ``"scale"`` (one std factor per quantity, maximum MLL) or ``"isotonic"`` (a factor
    that depends on the predicted std, see :func:`bnnmd.uq.fit_isotonic`).

    With a samples directory and ``save=True`` it is written atomically to
    ``samples/calibration.json``, which :func:`evaluate` then applies.
    """
    loaded = _as_loaded(samples_or_model, k, dtype)
    dataset, desc = resolve_data(data, loaded.samples_dir)
    dataset = _in_model_units(dataset, loaded)
    _check_dataset(dataset, loaded.model.config.type_names, desc)
    if kind not in ("scale", "isotonic"):
        raise CalibrationError(f"calibration kind {kind!r}: use 'scale' or 'isotonic'")
    raw = predict(loaded.model, dataset, batch_size, dtype, seed)
    maps = {}
    for q in QUANTITIES:
        qp = raw.get(q)
        maps[q] = StdMap.scale(1.0) if qp is None else fit_map(kind, qp.mu, qp.sigma, qp.y, q)
    cal = Calibration(maps, {"data": desc, "kind": kind, "n_frames": raw.n_frames, "k": loaded.k, "method": loaded.method,
                                "fitted": [q for q in QUANTITIES if raw.get(q) is not None]})
    before = metrics_of(raw, auc_threshold)
    widths = {q: before.get(f"{q}.nece_bin_width") for q in QUANTITIES}
    cal.metrics_before = before
    cal.metrics_after = metrics_of(raw.calibrated(cal), auc_threshold, widths)
    if raw.forces is not None:
        f = raw.forces
        stress = None if raw.stress is None else (raw.stress.mu, raw.stress.sigma)
        cal.halt = halt_statistics(f.mu, f.sigma, f.y, dataset.n_atoms, cal.map("forces"), raw.force_unit, desc,
                                   stress, f"{raw.energy_unit}/{raw.length_unit}^3")
    if save and loaded.samples_dir is not None:
        cal.save(loaded.samples_dir / CALIBRATION_FILE)
    return cal


# ---- table ----------------------------------------------------------------------------------
_ROWS = [
    ("MAE", "mae"), ("RMSE", "rmse"), ("MLL", "mll"), ("NECE", "nece"),
    ("NECE (normalised errors)", "nece_normalised"), ("ROC-AUC |error| > {thr}", "auc"),
    ("mean predicted std", "mean_std"), ("  epistemic part", "mean_epistemic_std"),
    ("  aleatoric part", "mean_aleatoric_std"),
    (f"within 1 sigma (Gaussian {GAUSSIAN_COVERAGE[1]:.3f})", "within_1sigma"),
    (f"within 2 sigma (Gaussian {GAUSSIAN_COVERAGE[2]:.3f})", "within_2sigma"),
    (f"within 3 sigma (Gaussian {GAUSSIAN_COVERAGE[3]:.3f})", "within_3sigma"),
]


def _cell(value, raw=None) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    text = f"{value:.4g}"
    if raw is not None and isinstance(raw, float) and np.isfinite(raw) and f"{raw:.4g}" != text:
        text += f" [{raw:.4g}]"
    return text


def format_table(metrics: Dict[str, Any]) -> str:
    """A readable table of a metrics dict from :func:`evaluate` ("[...]": before calibration)."""
    raw = metrics.get("uncalibrated") or {}
    u = metrics.get("units", {})
    thr = metrics.get("forces.auc_threshold")
    lines = [f"samples: {metrics.get('samples')} ({metrics.get('method')}, k = {metrics.get('k')})",
             f"data:    {metrics.get('data')}: {metrics.get('n_frames')} frames, {metrics.get('n_atoms')} atoms",
             f"units:   energy {u.get('energy')}, forces {u.get('forces')}"
             + (f", stress {u['stress']} (ASE's sign)" if u.get("stress") else "")]
    cal = metrics.get("calibration") or {}
    if cal.get("applied"):
        desc = "; ".join(f"{q}: {StdMap.from_dict(cal[q]).describe()}" for q in QUANTITIES)
        lines.append(f"calibration: {desc} from {cal.get('file')}; [values before calibration]")
    else:
        lines.append("calibration: none")
    w = 36
    lines.append("")
    # a stress column for data with stresses (not calibrated: the same value before and after)
    columns = list(QUANTITIES) + (["stress"] if metrics.get("stress.mae") is not None else [])
    lines.append(f"{'metric':<{w}} " + " ".join(f"{q:>22}" for q in columns))
    for label, key in _ROWS:
        label = label.format(thr=f"{thr:.4g} {u.get('forces', '')}".strip() if thr is not None else "?")
        cells = [_cell(metrics.get(f"{q}.{key}"), raw.get(f"{q}.{key}")) for q in columns]
        lines.append(f"{label:<{w}} " + " ".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


