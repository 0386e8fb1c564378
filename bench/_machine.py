"""The machine, software and commit a benchmark ran on: the one place every bench script reads them.

Each script records the facts it names, in its order, under the keys its result JSON has always
used (``"cpus=cpu_count"`` records :data:`FACTS` ``cpu_count`` as ``cpus``); keyword values are
recorded as given (a value the script knows better, e.g. the environment of a subprocess)::

    from _machine import machine_info   # bench/ is sys.path[0] for `python bench/<script>.py`
    machine_info("platform", "cpus=cpu_count", "torch", "OMP_NUM_THREADS")
    machine_info("platform", "cpus=cpu_count", "torch", OMP_NUM_THREADS="1")

``bench/paper/common.py`` puts ``bench/`` on ``sys.path`` for the paper scripts.
"""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Dict, Optional

REPO = Path(__file__).resolve().parents[1]


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> Optional[int]:
    """CPUs this process may run on (its affinity), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count()


def version(module: str) -> Optional[str]:
    """``module.__version__`` (None when the module has none)."""
    return getattr(importlib.import_module(module), "__version__", None)


def _git(*args: str) -> Optional[str]:
    try:
        r = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return r.stdout.strip() if r.returncode == 0 else None


def git_commit() -> Optional[str]:
    """The checkout's commit (``git rev-parse HEAD``), None outside git."""
    return _git("rev-parse", "HEAD") or None


def git_modified(*paths: str) -> Optional[bool]:
    """Whether ``paths`` (relative to the repository) differ from the commit; None outside git."""
    status = _git("status", "--porcelain", "--", *paths)
    return None if status is None else bool(status)


def _torch(attr: Callable[[Any], Any]) -> Callable[[], Any]:
    def get():
        import torch

        return attr(torch)
    return get


def _bnnmd_version() -> Optional[str]:
    try:
        return version("bnnmd")
    except Exception:  # pragma: no cover (a broken build still gets its machine recorded)
        return None


#: The facts a script can name, each read when asked for.
FACTS: Dict[str, Callable[[], Any]] = {
    "hostname": platform.node,
    "platform": platform.platform,
    "processor": platform.processor,
    "cpu_model": cpu_model,
    "cpu_count": os.cpu_count,
    "usable_cpus": usable_cpus,
    "load_average": lambda: list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    "python": lambda: sys.version.split()[0],
    "torch": _torch(lambda t: t.__version__),
    "torch_threads": _torch(lambda t: t.get_num_threads()),
    "cuda": _torch(lambda t: t.cuda.get_device_name(0) if t.cuda.is_available() else None),
    "numpy": lambda: version("numpy"),
    "e3nn": lambda: version("e3nn"),
    "ase": lambda: version("ase"),
    "vesin": lambda: version("vesin"),
    "bnnmd": _bnnmd_version,
    "git_commit": git_commit,
    "OMP_NUM_THREADS": lambda: os.environ.get("OMP_NUM_THREADS"),
    "GLIBC_TUNABLES": lambda: os.environ.get("GLIBC_TUNABLES"),
    "LD_PRELOAD": lambda: os.environ.get("LD_PRELOAD"),
    "date_utc": lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
}


def machine_info(*names: str, **values: Any) -> Dict[str, Any]:
    """``{key: fact}`` for each of ``names`` (``"key=fact"`` or a fact's own name), then ``values``."""
    out: Dict[str, Any] = {}
    for name in names:
        key, _, fact = name.partition("=")
        if (fact or key) not in FACTS:
            raise KeyError(f"bench/_machine.py knows no fact {fact or key!r}; known: {', '.join(FACTS)}")
        out[key] = FACTS[fact or key]()
    out.update(values)
    return out
