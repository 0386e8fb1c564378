"""SGHMC's wall-clock schedule (``sghmc.schedule: time``): the step counts of the phases, planned
inside the run from its own measured step rate so that all samples are written by
``END_FRACTION x training.time_limit``.

Four decisions, each from the rate measured since a reference step (the first ``RATE_SKIP``
steps, which hold one-off costs, are not timed):

1. at the plan point (``PLAN_SHARE`` of the time limit, and at least ``PLAN_MIN_STEPS`` timed
   steps): the total number of steps the budget holds, and the end of the warm start at
   ``warm_start_fraction`` of it; if the steps then slow down (a loaded machine) so that the warm
   start runs ``WARM_START_SLACK`` times over its planned time, it ends there, by the clock, and the
   sampler is planned on what is left (without this, a 30 % slowdown once left no time to sample);
2. after ``PLAN_MIN_STEPS`` steps of the sampler, timed on its own steps: the sampler's steps
   left in the budget; the mass adapts for the first third of the sampler
   (:func:`sampler_schedule`; until this plan it adapts);
3. when the mass freezes: the rest, timed again; burn-in takes half of it and the samples of
   each chain are spread evenly over the other half (:func:`sampling_schedule`); a chain with
   one sample takes it at the last planned step;
4. once the first samples are written: the interval of the others, with the measured cost of
   writing them (:func:`sample_interval`).

The decisions are one :class:`Plan` (a frozen dataclass with its :class:`Stage`), moved on by the
pure functions :func:`advance` (decisions 1-3, after every step) and :func:`plan_interval`
(decision 4). The plan is part of the checkpoint, so a resumed run keeps the decisions it had made.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, replace
from typing import Any, Dict, Optional, Tuple

END_FRACTION = 0.95  # every sample is written by this share of training.time_limit
PLAN_SHARE = 0.02  # the first plan is made after this share of the time limit ...
PLAN_MIN_STEPS = 20  # ... and at least this many timed steps
PLAN_MAX_STEPS = 500  # ... or after this many timed steps, whichever comes first
RATE_SKIP = 5  # steps before the rate is timed (one-off costs of the first steps)
WARM_START_SLACK = 1.1  # the warm start ends by the clock once it takes this x its planned time


def step_time(step: int, elapsed: float, ref_step: int, ref_elapsed: float) -> float:
    """Seconds per step of the steps ``ref_step+1 .. step``, which took ``elapsed - ref_elapsed``
    seconds (validations included)."""
    if step <= ref_step or elapsed <= ref_elapsed:
        raise ValueError("the rate needs at least one timed step")
    return (elapsed - ref_elapsed) / (step - ref_step)


def steps_left(step: int, elapsed: float, ref_step: int, ref_elapsed: float, time_limit: float) -> int:
    """Steps that fit between ``elapsed`` and ``END_FRACTION * time_limit`` at the
    :func:`step_time` of the steps ``ref_step+1 .. step``."""
    step_s = step_time(step, elapsed, ref_step, ref_elapsed)
    return max(0, int((END_FRACTION * time_limit - elapsed) / step_s))


def sampler_schedule(sampler_steps: int, per_chain: int) -> Tuple[int, int, int]:
    """``(mass_freeze_step, burn_in, sample_interval)`` in sampler steps for a sampler of
    ``sampler_steps``: the mass adapts for a third, burn-in ends at two thirds, the samples of
    each chain are spread over the last third (one sample per chain: at the last step)."""
    n = max(int(sampler_steps), 3 * per_chain, 3)
    mass = max(1, n // 3)
    if per_chain == 1:
        return mass, max(mass, n), 1
    burn = max(mass, (2 * n) // 3)
    return mass, burn, max(1, (n - burn) // (per_chain - 1))


def sampling_schedule(sampler_step: int, remaining: int, per_chain: int) -> Tuple[int, int]:
    """``(burn_in, sample_interval)`` once the mass is frozen at ``sampler_step`` with
    ``remaining`` steps left: burn-in ends halfway, the samples fill the second half."""
    n = max(int(remaining), 2 * per_chain, 2)
    if per_chain == 1:
        return sampler_step + n, 1
    burn = sampler_step + n // 2
    return burn, max(1, (n - n // 2) // (per_chain - 1))


def sample_interval(step_s, time_left: float, rest: int, write_s: float, planned: int) -> int:
    """Steps between the ``rest`` samples still to write per chain, when ``time_left`` seconds
    remain, a step takes ``step_s`` and writing one round of samples ``write_s``
    (``step_s`` None: not measured; the ``planned`` interval stays)."""
    if step_s is None or step_s <= 0:
        return planned
    return max(1, int((time_left - rest * write_s) / (rest * step_s)))


class Stage(str, enum.Enum):
    """Where a wall-clock plan is (its value is what checkpoints store)."""

    TIMING = "timing"  # timing the first steps; decision 1 pending
    WARM_START = "warm_start"  # the warm start's end is planned (and may come earlier, by the clock)
    SAMPLER_TIMING = "sampler_timing"  # the warm start is over: timing the sampler's own steps
    SAMPLER = "sampler"  # decision 2 made: the mass adapts until mass_freeze_step
    DONE = "done"  # decision 3 made: burn-in and interval (decision 4 may still change the interval)


@dataclass(frozen=True)
class Plan:
    """The phases' step counts (None: not decided yet) and what the next decision needs.

    ``warm_start_steps`` counts global steps; ``mass_freeze_step`` and ``burn_in`` count sampler
    steps (after the warm start). ``budget_steps``: the steps the budget held at decision 1.
    ``ref_step`` / ``ref_elapsed``: where the rate in use is timed from.
    """

    warm_start_steps: Optional[int] = None
    mass_freeze_step: Optional[int] = None
    burn_in: Optional[int] = None
    sample_interval: Optional[int] = None
    budget_steps: Optional[int] = None
    ref_step: Optional[int] = None
    ref_elapsed: Optional[float] = None
    stage: Stage = Stage.TIMING
    warm_start_deadline: Optional[float] = None  # elapsed seconds by which the warm start must end

    @classmethod
    def fixed(cls, warm_start_steps: int, mass_freeze_step: int, burn_in: int, sample_interval: int) -> "Plan":
        """The plan of ``sghmc.schedule: steps``: every count given, nothing left to decide."""
        return cls(warm_start_steps, mass_freeze_step, burn_in, sample_interval, stage=Stage.DONE)

    def sampler_step(self, step: int) -> int:
        return step - (self.warm_start_steps or 0)

    def planned_steps(self, per_chain: int) -> Optional[int]:
        """The step of the last sample (before the sampler is planned: the budget's steps, or None)."""
        if self.burn_in is None:
            return self.budget_steps
        return self.warm_start_steps + self.burn_in + (per_chain - 1) * self.sample_interval

    def to_dict(self) -> Dict[str, Any]:
        return {**asdict(self), "stage": self.stage.value}

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Plan":
        return cls(**{**d, "stage": Stage(d.get("stage", Stage.DONE.value))})


def advance(p: Plan, step: int, now: float, time_limit: float, max_steps: int, per_chain: int,
            warm_start_fraction: Optional[float]) -> Plan:
    """The plan after global step ``step`` ended at ``now`` seconds: decisions 1-3, each made once, at
    the step it belongs to. ``warm_start_fraction``: the warm start's share of the steps (None: the
    run has no warm start, the sampler started at step 1)."""
    if p.ref_step is None:
        return replace(p, ref_step=step, ref_elapsed=now) if step >= RATE_SKIP else p
    if p.stage is Stage.TIMING:
        timed = step - p.ref_step
        if timed < PLAN_MIN_STEPS or (now < PLAN_SHARE * time_limit and timed < PLAN_MAX_STEPS):
            return p
        total = min(max_steps, step + steps_left(step, now, p.ref_step, p.ref_elapsed, time_limit))
        p = replace(p, budget_steps=total)
        if warm_start_fraction is None:
            p = replace(p, warm_start_steps=0)
        else:
            warm = max(step, int(warm_start_fraction * total))
            deadline = now + WARM_START_SLACK * (warm - step) * step_time(step, now, p.ref_step, p.ref_elapsed)
            p = replace(p, warm_start_steps=warm, warm_start_deadline=deadline, stage=Stage.WARM_START)
            if warm > step:
                return p
            # the plan point is the warm start's last step: the sampler's plan follows at once
        return _plan_sampler(p, total, step, per_chain)
    if p.stage is Stage.WARM_START:
        if step < p.warm_start_steps and p.warm_start_deadline is not None and now > p.warm_start_deadline:
            p = replace(p, warm_start_steps=step)  # slower than planned (a loaded machine): end it by the clock
        if step >= p.warm_start_steps:
            return replace(p, ref_step=step, ref_elapsed=now, stage=Stage.SAMPLER_TIMING)  # the sampler's own rate
        return p
    if p.stage is Stage.SAMPLER_TIMING and step - p.ref_step >= PLAN_MIN_STEPS:
        left = steps_left(step, now, p.ref_step, p.ref_elapsed, time_limit)
        return _plan_sampler(p, min(max_steps, step + left), step, per_chain)
    if p.stage is Stage.SAMPLER and p.sampler_step(step) >= p.mass_freeze_step:
        # the mass freezes after the sampler's plan, so steps have been timed since ref_step
        left = min(max_steps - step, steps_left(step, now, p.ref_step, p.ref_elapsed, time_limit))
        burn, interval = sampling_schedule(p.sampler_step(step), left, per_chain)
        return replace(p, burn_in=burn, sample_interval=interval, stage=Stage.DONE)
    return p


def _plan_sampler(p: Plan, total: int, step: int, per_chain: int) -> Plan:
    """Mass freeze, burn-in and interval for a sampler that ends at global step ``total``."""
    done = p.sampler_step(step)  # sampler steps already taken (> 0 only without a warm start)
    mass, burn, interval = sampler_schedule(total - p.warm_start_steps, per_chain)
    mass = max(mass, done + 1)
    return replace(p, mass_freeze_step=mass, burn_in=max(burn, mass), sample_interval=interval, stage=Stage.SAMPLER)


def plan_interval(p: Plan, step: int, now: float, before: float, time_limit: float, max_steps: int,
                  per_chain: int) -> Plan:
    """Decision 4: once the first samples are written (they took from ``before`` to ``now``), the
    interval that fits the other samples and their writing into the budget."""
    rest = per_chain - 1
    step_s = step_time(step, before, p.ref_step, p.ref_elapsed) if step > p.ref_step else None
    interval = sample_interval(step_s, END_FRACTION * time_limit - now, rest, now - before, p.sample_interval)
    return replace(p, sample_interval=max(1, min(interval, (max_steps - step) // rest)))
