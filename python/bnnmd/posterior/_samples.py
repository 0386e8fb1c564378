"""Posterior samples on disk: one file per sample, any training method, one format.

A sample file is a plain dict that ``torch.load(path, weights_only=True)``
reads: format version, method, the model config (with ``num_samples = 1``), the
state dict of a single-sample model, metadata, and the file's inference plan
(:class:`Inference`: whether dropout stays on at inference and how many copies of the one file a
model takes by default), so that loading needs nothing of the method that wrote it.
"""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch

from bnnmd._errors import BnnmdError
from bnnmd._files import write_atomic
from bnnmd.nn import ModelConfig, StochasticNequIP

SAMPLE_FORMAT = 1
PathLike = Union[str, os.PathLike]


class SampleError(BnnmdError, ValueError):
    """An unusable sample file or directory; the message names it and the fix."""


def sample_path(samples_dir: PathLike, index: int) -> Path:
    return Path(samples_dir) / f"sample_{index:03d}.pt"


@dataclass(frozen=True)
class Inference:
    """How a run's sample files become a k-copy model (stored in every sample file).

    ``dropout``: dropout stays on at inference, one mask per copy, and the copies are the one file
    repeated (MC dropout; ``copies`` masks by default). Otherwise each copy is one file: all files,
    or ``k`` evenly spaced ones.
    """

    dropout: bool = False
    copies: Optional[int] = None  # the default number of copies of a dropout run (its mc_samples)

    def to_dict(self) -> Dict[str, Any]:
        return {"dropout": bool(self.dropout), "copies": None if self.copies is None else int(self.copies)}

    @classmethod
    def from_payload(cls, payload: Dict) -> "Inference":
        """The plan of a sample file's dict. Files written before the plan was stored (they have no
        ``inference`` entry) had the rule of their method: ``mc_dropout`` was the dropout one."""
        d = payload.get("inference")
        if d is None:
            if payload.get("method") == "mc_dropout":
                return cls(True, int(payload.get("meta", {}).get("mc_samples", 8)))
            return cls()
        return cls(bool(d.get("dropout", False)), d.get("copies"))


def save_sample(path: PathLike, model: StochasticNequIP, sample: int, method: str,
                meta: Optional[Dict] = None, inference: Inference = Inference()) -> Path:
    """Write sample ``sample`` of ``model`` (float64) atomically to ``path``, written by ``method``
    (a name, recorded) with its inference plan."""
    single = model.select([sample]).to(torch.float64)
    payload = {
        "format": SAMPLE_FORMAT,
        "method": str(method),
        "config": single.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in single.state_dict().items()},
        "meta": dict(meta or {}),
        "inference": inference.to_dict(),
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return write_atomic(path, buf.getvalue())


def read_sample(path: PathLike) -> Dict:
    """The dict stored in a sample file, checked."""
    path = Path(path)
    try:
        d = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise SampleError(f"{path}: sample file does not exist") from None
    except IsADirectoryError:
        raise SampleError(f"{path}: a directory, not a sample file; pass the file, or the samples directory "
                          "where a directory is asked for") from None
    except Exception:  # unpickling errors of many kinds; torch's own advice (weights_only=False) is not for users
        raise SampleError(f"{path}: not a bnnmd sample file (unreadable or damaged); samples are written by "
                          "bnn-train into RUN_DIR/samples/, and a damaged one is rewritten by rerunning that "
                          "run") from None
    if not isinstance(d, dict) or "format" not in d or "state_dict" not in d:
        raise SampleError(f"{path}: not a bnnmd sample file (no 'format'/'state_dict'); "
                          "samples are written by bnn-train into RUN_DIR/samples/")
    if d["format"] != SAMPLE_FORMAT:
        raise SampleError(f"{path}: sample format {d['format']!r}, this bnnmd reads {SAMPLE_FORMAT}; "
                          "use the bnnmd version that wrote it")
    return d


def sample_files(samples_dir: PathLike) -> List[Path]:
    d = Path(samples_dir)
    if not d.is_dir():
        raise SampleError(f"{d}: not a directory of samples; pass RUN_DIR/samples written by bnn-train")
    files = sorted(p for p in d.iterdir() if re.fullmatch(r"sample_\d+\.pt", p.name))
    if not files:
        raise SampleError(f"{d}: no sample_XXX.pt files; has the training run written samples yet?")
    return files


def evenly_spaced(n: int, k: int) -> List[int]:
    """``k`` distinct indices spread evenly over ``range(n)``, the last included (k = 1: the last,
    the most converged state of a chain). The one rule for ``bnn-eval --k`` and ``bnn-export --k``.

    >>> evenly_spaced(8, 3), evenly_spaced(8, 8)[:3], evenly_spaced(5, 1)
    ([0, 4, 7], [0, 1, 2], [4])
    """
    if k == 1:
        return [n - 1]
    return [int(round(i * (n - 1) / (k - 1))) for i in range(k)]


@dataclass
class SampleSet:
    """The files of a samples directory chosen for a k-copy inference model (:func:`choose`)."""

    samples_dir: Path
    method: str
    files: List[Path]  # every sample file of the directory
    indices: List[int]  # one file index per model copy: k = len(indices)
    available: Optional[int]  # files to choose from; None: any number of copies (MC-dropout masks)
    dropout: bool  # dropout stays on at inference (one mask per copy)
    meta: Dict[str, Any]  # the first file's metadata (units, method settings)


@dataclass
class InferencePlan:
    """Which sample files make the k copies of an inference model."""

    indices: List[int]  # one file index per model copy (k = len(indices))
    available: Optional[int]  # files that can be chosen from; None: any number of copies (dropout masks)
    dropout: bool = False  # keep dropout on at inference (one mask per copy)


def inference_plan(inference: Inference, method: str, n_files: int, k: Optional[int] = None,
                   select: Optional[Sequence[int]] = None) -> InferencePlan:
    """The files of a ``k``-copy model (all, ``k`` evenly spaced ones, or ``select``; a dropout run:
    its one file ``k`` times, default ``inference.copies``). Raises ValueError with the fix."""
    if inference.dropout:
        if select is not None:
            raise ValueError("--select does not apply to an MC-dropout run (one sample); use --k for masks")
        masks = int(inference.copies or 8) if k is None else k
        if isinstance(masks, bool) or int(masks) < 1:
            raise ValueError(f"k = {k}: the number of dropout masks must be at least 1")
        return InferencePlan([i % n_files for i in range(int(masks))], None, dropout=True)
    if k is not None and select is not None:
        raise ValueError("give either k (--k) or a selection (--select), not both")
    if select is not None:
        bad = [i for i in select if not 0 <= i < n_files]
        if bad or not select:
            raise ValueError(f"--select {list(select)}: indices must be in 0..{n_files - 1}")
        return InferencePlan(list(select), n_files)
    if k is None:
        return InferencePlan(list(range(n_files)), n_files)
    if isinstance(k, bool) or int(k) < 1 or int(k) > n_files:
        raise ValueError(f"k = {k}: {method} wrote {n_files} sample(s); use --k {n_files} or fewer (at least 1), "
                         "or let the run write more samples")
    return InferencePlan(evenly_spaced(n_files, int(k)), n_files)


def choose(samples_dir: PathLike, k: Optional[int] = None, select: Optional[Sequence[int]] = None) -> SampleSet:
    """Which samples of ``samples_dir`` make a ``k``-sample model: the one rule of ``bnn-eval``,
    ``bnn-export``, the ASE calculator and :func:`load_samples`.

    ``k`` evenly spaced samples (default all) or the ``select``-ed indices; an MC-dropout run has
    one sample, repeated ``k`` times (default its ``mc_samples``) with one dropout mask per copy.
    The plan stored in the sample files decides (:func:`inference_plan`).
    """
    files = sample_files(samples_dir)
    first = read_sample(files[0])
    try:
        plan = inference_plan(Inference.from_payload(first), first["method"], len(files), k, select)
    except ValueError as exc:
        raise SampleError(f"{samples_dir}: {exc}") from None
    return SampleSet(Path(samples_dir), first["method"], files, plan.indices, plan.available, plan.dropout,
                     dict(first.get("meta", {})))


def load_samples(samples_dir: PathLike, k: Optional[int] = None, select: Optional[Sequence[int]] = None,
                 dtype: torch.dtype = torch.float64) -> StochasticNequIP:
    """The samples of a directory (all, ``k`` of them or ``select``-ed, see :func:`choose`) stacked
    into one k-sample model in eval mode. Samples of different configs (architecture, type names)
    are refused."""
    return load_chosen(choose(samples_dir, k, select), dtype)


def load_chosen(chosen: SampleSet, dtype: torch.dtype = torch.float64) -> StochasticNequIP:
    """The model of a :class:`SampleSet`."""
    unique = sorted(set(chosen.indices))
    payloads = {i: read_sample(chosen.files[i]) for i in unique}
    first_i = unique[0]
    first = payloads[first_i]
    for i in unique[1:]:
        p = payloads[i]
        if p["config"] != first["config"] or p["method"] != first["method"]:
            diff = sorted(key for key in set(p["config"]) | set(first["config"])
                          if p["config"].get(key) != first["config"].get(key))
            raise SampleError(f"{chosen.samples_dir}: {chosen.files[i].name} differs from "
                              f"{chosen.files[first_i].name} in {', '.join(diff) or 'method'}; "
                              "a directory must hold samples of one run")
    models = {}
    for i, p in payloads.items():
        m = StochasticNequIP(ModelConfig.from_dict(p["config"])).to(torch.float64)
        m.load_state_dict(p["state_dict"])
        models[i] = m
    model = StochasticNequIP.stack([models[i] for i in chosen.indices]).to(dtype)
    if chosen.dropout:
        model.set_dropout_active(True)
    return model.eval()
