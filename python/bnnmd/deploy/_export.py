"""``bnn-export``: k posterior samples -> ONE stacked model file with metadata.

Two formats hold the same model and the same metadata: TorchScript (``.pth``, any other suffix)
and an AOTInductor package (``.pt2``, :mod:`bnnmd.deploy._pt2`), chosen by the suffix of the
output or by ``fmt``.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import torch

import bnnmd
from bnnmd._errors import BnnmdError
from bnnmd._files import write_atomic
from bnnmd.deploy._module import DeployedModel
from bnnmd.deploy._pt2 import METADATA_KEY, compile_package, read_package_metadata
from bnnmd.nn import script
from bnnmd.posterior import (DEFAULT_HALT_RULE, EXTRA_FILE, FORMAT_VERSION, QUANTITIES, CalibrationError,
                             HaltRuleError, SampleError, StdMap, choose, find_calibration, halt_threshold,
                             load_chosen, metadata_to_text, parse_metadata, parse_rule)

PathLike = Union[str, os.PathLike]


class ExportError(BnnmdError, ValueError):
    """Samples that cannot be exported as asked; the message says why and what to do."""


def _find_calibration(samples_dir: PathLike):
    try:
        return find_calibration(samples_dir)
    except CalibrationError as exc:
        raise ExportError(str(exc)) from None


def _maps(cal) -> Dict[str, StdMap]:
    return {q: StdMap.scale(1.0) if cal is None else cal.map(q) for q in QUANTITIES}


def read_calibration(samples_dir: PathLike) -> Dict[str, StdMap]:
    """The calibration maps of ``samples/calibration.json`` (written by ``bnn-eval``); identity when absent."""
    return _maps(_find_calibration(samples_dir))


def _halt(cal, rule: str) -> Optional[Tuple[float, str]]:
    """``(threshold, description)`` of ``rule`` on the halt statistics that ``bnn-eval --calibrate-on``
    stored with the calibration ``cal``; None when there are none."""
    parse_rule(rule)  # a bad rule is an error even without statistics
    if cal is None or cal.halt is None:
        return None
    return halt_threshold(cal.halt, rule)


def _check_writable(out: Path) -> None:
    """Fail before any work, naming the path as given, when ``out`` cannot be a file (its parent
    directories are created, as the writer would)."""
    for parent in reversed(out.parents):
        if parent.exists() and not parent.is_dir():
            raise ExportError(f"{out}: cannot be written: {parent} is a file, not a directory; give a path in a "
                              "directory, e.g. runs/model.pth")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"{out}: cannot be written ({exc.strerror}); give a path in a writable directory") from None
    if out.is_dir():
        raise ExportError(f"{out} is a directory; give a file name, e.g. {out / 'model.pth'}")


#: The export formats: TorchScript and AOTInductor.
FORMATS = ("torchscript", "pt2")


def format_of(out: PathLike, fmt: Optional[str] = None) -> str:
    """``fmt`` when given, else ``pt2`` for a ``.pt2`` file and ``torchscript`` for anything else."""
    if fmt is None:
        return "pt2" if Path(out).suffix == ".pt2" else "torchscript"
    if fmt not in FORMATS:
        raise ExportError(f"format {fmt!r} is unknown; use one of {', '.join(FORMATS)}")
    # the loaders (C++ evaluator, read_metadata) tell the formats by the suffix: keep the two in step
    if fmt == "torchscript" and Path(out).suffix == ".pt2":
        raise ExportError(f"{out}: a .pt2 name for a TorchScript file; name it .pth or use --format pt2")
    if fmt == "pt2" and Path(out).suffix != ".pt2":
        raise ExportError(f"{out}: a .pt2 package needs a name ending in .pt2 (the loaders tell the formats "
                          "by it); name it OUT.pt2")
    return fmt


def export(samples_dir: PathLike, out: PathLike, k: Optional[int] = None,
           select: Optional[Sequence[int]] = None, dtype: str = "float64", freeze: bool = False,
           halt_rule: Optional[str] = None, fmt: Optional[str] = None, device: str = "cpu",
           halt_threshold: Optional[float] = None) -> Path:
    """Stack samples of ``samples_dir`` into one model file ``out``: TorchScript, or an AOTInductor
    package for a ``.pt2`` name or ``fmt="pt2"`` (compiled for ``device``, checked against the eager
    model before it is written).

    MC-dropout runs hold one sample: ``k`` is then the number of dropout masks. With halt
    statistics in ``samples/calibration.json`` (``bnn-eval --calibrate-on``), the threshold of
    ``halt_rule`` (:mod:`bnnmd.posterior._halt`; None: ``DEFAULT_HALT_RULE`` when there are statistics,
    else none) goes into the metadata. ``halt_threshold`` (model force unit) stores that number
    instead of a rule's: a threshold fixed across models, e.g. bnn-learn's rounds, which keep the
    start model's. Returns the path written (atomically).
    """
    cal = _find_calibration(samples_dir)
    if halt_threshold is not None:
        if halt_rule is not None:
            raise ExportError("give either a halt rule or a halt threshold, not both")
        if not (isinstance(halt_threshold, (int, float)) and math.isfinite(halt_threshold) and halt_threshold > 0):
            raise ExportError(f"halt threshold {halt_threshold!r}: must be a number > 0 (a per-atom force std in "
                              "the model's force unit)")
        halt = (float(halt_threshold), f"fixed: {float(halt_threshold):.6g} (given, not from validation data)")
    else:
        try:
            halt = _halt(cal, halt_rule or DEFAULT_HALT_RULE)
        except HaltRuleError as exc:
            raise ExportError(str(exc)) from None
    if halt is None and halt_rule is not None:
        raise ExportError(f"halt rule {halt_rule!r} needs validation statistics, and {samples_dir} has none; run "
                          f"bnn-eval {samples_dir} --data split:val --calibrate-on split:val first")
    if dtype not in ("float64", "float32"):
        raise ExportError(f"dtype {dtype!r}: use float64 or float32")
    fmt = format_of(out, fmt)
    _check_writable(Path(out))
    if fmt == "torchscript" and device != "cpu":
        raise ExportError(f"device {device!r} is for .pt2 packages; a TorchScript file runs on any device "
                          "(choose it in pair_style bnn or BNNCalculator)")
    if freeze and fmt == "pt2":
        raise ExportError("--freeze is for TorchScript; a .pt2 package is compiled and needs no freezing")
    if k is not None and select is not None:
        raise ExportError("give either --k or --select, not both")
    try:
        chosen = choose(samples_dir, k, select)
        model = load_chosen(chosen, getattr(torch, dtype))
    except SampleError as exc:
        raise ExportError(str(exc)) from None
    files = chosen.files
    indices = list(dict.fromkeys(chosen.indices))  # MC dropout: its one file
    model.eval()
    sha = hashlib.sha256()
    for i in indices:
        sha.update(files[i].read_bytes())
    maps = _maps(cal)
    cfg = model.config
    meta = {
        "format_version": FORMAT_VERSION, "type_names": list(cfg.type_names), "cutoff": float(cfg.cutoff),
        "num_layers": int(cfg.num_layers), "num_samples": int(model.num_samples),
        "energy_unit": cfg.energy_unit, "length_unit": cfg.length_unit, "dtype": dtype,
        "calibration_forces": maps["forces"], "calibration_energy": maps["energy"], "method": chosen.method,
        "samples_sha256": sha.hexdigest(), "bnnmd_version": bnnmd.__version__,
        "torch_version": torch.__version__,
        "halt_threshold": None if halt is None else float(halt[0]),
        "halt_rule": None if halt is None else halt[1],
    }
    if fmt == "pt2":
        return _export_pt2(model, chosen.dropout, metadata_to_text(meta), out, device)
    module = script(DeployedModel(model))
    if freeze:
        module = torch.jit.freeze(module.eval())
    buf = io.BytesIO()
    torch.jit.save(module, buf, _extra_files={EXTRA_FILE: metadata_to_text(meta)})
    return write_atomic(out, buf.getvalue())


def _export_pt2(model, dropout: bool, meta_text: str, out: PathLike, device: str) -> Path:
    if dropout:
        raise ExportError("MC-dropout samples draw random masks in every call, which a .pt2 package cannot "
                          "reproduce; export them to TorchScript (OUT.pth)")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ExportError(f"device {device!r}: torch sees no CUDA GPU here; compile the .pt2 on the machine "
                          "(and torch) that will run it, or export with --device cpu")
    try:
        return compile_package(DeployedModel(model.to(device)), meta_text, out, device)
    except RuntimeError as exc:
        if "compiled .pt2 differs" in str(exc):
            raise ExportError(f"{exc}; nothing was written. Export to TorchScript (OUT.pth) instead and report "
                              "this with the torch version") from None
        raise


def read_metadata(path: PathLike) -> Dict:
    """The metadata of an exported file, TorchScript or .pt2 (raises :class:`ExportError` for other files)."""
    if Path(path).suffix == ".pt2":
        return _read_pt2_metadata(path)
    extra = {EXTRA_FILE: ""}
    try:
        torch.jit.load(str(path), _extra_files=extra, map_location="cpu")
    except Exception as exc:
        raise ExportError(f"{path}: not a TorchScript archive ({type(exc).__name__}); "
                          "export one with bnn-export SAMPLES_DIR OUT.pth") from None
    if not extra[EXTRA_FILE]:
        raise ExportError(f"{path}: a TorchScript file without bnnmd metadata; export it with bnn-export")
    text = extra[EXTRA_FILE]
    return _parse(text.decode() if isinstance(text, bytes) else text, path)


def _read_pt2_metadata(path: PathLike) -> Dict:
    try:
        text = read_package_metadata(path).get(METADATA_KEY, "")
    except Exception as exc:
        raise ExportError(f"{path}: not an AOTInductor package this torch can load ({type(exc).__name__}); "
                          "export one with bnn-export SAMPLES_DIR OUT.pt2") from None
    if not text:
        raise ExportError(f"{path}: a .pt2 package without bnnmd metadata; export it with bnn-export")
    return _parse(text, path)


def _parse(text: str, path: PathLike) -> Dict:
    try:
        return parse_metadata(text, str(path))
    except RuntimeError as exc:
        raise ExportError(str(exc)) from None
