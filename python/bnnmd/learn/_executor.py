"""Where ``bnn-learn`` runs its tasks: LAMMPS runs and labels, on this machine or on a dask cluster.

One interface, :class:`Executor`, two kinds:

- :class:`LocalExecutor` (``executor.scheduler: null``, the default): what bnn-learn always did;
  :meth:`~Executor.map` runs the tasks in threads (each LAMMPS run is a process of its own) and
  :meth:`~Executor.label` is :func:`bnnmd.label.label_frames` (spawned processes, each frame
  killed past ``label.timeout``);
- :class:`DaskExecutor` (``executor.scheduler: tcp://HOST:8786``, or ``local:N`` for a
  ``dask.distributed.LocalCluster`` of N worker processes on this machine): every task is a future
  on the cluster, the results come back in the order of the items.

With dask, a label task computes one frame on a worker with the labeller object (pickled, its cache
off); the loop's process reads and writes the label cache (``OUT/labels``), so the workers need no
access to it. MD tasks run :func:`~bnnmd.learn._loop.run_md` on a worker, which reads the model and
writes the run's directory: ``OUT`` must be on a file system every worker sees, and every worker
needs bnnmd with its LAMMPS (``lmp`` beside the worker's Python).
"""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Sequence, Union

from bnnmd.label import Label, LabelError, label_frames
from bnnmd.learn._config import DASK_MISSING, LearnError


class Executor:
    """``map(fn, items, workers)`` and ``label(labeller, frames, processes, timeout)``, results in the
    order of the items; a context manager (:meth:`close` on exit)."""

    def map(self, fn: Callable, items: Sequence, workers: int = 1) -> List:
        """``[fn(item) for item in items]``, ``workers`` at a time (locally); the first exception is raised."""
        raise NotImplementedError

    def label(self, labeller, frames: Sequence, processes: int = 1,
              timeout: Optional[float] = None) -> List[Union[Label, LabelError]]:
        """The label of each frame, or its :class:`~bnnmd.label.LabelError` in its place."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class LocalExecutor(Executor):
    """Threads for :meth:`map`; :func:`~bnnmd.label.label_frames` (``processes`` spawned workers,
    each frame killed past ``timeout``) for :meth:`label`."""

    def map(self, fn, items, workers=1):
        items = list(items)
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(workers, len(items))) as pool:
            return list(pool.map(fn, items))

    def label(self, labeller, frames, processes=1, timeout=None):
        return label_frames(labeller, frames, processes, timeout=timeout)

    def __repr__(self) -> str:
        return "LocalExecutor()"


def _label_task(labeller, atoms, timeout: Optional[float] = None) -> Union[Label, LabelError]:
    """One frame on a dask worker (the labeller's cache is off: the loop writes it); past ``timeout``
    seconds from its start on the worker, a :class:`~bnnmd.label.LabelError` (the computation goes
    on in its thread, its result dropped)."""
    if timeout is not None:
        box: List = []
        worker = threading.Thread(target=lambda: box.append(_label_task(labeller, atoms)), daemon=True)
        worker.start()
        worker.join(timeout)
        if not box:
            return LabelError(f"labelling took longer than the timeout ({timeout:g} s) on a dask worker and was "
                              "abandoned; raise the timeout (bnn-learn: label.timeout) or use a cheaper method or "
                              "basis")
        return box[0]
    try:
        return labeller(atoms)
    except LabelError as exc:
        return exc
    except Exception as exc:  # the labeller's own bug: this frame only, with its name
        return LabelError(f"the labeller raised {type(exc).__name__}: {exc}")


class DaskExecutor(Executor):
    """Tasks as futures of a ``dask.distributed.Client`` connected to ``scheduler`` (an address), or to
    a ``LocalCluster`` of N single-threaded worker processes for ``local:N``.

    Notes
    -----
    ``timeout`` of :meth:`label` counts from a frame's start on its worker, where the labeller runs
    in a thread of the task; past it the task returns a :class:`~bnnmd.label.LabelError` and the
    worker takes its next task, but the thread cannot be stopped: it goes on computing (one core
    busy) until the labeller returns (pyscf: at most ``label.max_cycle`` SCF cycles per attempt),
    its result dropped. Restart such workers (``dask worker --lifetime``, or ``client.restart()``)
    if a labeller can hang for good.
    """

    def __init__(self, scheduler: str):
        try:
            # optional dependency: dask is needed only when executor.scheduler is set (the error names the fix)
            from dask.distributed import Client, LocalCluster
        except ImportError:
            raise LearnError(DASK_MISSING.format(scheduler)) from None
        self.scheduler = scheduler
        self._cluster = None
        if scheduler.startswith("local:"):
            n = int(scheduler.split(":")[1])
            self._cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None)
            self.client = Client(self._cluster)
        else:
            try:
                self.client = Client(scheduler, timeout="30s")
            except OSError as exc:
                raise LearnError(f"executor.scheduler = {scheduler!r}: no dask scheduler answered ({exc}); start one "
                                 "(dask scheduler, then dask worker ADDRESS on each node) or set executor.scheduler: "
                                 "null") from None

    def map(self, fn, items, workers=1):
        futures = [self.client.submit(fn, x, pure=False) for x in items]
        try:
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def label(self, labeller, frames, processes=1, timeout=None):
        remote = copy.copy(labeller)
        remote.cache = None  # the workers need not see OUT/labels: the results are cached here
        results: List = [labeller.cached(a) for a in frames]
        todo = [i for i, hit in enumerate(results) if hit is None]
        futures = {i: self.client.submit(_label_task, remote, frames[i], timeout, pure=False) for i in todo}
        try:
            for i, fut in futures.items():
                results[i] = fut.result()
                if isinstance(results[i], Label):
                    _store(labeller, frames[i], results[i])
        finally:
            for fut in futures.values():
                fut.cancel()
        return results

    def close(self) -> None:
        self.client.close()
        if self._cluster is not None:
            self._cluster.close()

    def __repr__(self) -> str:
        return f"DaskExecutor({self.scheduler!r})"


def _store(labeller, atoms, label: Label) -> None:
    """Write ``label`` into ``labeller``'s cache through the labeller's own caching path."""
    if labeller.cache is None:
        return
    writer = copy.copy(labeller)
    writer._compute = lambda _atoms: label  # noqa: E731 (the instance's compute returns the known label)
    writer(atoms)


def make_executor(scheduler: Optional[str]) -> Executor:
    """The executor of ``executor.scheduler``: None, ``local:N`` or a dask scheduler address."""
    if scheduler is None:
        return LocalExecutor()
    return DaskExecutor(scheduler)
