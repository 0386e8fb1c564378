"""Seeded train/validation/test splits, saved as JSON with their indices."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

from bnnmd._files import write_atomic
from bnnmd.data._dataset import AtomicDataset
from bnnmd.data._errors import DataError
from bnnmd.data._readers import read_dataset

PathLike = Union[str, os.PathLike]

#: The paper's protocols (Rensmeyer et al. 2024, section 4.1).
PROTOCOLS: Dict[str, dict] = {
    # 1000-frame rMD17 training file -> 970 train + 30 validation; test = the test file.
    "rmd17": {"n_train": 970, "n_val": 30, "test": "separate file"},
    # sGDML CCSD(T) ethanol, one 1000-frame file -> 100 train / 30 validation / 870 test.
    "ccsd_t_ethanol": {"n_train": 100, "n_val": 30, "n_test": 870},
}

SPLIT_FORMAT = 1


@dataclass(frozen=True)
class SplitPart:
    """Frames ``indices`` of the dataset in ``file``."""

    file: str
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def load(self, **read_kwargs) -> AtomicDataset:
        return read_dataset(self.file, **read_kwargs).subset(self.indices)


@dataclass(frozen=True)
class Split:
    """A train/validation/test split; each part names its file and frame indices.

    Examples
    --------
    >>> s = random_split(10, 6, 2, seed=1, file="x.npz")
    >>> len(s.train), len(s.val), len(s.test)
    (6, 2, 2)
    >>> sorted(np.concatenate([s.train.indices, s.val.indices, s.test.indices]).tolist()) == list(range(10))
    True
    """

    train: SplitPart
    val: SplitPart
    test: SplitPart
    seed: int
    protocol: str = "random"

    def parts(self) -> Dict[str, SplitPart]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def datasets(self, **read_kwargs) -> Tuple[AtomicDataset, AtomicDataset, AtomicDataset]:
        """Read the files and return (train, validation, test) datasets."""
        return tuple(p.load(**read_kwargs) for p in (self.train, self.val, self.test))

    def to_dict(self) -> dict:
        return {
            "format": SPLIT_FORMAT, "protocol": self.protocol, "seed": self.seed,
            **{name: {"file": p.file, "n": len(p), "indices": p.indices.tolist()}
               for name, p in self.parts().items()},
        }

    def save(self, path: PathLike) -> Path:
        """Write the split as JSON (atomically)."""
        return write_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: PathLike) -> "Split":
        path = Path(path)
        try:
            d = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError("does not exist", file=path, fix="check the path of the split file") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"is not valid JSON ({exc})", file=path,
                            fix="write splits with Split.save; do not edit them by hand") from None
        if d.get("format") != SPLIT_FORMAT:
            raise DataError(f"has split format {d.get('format')!r}, this bnnmd reads {SPLIT_FORMAT}",
                            file=path, field="format", fix="recreate the split with this bnnmd")
        parts = {}
        for name in ("train", "val", "test"):
            if name not in d:
                raise DataError("is missing", file=path, field=name,
                                fix="write splits with Split.save")
            parts[name] = SplitPart(d[name]["file"], np.asarray(d[name]["indices"], dtype=np.int64))
        return cls(**parts, seed=int(d["seed"]), protocol=d.get("protocol", "random"))


def _check_sizes(n_frames: int, sizes: Dict[str, int], file) -> None:
    for name, n in sizes.items():
        if n < 0:
            raise DataError(f"{name} size {n} is negative", file=file, field=f"n_{name}",
                            fix="give sizes >= 0")
    total = sum(sizes.values())
    if total > n_frames:
        req = " + ".join(f"{n} {name}" for name, n in sizes.items())
        raise DataError(f"split asks for {req} = {total} frames but the dataset has only {n_frames}",
                        file=file, fix="reduce the split sizes or use a larger dataset")


def random_split(n_frames: int, n_train: int, n_val: int, n_test: Optional[int] = None, *,
                 seed: int = 0, file: str = "", protocol: str = "random") -> Split:
    """Random disjoint train/val/test indices from one file of ``n_frames`` frames.

    ``n_test=None`` puts every remaining frame in the test set.
    """
    rest = n_frames - n_train - n_val
    n_test = max(rest, 0) if n_test is None else n_test
    _check_sizes(n_frames, {"train": n_train, "val": n_val, "test": n_test}, file or None)
    perm = np.random.default_rng(seed).permutation(n_frames)
    cut = np.cumsum([n_train, n_val, n_test])
    return Split(SplitPart(file, np.sort(perm[:cut[0]])), SplitPart(file, np.sort(perm[cut[0]:cut[1]])),
                 SplitPart(file, np.sort(perm[cut[1]:cut[2]])), seed=seed, protocol=protocol)


def _num_frames(file: PathLike) -> int:
    return len(read_dataset(file))


def protocol_split(protocol: str, train_file: PathLike, test_file: Optional[PathLike] = None, *,
                   seed: int = 0) -> Split:
    """The paper's split for ``protocol`` (see :data:`PROTOCOLS`).

    ``"rmd17"``: 970 train + 30 validation frames from ``train_file``, every frame of
    ``test_file`` for testing. ``"ccsd_t_ethanol"``: 100 / 30 / 870 from ``train_file``.
    """
    if protocol not in PROTOCOLS:
        raise DataError(f"unknown split protocol {protocol!r}", field="protocol",
                        fix=f"use one of {', '.join(PROTOCOLS)}")
    p = PROTOCOLS[protocol]
    train_file = str(train_file)
    n = _num_frames(train_file)
    if p.get("test") == "separate file":
        if test_file is None:
            raise DataError(f"protocol {protocol!r} tests on a separate file", field="test_file",
                            fix="pass the test file (e.g. rmd17_<molecule>_test_01.npz)")
        s = random_split(n, p["n_train"], p["n_val"], 0, seed=seed, file=train_file, protocol=protocol)
        test_file = str(test_file)
        return Split(s.train, s.val, SplitPart(test_file, np.arange(_num_frames(test_file))),
                     seed=seed, protocol=protocol)
    if test_file is not None:
        raise DataError(f"protocol {protocol!r} takes its test frames from the training file",
                        field="test_file", fix="do not pass a test file")
    return random_split(n, p["n_train"], p["n_val"], p["n_test"], seed=seed, file=train_file,
                        protocol=protocol)
