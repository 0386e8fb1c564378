"""Exponential moving average (EMA) of the weights, with nequip's warm-up of the decay."""

from __future__ import annotations

import contextlib
from typing import Dict, Iterator

import torch


class WeightEMA:
    r"""A running average ``shadow <- d * shadow + (1 - d) * theta`` of every parameter.

    The decay at update ``n`` (1-based) is ``d_n = min(decay, (1 + n) / (10 + n))`` with
    ``warmup`` (the rule of nequip and of torch_ema's ``use_num_updates``), else ``decay``:
    early updates follow the weights closely, so the average does not remember the random
    initialisation. The sample dimension needs nothing special: the average is element-wise,
    so the k members of a ``[k, ...]`` parameter are averaged independently.

    Examples
    --------
    >>> w = torch.nn.Parameter(torch.zeros(2))
    >>> ema = WeightEMA({"w": w}, decay=0.5)
    >>> with torch.no_grad():
    ...     _ = w.fill_(1.0)
    >>> ema.update(); ema.decay_at(1)   # min(0.5, 2/11)
    0.18181818181818182
    >>> ema.shadow["w"]
    tensor([0.8182, 0.8182])
    """

    def __init__(self, params: Dict[str, torch.Tensor], decay: float, warmup: bool = True):
        if not 0.0 <= float(decay) < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay!r}")
        self.params = dict(params)
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow = {n: p.detach().clone() for n, p in self.params.items()}

    def decay_at(self, n: int) -> float:
        """The decay used by update ``n`` (1-based)."""
        return min(self.decay, (1.0 + n) / (10.0 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self) -> None:
        self.num_updates += 1
        d = self.decay_at(self.num_updates)
        for name, p in self.params.items():
            self.shadow[name].mul_(d).add_(p.detach(), alpha=1.0 - d)

    @torch.no_grad()
    def copy_to_params(self) -> None:
        """Overwrite the weights with their average (the end of an optimisation phase)."""
        for name, p in self.params.items():
            p.copy_(self.shadow[name])

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """Inside the block the weights are the averages; afterwards the raw weights are back."""
        saved = {n: p.detach().clone() for n, p in self.params.items()}
        self.copy_to_params()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(saved[name])

    def state_dict(self) -> Dict:
        return {"num_updates": self.num_updates, "decay": self.decay, "warmup": self.warmup,
                "shadow": {n: v.clone() for n, v in self.shadow.items()}}

    def load_state_dict(self, state: Dict) -> None:
        self.num_updates = int(state["num_updates"])
        self.decay = float(state["decay"])
        self.warmup = bool(state["warmup"])
        for name, v in state["shadow"].items():
            self.shadow[name] = v.to(device=self.params[name].device, dtype=self.params[name].dtype).clone()
