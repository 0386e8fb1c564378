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

The plan is part of the checkpoint, so a resumed run keeps the decisions it had made.
"""

from __future__ import annotations

from typing import Tuple

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
