"""Posterior samples on disk: one file per sample, any training method, one format.

A sample file is a plain dict that ``torch.load(path, weights_only=True)``
reads: format version, method, the model config (with ``num_samples = 1``), the
state dict of a single-sample model, and metadata.
"""

from __future__ import annotations

import io
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

from bnnmd._files import write_atomic
from bnnmd.nn._config import ModelConfig
from bnnmd.nn._model import StochasticNequIP

SAMPLE_FORMAT = 1
METHODS = ("sghmc", "map", "mc_dropout", "ensemble")
PathLike = Union[str, os.PathLike]


class SampleError(ValueError):
    """An unusable sample file or directory; the message names it and the fix."""


def sample_path(samples_dir: PathLike, index: int) -> Path:
    return Path(samples_dir) / f"sample_{index:03d}.pt"


def save_sample(path: PathLike, model: StochasticNequIP, sample: int, method: str,
                meta: Optional[Dict] = None) -> Path:
    """Write sample ``sample`` of ``model`` (float64) atomically to ``path``."""
    if method not in METHODS:
        raise SampleError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    single = model.select([sample]).to(torch.float64)
    payload = {
        "format": SAMPLE_FORMAT,
        "method": method,
        "config": single.config.to_dict(),
        "state_dict": {k: v.detach().cpu().clone() for k, v in single.state_dict().items()},
        "meta": dict(meta or {}),
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
    except Exception as exc:  # unpickling errors of many kinds
        raise SampleError(f"{path}: not a readable bnnmd sample file ({type(exc).__name__}: {exc}); "
                          "samples are written by bnn-train into RUN_DIR/samples/") from None
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


def load_samples(samples_dir: PathLike, select: Optional[Sequence[int]] = None,
                 dtype: torch.dtype = torch.float64, mc_masks: Optional[int] = None) -> StochasticNequIP:
    """All (or ``select``-ed) samples of a directory stacked into one k-sample model.

    Samples of different configs (architecture, type names) are refused. An
    MC-dropout run has one sample: it is repeated ``mc_masks`` times (default: the
    run's ``mc_samples``) with dropout kept on, one mask per copy.
    """
    files = sample_files(samples_dir)
    if select is not None:
        bad = [i for i in select if not 0 <= i < len(files)]
        if bad:
            raise SampleError(f"{samples_dir}: sample indices {bad} out of range (there are {len(files)})")
        files = [files[i] for i in select]
    payloads = [read_sample(f) for f in files]
    first = payloads[0]
    for f, p in zip(files[1:], payloads[1:]):
        if p["config"] != first["config"] or p["method"] != first["method"]:
            diff = sorted(k for k in set(p["config"]) | set(first["config"])
                          if p["config"].get(k) != first["config"].get(k))
            raise SampleError(f"{samples_dir}: {f.name} differs from {files[0].name} in "
                              f"{', '.join(diff) or 'method'}; a directory must hold samples of one run")
    models = []
    for p in payloads:
        m = StochasticNequIP(ModelConfig.from_dict(p["config"])).to(torch.float64)
        m.load_state_dict(p["state_dict"])
        models.append(m)
    if first["method"] == "mc_dropout":
        models = models * int(mc_masks or first["meta"].get("mc_samples", 8))
    model = StochasticNequIP.stack(models).to(dtype)
    if first["method"] == "mc_dropout":
        model.set_dropout_active(True)
    return model.eval()
