"""The training methods: one :class:`Method` per method, in one registry.

A method owns everything that differs between ``sghmc``, ``map``, ``mc_dropout`` and
``ensemble``: k while training (the sample dimension), the model options it needs
(dropout), its optimiser(s) and loss scale, its phases, its stop rule, when it writes
samples, and how its samples become a k-sample model for inference. The trainer
(:mod:`bnnmd.train._trainer`) is a plain loop that calls these hooks.

Adding a method is one class with ``@register``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Dict, List, Optional, Sequence, Type

import torch

from bnnmd.bayes import AdaptiveSGHMC
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


@dataclass
class InferencePlan:
    """Which sample files make the k copies of an inference model."""

    indices: List[int]  # one file index per model copy (k = len(indices))
    available: Optional[int]  # files that can be chosen from; None: any number of copies (dropout masks)
    dropout: bool = False  # keep dropout on at inference (one mask per copy)


class Method:
    """Base class; the defaults are those of a method that writes its k members at the end."""

    name: ClassVar[str] = ""

    def __init__(self, config: "TrainConfig"):
        self.config = config

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
        return {"samples": trainer.samples_written, "active_members": trainer.k}

    def state_dict(self) -> Dict[str, Any]:
        return {}

    def load_state_dict(self, state: Dict[str, Any], trainer: "Trainer") -> None:
        """Restore :meth:`state_dict` and rebuild the optimiser of the saved phase (before its state loads)."""

    # ---- inference ----------------------------------------------------------------------------
    @classmethod
    def inference_plan(cls, n_files: int, k: Optional[int], select: Optional[Sequence[int]],
                       meta: Dict[str, Any]) -> InferencePlan:
        """All files, ``k`` evenly spaced ones, or ``select``; raises ValueError with the fix."""
        from bnnmd.nn._samples import evenly_spaced

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
            raise ValueError(f"k = {k}: {cls.name} wrote {n_files} sample(s); use --k {n_files} or fewer (at least 1), "
                             "or let the run write more samples")
        return InferencePlan(evenly_spaced(n_files, int(k)), n_files)


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

    def training_k(self) -> int:
        return self.config.sghmc.chains

    def setup(self, trainer: "Trainer") -> None:
        s = self.config.sghmc
        self.timed = s.schedule == "time"
        if self.timed:  # decided during the run; None = not yet
            # budget_steps: the steps the budget holds at the first plan (until the sampler's plan)
            self.plan = {"warm_start_steps": None, "mass_freeze_step": None, "burn_in": None,
                         "sample_interval": None, "budget_steps": None, "ref_step": None, "ref_elapsed": None,
                         "stage": "timing"}
            warm = s.warm_start_fraction > 0
        else:
            self.plan = {"warm_start_steps": s.warm_start_steps, "mass_freeze_step": s.mass_freeze_step,
                         "burn_in": s.burn_in, "sample_interval": s.sample_interval}
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
                                              mass_freeze_step=self.plan["mass_freeze_step"], noise=s.noise,
                                              noise_start=s.noise_start, noise_ramp_steps=s.noise_ramp_steps,
                                              seed=c.seed)
            trainer.ema = None

    def sampler_step(self, step: int) -> int:
        return step - (self.plan["warm_start_steps"] or 0)

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
            if p["warm_start_steps"] is not None and trainer.step >= p["warm_start_steps"]:
                self._end_warm_start(trainer)
            return
        t = self.sampler_step(trainer.step)
        if p["burn_in"] is None or t < p["burn_in"] or (t - p["burn_in"]) % p["sample_interval"]:
            return
        from bnnmd.nn._samples import sample_path, save_sample

        s = self.config.sghmc
        before = trainer.clock()
        first = trainer.samples_written == 0
        for chain in range(trainer.k):
            if trainer.samples_written >= s.num_samples:
                break
            save_sample(sample_path(trainer.samples_dir, trainer.samples_written), trainer.model, chain, self.name,
                        meta={"step": trainer.step, "sampler_step": t, "chain": chain, "seed": self.config.seed,
                              **trainer.units})
            trainer.samples_written += 1
        if self.timed and first and self._per_chain() > 1:
            self._plan_interval(trainer, before)

    # ---- the wall-clock plan (sghmc.schedule: time) --------------------------------------------
    def _per_chain(self) -> int:
        s = self.config.sghmc
        return s.num_samples // s.chains

    def _plan_interval(self, trainer: "Trainer", before: float) -> None:
        """Decision 4 of ``_schedule``: once the first samples are written (they took from
        ``before`` to now), the interval that fits the other samples and their writing into the budget."""
        from bnnmd.train import _schedule as S

        p, step, now = self.plan, trainer.step, trainer.clock()
        rest = self._per_chain() - 1
        step_s = S.step_time(step, before, p["ref_step"], p["ref_elapsed"]) if step > p["ref_step"] else None
        interval = S.sample_interval(step_s, S.END_FRACTION * self.config.training.time_limit - now, rest,
                                     now - before, p["sample_interval"])
        p["sample_interval"] = max(1, min(interval, (self.config.training.max_steps - step) // rest))

    def _plan_step(self, trainer: "Trainer") -> None:
        """The decisions of ``bnnmd.train._schedule``, each made once, at the step it belongs to."""
        from bnnmd.train import _schedule as S

        p, step, now = self.plan, trainer.step, trainer.clock()
        limit, cap = self.config.training.time_limit, self.config.training.max_steps
        if p["ref_step"] is None:
            if step >= S.RATE_SKIP:
                p["ref_step"], p["ref_elapsed"] = step, now
            return
        if p["stage"] == "timing":
            timed = step - p["ref_step"]
            if timed < S.PLAN_MIN_STEPS or (now < S.PLAN_SHARE * limit and timed < S.PLAN_MAX_STEPS):
                return
            total = min(cap, step + S.steps_left(step, now, p["ref_step"], p["ref_elapsed"], limit))
            p["budget_steps"] = total
            if self.phase == "warm_start":
                p["warm_start_steps"] = max(step, int(self.config.sghmc.warm_start_fraction * total))
                step_s = S.step_time(step, now, p["ref_step"], p["ref_elapsed"])
                p["warm_start_deadline"] = now + S.WARM_START_SLACK * (p["warm_start_steps"] - step) * step_s
                p["stage"] = "warm_start"
                if p["warm_start_steps"] > step:
                    return
                # the plan point is the warm start's last step: fall through to the sampler's plan
            else:  # no warm start: the sampler started at step 1
                p["warm_start_steps"] = 0
            self._plan_sampler(trainer, total, step)
            return
        if p["stage"] == "warm_start" and step < p["warm_start_steps"] and now > p.get("warm_start_deadline", now):
            p["warm_start_steps"] = step  # slower than planned (a loaded machine): end it by the clock
        if p["stage"] == "warm_start" and step >= p["warm_start_steps"]:
            p["ref_step"], p["ref_elapsed"] = step, now  # the sampler's own rate from here
            p["stage"] = "sampler_timing"
            return
        if p["stage"] == "sampler_timing" and step - p["ref_step"] >= S.PLAN_MIN_STEPS:
            left = S.steps_left(step, now, p["ref_step"], p["ref_elapsed"], limit)
            self._plan_sampler(trainer, min(cap, step + left), step)
            return
        if p["stage"] == "sampler" and self.sampler_step(step) >= p["mass_freeze_step"]:
            # the mass freezes after the sampler's plan, so steps have been timed since ref_step
            left = min(cap - step, S.steps_left(step, now, p["ref_step"], p["ref_elapsed"], limit))
            p["burn_in"], p["sample_interval"] = S.sampling_schedule(self.sampler_step(step), left,
                                                                     self._per_chain())
            p["stage"] = "done"

    def _plan_sampler(self, trainer: "Trainer", total: int, step: int) -> None:
        """Mass freeze, burn-in and interval for a sampler that ends at global step ``total``."""
        from bnnmd.train import _schedule as S

        p = self.plan
        done = self.sampler_step(step)  # sampler steps already taken (> 0 only without a warm start)
        mass, burn, interval = S.sampler_schedule(total - p["warm_start_steps"], self._per_chain())
        mass = max(mass, done + 1)
        p.update(mass_freeze_step=mass, burn_in=max(burn, mass), sample_interval=interval, stage="sampler")
        if isinstance(trainer.optimizer, AdaptiveSGHMC):
            trainer.optimizer.mass_freeze_step = mass

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
            with torch.no_grad():
                for p in trainer.model.parameters():
                    p.copy_(p[:1].clone().expand_as(p))  # no read from memory being written
        self.phase = "sample"
        self._build_phase(trainer)
        trainer.optimizer.prime_mass(moments)  # not a mass from one gradient at the mode: see prime_mass

    def stop_status(self, trainer: "Trainer") -> Optional[str]:
        return "finished" if trainer.samples_written >= self.config.sghmc.num_samples else None

    def finish(self, trainer: "Trainer") -> None:
        """``schedule.json``: the step counts the run used (planned ones with ``schedule: time``)."""
        import json

        from bnnmd._files import write_atomic

        write_atomic(trainer.run_dir / "schedule.json", json.dumps(self.schedule(), indent=1) + "\n")

    def planned_steps(self) -> Optional[int]:
        """The steps the schedule takes: its last sample's step (a wall-clock plan: the steps the
        budget holds until the sampler is planned, None before the first plan)."""
        p = self.plan
        if p["burn_in"] is None:
            return p["budget_steps"]
        return p["warm_start_steps"] + p["burn_in"] + (self._per_chain() - 1) * p["sample_interval"]

    def progress(self, trainer: "Trainer") -> str:
        if self.phase == "warm_start":
            return f"warm start {trainer.step}/{self.plan['warm_start_steps'] or '?'}"
        return f"samples {trainer.samples_written}/{self.config.sghmc.num_samples}"

    def schedule(self) -> Dict[str, Any]:
        """The phases' step counts in use (the plan, with ``sghmc.schedule: time``)."""
        keys = ("warm_start_steps", "mass_freeze_step", "burn_in", "sample_interval")
        return {**{k: self.plan[k] for k in keys}, "planned_steps": self.planned_steps(),
                "schedule": self.config.sghmc.schedule}

    def state_dict(self) -> Dict[str, Any]:
        return {"phase": self.phase, "plan": dict(self.plan)}

    def load_state_dict(self, state: Dict[str, Any], trainer: "Trainer") -> None:
        self.phase = str(state["phase"])
        if self.timed:
            self.plan = dict(state["plan"])
        self._build_phase(trainer)


# ---- Adam-based methods -----------------------------------------------------------------------
class _AdamMethod(Method):
    """Adam on ``u / |D|`` (MAP), an EMA of the weights, per-member early stopping on validation.

    Validation, early stopping and the written samples use the EMA weights when
    ``adam.ema_decay > 0``. The learning rate decays by ``adam.lr_factor`` after
    ``adam.lr_patience`` validations without improvement of the mean over active members.
    """

    def setup(self, trainer: "Trainer") -> None:
        a = self.config.adam
        trainer.optimizer = torch.optim.Adam(list(trainer.model.parameters()), lr=a.lr)
        trainer.ema = make_ema(trainer, a)
        k = trainer.k
        self.best_metric = torch.full((k,), math.inf, dtype=torch.float64)
        self.bad_validations = torch.zeros(k, dtype=torch.int64)
        self.stopped = torch.zeros(k, dtype=torch.bool)
        self.best_state = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        self.plateau_best = math.inf
        self.plateau_bad = 0

    def after_step(self, trainer: "Trainer") -> None:
        if self.stopped.any():  # early-stopped members stay at their best parameters
            with torch.no_grad():
                stopped = self.stopped.to(trainer.device)
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
            mask = improved.to(trainer.device)
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
        from bnnmd.nn._samples import sample_path, save_sample

        c = self.config
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if torch.isfinite(self.best_metric).all():
                    p.copy_(self.best_state[name])
        for member in range(trainer.k):
            meta = {"step": trainer.step, "member": member, "seed": c.seed, **trainer.units,
                    "val_force_mae": float(self.best_metric[member]), **self.sample_meta()}
            save_sample(sample_path(trainer.samples_dir, member), trainer.model, member, self.name, meta=meta)
        trainer.samples_written = trainer.k

    def sample_meta(self) -> Dict[str, Any]:
        return {}

    def best_val_force_mae(self) -> Optional[float]:
        finite = torch.isfinite(self.best_metric)
        return float(self.best_metric[finite].min()) if finite.any() else None

    def progress(self, trainer: "Trainer") -> str:
        return f"members training {int((~self.stopped).sum())}/{trainer.k}"

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

    @classmethod
    def inference_plan(cls, n_files, k, select, meta) -> InferencePlan:
        if select is not None:
            raise ValueError("--select does not apply to an MC-dropout run (one sample); use --k for masks")
        masks = int(meta.get("mc_samples", 8)) if k is None else k
        if isinstance(masks, bool) or int(masks) < 1:
            raise ValueError(f"k = {k}: the number of dropout masks must be at least 1")
        return InferencePlan([i % n_files for i in range(int(masks))], None, dropout=True)


@register
class Ensemble(_AdamMethod):
    """``adam.members`` models from different initialisations, trained together in one stacked pass."""

    name = "ensemble"

    def training_k(self) -> int:
        return self.config.adam.members


#: the built-in methods, in registration order (validation reads :data:`REGISTRY`, so a method
#: registered later is accepted too)
METHODS = method_names()
