"""Training over several processes with ``torch.distributed`` (``torchrun bnn-train ...``).

The trainer talks to the other processes through one :class:`World`; a run in one process gets
:meth:`World.single`, whose collectives do nothing, so the training loop has no branches for it.

Layout. ``W`` processes form ``G`` chain groups of ``D = W / G`` data ranks each (rank
``r`` is in group ``r // D`` at data rank ``r % D``):

- ``chains``: the k chains (SGHMC chains, ensemble members) are split in contiguous blocks over
  ``G = min(k, W)`` groups; with fewer chains than processes each chain gets ``W / k`` data ranks
  (``chains x data``), which needs ``k`` to divide ``W``.
- ``data``: one group (``G = 1``) holds all k chains; each step's minibatch is split over the
  ``D = W`` ranks and the gradients are averaged before the optimiser step.

Every chain draws its initial weights and its SGHMC noise from its own generators, seeded from
``(seed, chain)`` (:func:`chain_seed`), the same in one process and in any layout: the chains mode
writes the samples a one-process run writes, and the data ranks of a group draw the same noise.

The gloo backend runs on the CPU, NCCL on GPUs (rank r on GPU ``LOCAL_RANK``); small scalar and
object collectives always go through gloo. A collective that fails because another rank is gone
raises :class:`PeerLost` instead of hanging: gloo gives up after
``BNNMD_DIST_TIMEOUT`` seconds (default 300) at most, at once when the peer's socket closes.
"""

from __future__ import annotations

import datetime
import functools
import os
import signal
import sys
from dataclasses import asdict, dataclass
from typing import Any, Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist

from bnnmd._errors import BnnmdError
from bnnmd.nn import ConfigError

#: environment variables torchrun, srun wrappers and ``torch.distributed.run`` set
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
TIMEOUT_ENV = "BNNMD_DIST_TIMEOUT"
#: tests only: ``RANK:STEP`` makes that rank SIGKILL itself after that training step
FAULT_ENV = "_BNNMD_KILL_RANK_AFTER_STEP"


class PeerLost(BnnmdError, RuntimeError):
    """Another process of the run stopped answering (it died, or the launcher stopped it)."""


def chain_seed(seed: int, chain: int) -> int:
    """The seed of chain ``chain``'s own generators (initial weights, SGHMC noise): a 63-bit integer
    from ``(seed, chain)``, independent of how many chains run and where.

    >>> chain_seed(0, 1) == chain_seed(0, 1) != chain_seed(0, 2)
    True
    """
    hi, lo = np.random.SeedSequence([int(seed) & (2**63 - 1), int(chain), 0x5C4A1]).generate_state(2, np.uint32)
    return (int(hi) << 31) ^ int(lo)


def env_world_size() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ConfigError(f"WORLD_SIZE = {os.environ['WORLD_SIZE']!r} must be an integer (set by torchrun)") from None


@dataclass(frozen=True)
class Layout:
    """Which chains and which part of each minibatch a rank trains."""

    world_size: int = 1
    rank: int = 0
    mode: str = "chains"  # chains or data (auto resolved)
    groups: int = 1  # G chain groups
    data_ranks: int = 1  # D ranks per group
    num_chains: int = 1  # k, in all groups together

    @property
    def group(self) -> int:
        return self.rank // self.data_ranks

    @property
    def data_rank(self) -> int:
        return self.rank % self.data_ranks

    def chains_of(self, group: int) -> List[int]:
        """The global chain indices group ``group`` trains (contiguous blocks)."""
        return [int(c) for c in np.array_split(np.arange(self.num_chains), self.groups)[group]]

    @property
    def chains(self) -> List[int]:
        return self.chains_of(self.group)

    def key(self) -> dict:
        """What a checkpoint must match to be resumed (the rank aside)."""
        d = asdict(self)
        d.pop("rank")
        return d

    @classmethod
    def make(cls, mode: str, num_chains: int, world_size: int, rank: int, batch_size: int) -> "Layout":
        """The layout of ``training.distributed = mode`` for k chains on ``world_size`` processes."""
        k, w = int(num_chains), int(world_size)
        if w == 1:
            return cls(1, 0, "chains", 1, 1, k)
        if mode == "auto":
            mode = "chains" if k > 1 else "data"
        if mode == "chains":
            if k >= w:
                groups = w
            elif w % k == 0:
                groups = k
            else:
                raise ConfigError(f"training.distributed = chains: {k} chain(s) cannot be shared by {w} processes "
                                  f"(more processes than chains needs a multiple of {k}); use {k} or "
                                  f"{2 * k} processes, or training.distributed: data")
        else:
            groups = 1
        data_ranks = w // groups
        if data_ranks > batch_size:
            raise ConfigError(f"training.batch_size = {batch_size}: each of the {data_ranks} data-parallel "
                              f"processes needs at least one frame per step; raise it to >= {data_ranks} or "
                              "start fewer processes")
        return cls(w, int(rank), mode, groups, data_ranks, k)


def _collective(fn: Callable) -> Callable:
    """Turn a failed collective (a peer died, the launcher stopped it, or the timeout passed) into PeerLost."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        if not self.distributed:
            return fn(self, *args, **kwargs)
        try:
            return fn(self, *args, **kwargs)
        except BnnmdError:  # run_on_main passes rank 0's errors on (RunError is a RuntimeError too)
            raise
        except RuntimeError as exc:  # gloo/NCCL: DistBackendError, "Connection closed by peer", timeouts
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PeerLost(f"rank {self.rank}: another process of this run stopped answering during "
                           f"{fn.__name__} ({first[:200]})") from None
    return wrapper


class World:
    """The processes of one run; :meth:`single` is the one-process run (every method a no-op)."""

    def __init__(self, layout: Layout, device_index: Optional[int] = None, cpu_group=None, data_group=None,
                 owns_group: bool = False):
        self.layout = layout
        self.device_index = device_index  # LOCAL_RANK's GPU, when the run uses GPUs
        self._cpu_group = cpu_group  # gloo: scalars and objects
        self._data_group = data_group  # the group's data ranks: gradients
        self._owns_group = owns_group

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def single(cls, num_chains: int = 1) -> "World":
        return cls(Layout(num_chains=int(num_chains)))

    @classmethod
    def from_env(cls, mode: str, num_chains: int, batch_size: int, device: str) -> "World":
        """The world torchrun (or srun with ``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``)
        describes; one process without those variables gets :meth:`single`."""
        w = env_world_size()
        if w <= 1:
            return cls.single(num_chains)
        missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
        if missing and not dist.is_initialized():
            raise ConfigError(f"WORLD_SIZE = {w} but {', '.join(missing)} is not set; start bnn-train with "
                              "torchrun (docs/training.md), or unset WORLD_SIZE for one process")
        rank = int(os.environ.get("RANK", dist.get_rank() if dist.is_initialized() else 0))
        layout = Layout.make(mode, num_chains, w, rank, batch_size)  # errors before any connection
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        use_gpu = torch.cuda.is_available() and (device == "auto" or device.startswith("cuda"))
        device_index = None
        if use_gpu:  # cuda or auto: GPU LOCAL_RANK; cuda:N: the GPU named (one process per GPU is the user's)
            device_index = int(device[5:]) if device.startswith("cuda:") else local_rank % torch.cuda.device_count()
            torch.cuda.set_device(device_index)
        owns = False
        timeout = datetime.timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300")))
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_gpu else "gloo", timeout=timeout)
            owns = True
        cpu_group = dist.new_group(backend="gloo", timeout=timeout) if use_gpu else dist.group.WORLD
        data_group = None
        for g in range(layout.groups):  # every rank creates every group (torch.distributed's rule)
            ranks = list(range(g * layout.data_ranks, (g + 1) * layout.data_ranks))
            group = dist.new_group(ranks, timeout=timeout) if layout.data_ranks > 1 else None
            if g == layout.group:
                data_group = group
        return cls(layout, device_index, cpu_group, data_group, owns)

    def close(self) -> None:
        """Leave the process group (when this world created it)."""
        if self._owns_group:
            if dist.is_initialized():
                dist.destroy_process_group()
            self._owns_group = False

    # ---- who am I -------------------------------------------------------------------------------
    @property
    def distributed(self) -> bool:
        return self.layout.world_size > 1

    @property
    def rank(self) -> int:
        return self.layout.rank

    @property
    def is_main(self) -> bool:
        """Rank 0: writes config, split, log, checkpoint and progress lines."""
        return self.layout.rank == 0

    @property
    def writes_chains(self) -> bool:
        """Data rank 0 of its group: writes the samples of the group's chains."""
        return self.layout.data_rank == 0

    @property
    def chains(self) -> List[int]:
        return self.layout.chains

    def __repr__(self) -> str:
        lay = self.layout
        return (f"World(rank {lay.rank}/{lay.world_size} | {lay.mode}: {lay.groups} group(s) x {lay.data_ranks} "
                f"data rank(s) | chains {lay.chains})")

    # ---- collectives ----------------------------------------------------------------------------
    @_collective
    def run_on_main(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 only; its result on every rank, or its BnnmdError/OSError raised on every rank
        (so that a refused run directory stops all processes with the same message)."""
        if not self.distributed:
            return fn()
        box: List[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except (BnnmdError, OSError) as exc:
                box[0] = ("error", exc)
        dist.broadcast_object_list(box, src=0, group=self._cpu_group)
        status, value = box[0]
        if status == "error":
            raise value
        return value

    @_collective
    def barrier(self) -> None:
        if self.distributed:
            dist.barrier(group=self._cpu_group)

    @_collective
    def average_gradients(self, params: Sequence[torch.Tensor]) -> None:
        """Mean of ``p.grad`` over the group's data ranks (one flat all-reduce); nothing with one data rank."""
        if self.layout.data_ranks == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, group=self._data_group)  # SUM: gloo has no AVG
        flat /= self.layout.data_ranks
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    @_collective
    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum of ``values`` over all ranks (float64)."""
        if not self.distributed:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64)
        dist.all_reduce(t, group=self._cpu_group)
        return t.tolist()

    @_collective
    def from_main(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (the clock that the wall-clock plan reads)."""
        if not self.distributed:
            return value
        t = torch.tensor([float(value)], dtype=torch.float64)
        dist.broadcast(t, src=0, group=self._cpu_group)
        return float(t)

    @_collective
    def _gather_groups(self, obj: Any) -> List[Any]:
        """``obj`` of every group's data rank 0, in group order, on every rank."""
        out: List[Any] = [None] * self.layout.world_size
        dist.all_gather_object(out, obj if self.writes_chains else None, group=self._cpu_group)
        return [out[g * self.layout.data_ranks] for g in range(self.layout.groups)]

    def gather_chains(self, t: torch.Tensor) -> torch.Tensor:
        """A ``[k_local, ...]`` CPU tensor of this rank's chains -> ``[k, ...]`` of all chains, in order."""
        if self.layout.groups == 1:
            return t
        return torch.cat([p.to(t.device) for p in self._gather_groups(t.detach().cpu())], dim=0)

    def sum_over_groups(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """Each tensor summed over the chain groups (the sum over all k chains of a per-group sum)."""
        if self.layout.groups == 1:
            return tensors
        parts = self._gather_groups([t.detach().cpu() for t in tensors])
        return [functools.reduce(torch.add, [p[i] for p in parts]).to(t.device) for i, t in enumerate(tensors)]

    @_collective
    def broadcast_tensors(self, tensors: List[torch.Tensor]) -> List[torch.Tensor]:
        """Rank 0's ``tensors`` (CPU copies travel) on every rank, on each tensor's device."""
        if not self.distributed:
            return tensors
        box = [[t.detach().cpu() for t in tensors] if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self._cpu_group)
        return [b.to(t.device, t.dtype) for b, t in zip(box[0], tensors)]

    @_collective
    def gather_to_main(self, obj: Any) -> Optional[List[Any]]:
        """Every rank's ``obj`` on rank 0 (a list in rank order; None on the other ranks)."""
        if not self.distributed:
            return [obj]
        out = [None] * self.layout.world_size if self.is_main else None
        dist.gather_object(obj, out, dst=0, group=self._cpu_group)
        return out

    # ---- failures ------------------------------------------------------------------------------
    def maybe_fail(self, step: int) -> None:
        """Test hook: SIGKILL this process after ``step`` when ``_BNNMD_KILL_RANK_AFTER_STEP = RANK:STEP``."""
        spec = os.environ.get(FAULT_ENV)
        if spec and spec == f"{self.rank}:{step}":
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["ENV_KEYS", "FAULT_ENV", "Layout", "PeerLost", "TIMEOUT_ENV", "World", "chain_seed",
           "env_world_size"]
