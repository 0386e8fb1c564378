"""The training methods: one :class:`Method` per method, in one registry.

A method owns everything that differs between ``sghmc``, ``map``, ``mc_dropout`` and
``ensemble``: k while training (the sample dimension), the model options it needs
(dropout), its optimiser(s) and loss scale, its phases, its stop rule, when it writes
samples, and how its samples become a k-sample model for inference. The trainer
(:mod:`bnnmd.train._trainer`) is a plain loop that calls these hooks.

Adding a method is one class with ``@register``.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, ClassVar, Dict, Optional, Type

import torch

from bnnmd._files import write_atomic
from bnnmd.bayes import AdaptiveSGHMC
from bnnmd.nn import ConfigError
from bnnmd.posterior import Inference, sample_path, save_sample
from bnnmd.train import _schedule as S
from bnnmd.train._distributed import chain_seed
from bnnmd.train._ema import WeightEMA

if TYPE_CHECKING:  # pragma: no cover
    from bnnmd.train._config import TrainConfig
    from bnnmd.train._trainer import Trainer

#: name -> Method class; the one list of training methods (config, sample files and loaders read it)
REGISTRY: Dict[str, Type["Method"]] = {}


def register(cls: Type["Method"]) -> Type["Method"]:
    if not getattr(cls, "name", None):
        raise TypeError(f"{cls.__name__} needs a class attribute 'name'")
    if cls.name in REGISTRY:
        raise ValueError(f"a method named {cls.name!r} is already registered ({REGISTRY[cls.name].__name__})")
    REGISTRY[cls.name] = cls
    return cls


def method_names() -> tuple:
    return tuple(REGISTRY)


def get_method(name: str) -> Type["Method"]:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(REGISTRY)}") from None


class Method:
    """Base class; the defaults are those of a method that writes its k members at the end."""

    name: ClassVar[str] = ""

    def __init__(self, config: "TrainConfig"):
        self.config = config

    def validate(self) -> None:
        """Raise :class:`~bnnmd.nn.ConfigError` for settings of this method that do not fit the rest of
        the config (each section's own values are checked by the section)."""

    # ---- the model ---------------------------------------------------------------------------
    def training_k(self) -> int:
        """The sample dimension while training (chains, members, 1)."""
        return 1

    def model_options(self) -> Dict[str, Any]:
        """Extra ModelConfig keys the method sets (users may not set them)."""
        return {"dropout": 0.0}

    # ---- optimisation ----------------------------------------------------------------------
    def setup(self, trainer: "Trainer") -> None:
        """Create ``trainer.optimizer`` and ``trainer.ema`` for step 0 and the method's own state."""
        raise NotImplementedError

    def loss_scale(self, trainer: "Trainer") -> float:
        """The factor applied to ``u`` (the potential summed over samples) before ``backward``."""
        return 1.0 / len(trainer.train_set)

    def after_step(self, trainer: "Trainer") -> None:
        """Called after every optimiser (and EMA) update."""

    def after_validation(self, trainer: "Trainer", val: Dict[str, torch.Tensor]) -> None:
        """Called after every validation (of the EMA weights while ``trainer.ema`` is set)."""

    def stop_status(self, trainer: "Trainer") -> Optional[str]:
        """A status to stop with before the next step, or None to go on."""
        return None

    def finish(self, trainer: "Trainer") -> None:
        """Write the samples of a finished run."""

    def planned_steps(self) -> Optional[int]:
        """The steps this run is planned to take, when the method knows (the progress line)."""
        return None

    def progress(self, trainer: "Trainer") -> str:
        return ""

    def best_val_force_mae(self) -> Optional[float]:
        """The best validation force MAE over members, for methods that keep their best state."""
        return None

    def step_size_key(self) -> str:
        """The config key of the step size in use (named when the loss diverges)."""
        return "adam.lr"

    def log_fields(self, trainer: "Trainer") -> Dict[str, Any]:
        return {"samples": trainer.samples_written, "active_members": trainer.k_total}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any], trainer: "Trainer") -> None:
        """Restore :meth:`state_dict` and rebuild the optimiser of the saved phase (before its state loads)."""

    # ---- inference ----------------------------------------------------------------------------
    def inference(self) -> Inference:
        """The inference plan its sample files carry (:class:`bnnmd.posterior.Inference`): one file
        per model copy, all or k evenly spaced ones."""
        return Inference()


def make_ema(trainer: "Trainer", adam) -> Optional[WeightEMA]:
    """The EMA of ``adam.ema_decay`` (None when 0) over the trainer's model."""
    if adam.ema_decay <= 0:
        return None
    return WeightEMA(dict(trainer.model.named_parameters()), adam.ema_decay, warmup=adam.ema_warmup)


# ---- SGHMC ---------------------------------------------------------------------------------------
@register
class SGHMC(Method):
    """The paper's adaptive-mass SGHMC, after an optional warm start.

    Phases, in global steps (1-based), with ``W`` the warm start's steps:

    1. ``1..W`` warm start: Adam (``adam.lr``, the EMA of ``adam.ema_decay``) on ``u / |D|``
       from the random initialisation towards a mode of each chain. At step ``W`` the
       chains take the EMA weights (with ``sghmc.warm_start_shared`` all chains take chain 0's).
    2. ``W+1..`` the sampler, whose steps ``s = step - W`` count the schedule: the mass adapts
       until ``s = mass_freeze_step``, the first sample is at ``s = burn_in``, then one per chain
       every ``sample_interval`` steps, at temperature 1 (``sghmc.noise``).

    With ``sghmc.schedule: steps`` these counts are the config's (``W = warm_start_steps``); with
    ``time`` they are planned during the run to fit ``training.time_limit`` (``_schedule``).
    No sample is written during the warm start.
    """

    name = "sghmc"

    def validate(self) -> None:
        c = self.config
        if c.sghmc.schedule == "time" and c.training.time_limit is None:
            raise ConfigError("training.time_limit = None: sghmc.schedule: time plans the run to fit "
                              "training.time_limit; give it in seconds, or use sghmc.schedule: steps")
        if c.sghmc.schedule == "steps":
            s = c.sghmc
            need = s.warm_start_steps + s.burn_in + (s.num_samples // s.chains - 1) * s.sample_interval
            if need > c.training.max_steps:
                raise ConfigError(f"training.max_steps = {c.training.max_steps!r}: must be >= {need} = "
                                  "sghmc.warm_start_steps + burn_in + (num_samples/chains - 1) * sample_interval "
                                  "to collect all samples")

    def training_k(self) -> int:
        return self.config.sghmc.chains

    def setup(self, trainer: "Trainer") -> None:
        s = self.config.sghmc
        self.timed = s.schedule == "time"
        if self.timed:  # decided during the run (bnnmd.train._schedule)
            self.plan = S.Plan()
            warm = s.warm_start_fraction > 0
        else:
            self.plan = S.Plan.fixed(s.warm_start_steps, s.mass_freeze_step, s.burn_in, s.sample_interval)
            warm = s.warm_start_steps > 0
        self.phase = "warm_start" if warm else "sample"
        self._build_phase(trainer)

    def _build_phase(self, trainer: "Trainer") -> None:
        c = self.config
        params = list(trainer.model.parameters())
        if self.phase == "warm_start":
            trainer.optimizer = torch.optim.Adam(params, lr=c.adam.lr)
            trainer.ema = make_ema(trainer, c.adam)
        else:
            s = c.sghmc
            trainer.optimizer = AdaptiveSGHMC(params, dataset_size=len(trainer.train_set), lr=s.lr,
                                              friction=s.friction, beta=s.beta, eps=s.eps,
                                              mass_freeze_step=self.plan.mass_freeze_step, noise=s.noise,
                                              noise_start=s.noise_start, noise_ramp_steps=s.noise_ramp_steps,
                                              chain_seeds=[chain_seed(c.seed, ch) for ch in trainer.chain_ids])
            trainer.ema = None

    def sampler_step(self, step: int) -> int:
        return self.plan.sampler_step(step)

    def loss_scale(self, trainer: "Trainer") -> float:
        # Adam minimises u / |D|; the sampler's gradient is that of u (it divides by |D| itself)
        return 1.0 / len(trainer.train_set) if self.phase == "warm_start" else 1.0

    def step_size_key(self) -> str:
        return "adam.lr" if self.phase == "warm_start" else "sghmc.lr"

    def after_step(self, trainer: "Trainer") -> None:
        if self.timed:
            self._plan_step(trainer)
        p = self.plan
        if self.phase == "warm_start":
            if p.warm_start_steps is not None and trainer.step >= p.warm_start_steps:
                self._end_warm_start(trainer)
            return
        t = self.sampler_step(trainer.step)
        if p.burn_in is None or t < p.burn_in or (t - p.burn_in) % p.sample_interval:
            return
        s = self.config.sghmc
        before = trainer.clock()
        first = trainer.samples_written == 0
        local = {chain: j for j, chain in enumerate(trainer.chain_ids)}
        for chain in range(trainer.k_total):  # file numbers count all chains, whichever process holds them
            if trainer.samples_written >= s.num_samples:
                break
            if chain in local and trainer.world.writes_chains:
                save_sample(sample_path(trainer.samples_dir, trainer.samples_written), trainer.model, local[chain],
                            self.name, meta={"step": trainer.step, "sampler_step": t, "chain": chain,
                                             "seed": self.config.seed, **trainer.units}, inference=self.inference())
            trainer.samples_written += 1
        if self.timed and first and self._per_chain() > 1:
            self._plan_interval(trainer, before)

    # ---- the wall-clock plan (sghmc.schedule: time) --------------------------------------------
    def _per_chain(self) -> int:
        s = self.config.sghmc
        return s.num_samples // s.chains

    def _plan_interval(self, trainer: "Trainer", before: float) -> None:
        """Decision 4 of ``_schedule`` (:func:`bnnmd.train._schedule.plan_interval`)."""
        c = self.config
        self.plan = S.plan_interval(self.plan, trainer.step, trainer.clock(), before, c.training.time_limit,
                                    c.training.max_steps, self._per_chain())

    def _plan_step(self, trainer: "Trainer") -> None:
        """Decisions 1-3 of ``bnnmd.train._schedule`` (:func:`~bnnmd.train._schedule.advance`); the
        sampler in use learns its planned mass freeze."""
        c = self.config
        before = self.plan.mass_freeze_step
        self.plan = S.advance(self.plan, trainer.step, trainer.clock(), c.training.time_limit, c.training.max_steps,
                              self._per_chain(),
                              c.sghmc.warm_start_fraction if self.phase == "warm_start" else None)
        if self.plan.mass_freeze_step != before and isinstance(trainer.optimizer, AdaptiveSGHMC):
            trainer.optimizer.mass_freeze_step = self.plan.mass_freeze_step

    def _end_warm_start(self, trainer: "Trainer") -> None:
        shared = self.config.sghmc.warm_start_shared and trainer.k > 1
        # Adam minimised u / |D|: its bias-corrected second moments are the sampler's E[(grad/|D|)^2]
        adam = trainer.optimizer
        beta2 = adam.param_groups[0]["betas"][1]
        moments = {}
        for p in trainer.model.parameters():
            st = adam.state.get(p)
            if st and "exp_avg_sq" in st:
                c = st["exp_avg_sq"] / (1.0 - beta2 ** float(st["step"]))
                moments[p] = c[:1].expand_as(c).clone() if shared else c.clone()
        if trainer.ema is not None:
            trainer.ema.copy_to_params()
        if shared:
            params = list(trainer.model.parameters())
            with_moments = [p for p in params if p in moments]
            # chain 0 is rank 0's first chain: its weights and moments reach every process
            firsts = trainer.world.broadcast_tensors([p[:1] for p in params] + [moments[p][:1] for p in with_moments])
            with torch.no_grad():
                for p, first in zip(params, firsts):
                    p.copy_(first.clone().expand_as(p))  # no read from memory being written
            for p, first in zip(with_moments, firsts[len(params):]):
                moments[p] = first.expand_as(p).clone()
        self.phase = "sample"
        self._build_phase(trainer)
        trainer.optimizer.prime_mass(moments)  # not a mass from one gradient at the mode: see prime_mass

    def stop_status(self, trainer: "Trainer") -> Optional[str]:
        return "finished" if trainer.samples_written >= self.config.sghmc.num_samples else None

    def finish(self, trainer: "Trainer") -> None:
        """``schedule.json``: the step counts the run used (planned ones with ``schedule: time``)."""
        if trainer.world.is_main:
            write_atomic(trainer.run_dir / "schedule.json", json.dumps(self.schedule(), indent=1) + "\n")

    def planned_steps(self) -> Optional[int]:
        """The steps the schedule takes: its last sample's step (a wall-clock plan: the steps the
        budget holds until the sampler is planned, None before the first plan)."""
        return self.plan.planned_steps(self._per_chain())

    def progress(self, trainer: "Trainer") -> str:
        if self.phase == "warm_start":
            return f"warm start {trainer.step}/{self.plan.warm_start_steps or '?'}"
        return f"samples {trainer.samples_written}/{self.config.sghmc.num_samples}"

    def schedule(self) -> Dict[str, Any]:
        """The phases' step counts in use (the plan, with ``sghmc.schedule: time``)."""
        keys = ("warm_start_steps", "mass_freeze_step", "burn_in", "sample_interval")
        return {**{k: getattr(self.plan, k) for k in keys}, "planned_steps": self.planned_steps(),
                "schedule": self.config.sghmc.schedule}

    def state_dict(self) -> Dict[str, Any]:
        return {"phase": self.phase, "plan": self.plan.to_dict()}

    def load_state_dict(self, state: Dict[str, Any], trainer: "Trainer") -> None:
        self.phase = str(state["phase"])
        if self.timed:
            self.plan = S.Plan.from_dict(state["plan"])
        self._build_phase(trainer)


# ---- Adam-based methods -----------------------------------------------------------------------
class _AdamMethod(Method):
    """Adam on ``u / |D|`` (MAP), an EMA of the weights, per-member early stopping on validation.

    Validation, early stopping and the written samples use the EMA weights when
    ``adam.ema_decay > 0``. The learning rate decays by ``adam.lr_factor`` after
    ``adam.lr_patience`` validations without improvement of the mean over active members.

    The validation record (``best_metric``, ``bad_validations``, ``stopped``) covers all k members
    on every process (the validation is gathered), so that the stop and learning-rate decisions
    agree everywhere; ``best_state`` holds this process's members.
    """

    @staticmethod
    def _local(trainer: "Trainer", mask: torch.Tensor) -> torch.Tensor:
        """The entries of a [k_total] mask for this process's members, on its device."""
        return mask[trainer.chain_ids].to(trainer.device)

    def setup(self, trainer: "Trainer") -> None:
        a = self.config.adam
        trainer.optimizer = torch.optim.Adam(list(trainer.model.parameters()), lr=a.lr)
        trainer.ema = make_ema(trainer, a)
        k = trainer.k_total
        self.best_metric = torch.full((k,), math.inf, dtype=torch.float64)
        self.bad_validations = torch.zeros(k, dtype=torch.int64)
        self.stopped = torch.zeros(k, dtype=torch.bool)
        self.best_state = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def after_step(self, trainer: "Trainer") -> None:
        if self.stopped.any():  # early-stopped members stay at their best parameters
            with torch.no_grad():
                stopped = self._local(trainer, self.stopped)
                for name, p in trainer.model.named_parameters():
                    p[stopped] = self.best_state[name][stopped]
                    if trainer.ema is not None:
                        trainer.ema.shadow[name][stopped] = self.best_state[name][stopped]

    def after_validation(self, trainer: "Trainer", val) -> None:
        a = self.config.adam
        metric = val["force_mae_per_sample"]
        improved = (metric < self.best_metric) & ~self.stopped
        weights = trainer.ema.shadow if trainer.ema is not None else dict(trainer.model.named_parameters())
        with torch.no_grad():
            mask = self._local(trainer, improved)
            for name in self.best_state:
                self.best_state[name][mask] = weights[name].detach()[mask]
        self.best_metric = torch.where(improved, metric, self.best_metric)
        self.bad_validations = torch.where(improved, torch.zeros_like(self.bad_validations),
                                           self.bad_validations + 1)
        self.stopped |= self.bad_validations >= a.early_stopping_patience
        active = ~self.stopped
        current = float(metric[active].mean()) if active.any() else math.inf
        if current < self.plateau_best:
            self.plateau_best, self.plateau_bad = current, 0
        else:
            self.plateau_bad += 1
            if self.plateau_bad >= a.lr_patience:
                for g in trainer.optimizer.param_groups:
                    g["lr"] = max(g["lr"] * a.lr_factor, a.min_lr)
                self.plateau_bad = 0

    def stop_status(self, trainer: "Trainer") -> Optional[str]:
        return "early_stopped" if self.stopped.all() else None

    def finish(self, trainer: "Trainer") -> None:
        c = self.config
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if torch.isfinite(self.best_metric).all():
                    p.copy_(self.best_state[name])
        for j, member in enumerate(trainer.chain_ids):
            if not trainer.world.writes_chains:
                break
            meta = {"step": trainer.step, "member": member, "seed": c.seed, **trainer.units,
                    "val_force_mae": float(self.best_metric[member]), **self.sample_meta()}
            save_sample(sample_path(trainer.samples_dir, member), trainer.model, j, self.name, meta=meta,
                        inference=self.inference())
        trainer.samples_written = trainer.k_total

    def sample_meta(self) -> Dict[str, Any]:
        return {}

    def best_val_force_mae(self) -> Optional[float]:
        finite = torch.isfinite(self.best_metric)
        return float(self.best_metric[finite].min()) if finite.any() else None

    def progress(self, trainer: "Trainer") -> str:
        return f"members training {int((~self.stopped).sum())}/{trainer.k_total}"

    def log_fields(self, trainer: "Trainer") -> Dict[str, Any]:
        return {"samples": trainer.samples_written, "active_members": int((~self.stopped).sum())}

    def state_dict(self) -> Dict[str, Any]:
        return {"best_metric": self.best_metric, "bad_validations": self.bad_validations, "stopped": self.stopped,
                "best_state": self.best_state, "plateau_best": self.plateau_best, "plateau_bad": self.plateau_bad}

    def load_state_dict(self, state: Dict[str, Any], trainer: "Trainer") -> None:
        self.best_metric = state["best_metric"]
        self.bad_validations = state["bad_validations"]
        self.stopped = state["stopped"]
        self.best_state = {n: v.to(trainer.device) for n, v in state["best_state"].items()}
        self.plateau_best = float(state["plateau_best"])
        self.plateau_bad = int(state["plateau_bad"])


@register
class MAP(_AdamMethod):
    """One model, Adam (maximum a posteriori under the N(centre, s^2) prior), early stopping."""

    name = "map"


@register
class MCDropout(_AdamMethod):
    """The same model with dropout in the scalar channels; ``adam.mc_samples`` masks at inference."""

    name = "mc_dropout"

    def model_options(self) -> Dict[str, Any]:
        return {"dropout": self.config.adam.dropout}

    def sample_meta(self) -> Dict[str, Any]:
        return {"mc_samples": self.config.adam.mc_samples}

    def inference(self) -> Inference:
        """One file, ``adam.mc_samples`` dropout masks by default."""
        return Inference(dropout=True, copies=self.config.adam.mc_samples)


@register
class Ensemble(_AdamMethod):
    """``adam.members`` models from different initialisations, trained together in one stacked pass."""

    name = "ensemble"

    def training_k(self) -> int:
        return self.config.adam.members


#: the built-in methods, in registration order (validation reads :data:`REGISTRY`, so a method
#: registered later is accepted too)
METHODS = method_names()
