"""Adaptive-mass SGHMC: the posterior sampler of the paper (section 3.3) as a torch optimizer.

Rensmeyer, Craig, Kramer and Niggemann, "High accuracy uncertainty-aware
interatomic force modeling with equivariant Bayesian neural networks",
Digital Discovery 3, 2356 (2024).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

import torch
from torch.optim import Optimizer

_EXTRA_KEY = "adaptive_sghmc"


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _check_group(group: Dict[str, Any]) -> None:
    """Raise ValueError naming the first hyperparameter of ``group`` outside its range."""
    lr = group["lr"]
    if not (_is_real(lr) and lr > 0):
        raise ValueError(f"lr (step size gamma) must be a finite number > 0, got {lr!r}")
    friction = group["friction"]
    if not (_is_real(friction) and 0 < friction <= 1):
        raise ValueError(f"friction (alpha) must be in (0, 1], got {friction!r}")
    beta = group["beta"]
    if not (_is_real(beta) and 0 <= beta < 1):
        raise ValueError(f"beta must be in [0, 1), got {beta!r}")
    eps = group["eps"]
    if not (_is_real(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    noise = group["noise"]
    if not (_is_real(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite number >= 0, got {noise!r}")
    noise_start = group["noise_start"]
    if not (_is_real(noise_start) and 0 <= noise_start <= 1):
        raise ValueError(f"noise_start must be in [0, 1], got {noise_start!r}")
    ramp = group["noise_ramp_steps"]
    if not (_is_int(ramp) and ramp >= 0):
        raise ValueError(f"noise_ramp_steps must be an integer >= 0, got {ramp!r}")
    size = group["dataset_size"]
    if not (_is_int(size) and size >= 1):
        raise ValueError(f"dataset_size (|D|) must be an integer >= 1, got {size!r}")


class AdaptiveSGHMC(Optimizer):
    r"""SGHMC with an AMSGrad mass that adapts, then freezes (Rensmeyer et al. 2024, sec. 3.3).

    Samples ``theta ~ p(theta | D) ∝ exp(-u(theta))`` with

    ``u(theta) = -ln p(theta) - |D|/|B| sum_{(x, y) in B} ln p(y | x, theta)``,

    the minibatch estimate of the negative log posterior. ``p.grad`` must hold the
    gradient of this **full** potential (not divided by ``|D|``); the optimizer
    divides by ``|D| = dataset_size`` itself. Element-wise, at step ``t``:

    .. code-block:: text

        while t <= mass_freeze_step (mass adapting):
            a_t = (1 - beta) * (grad / |D|)^2 + beta * a_{t-1}
            D_t = max(D_{t-1}, a_t)                      # running max (AMSGrad)
            M_t = sqrt(D_t / (1 - beta^t)) + eps
        afterwards M stays at M_{mass_freeze_step}; a and D stop changing
        v     <- v - alpha * grad / |D| - alpha * v + s_t * alpha * sqrt(2 M / (|D| gamma)) * N(0, I)
        theta <- theta + gamma * v / M

    starting from ``v = a = D = 0``, with ``gamma = lr``, ``alpha = friction`` and
    ``s_t`` the noise multiplier (``noise``, optionally ramped up from
    ``noise * noise_start`` over the first ``noise_ramp_steps`` steps).

    Parameters
    ----------
    params : iterable of tensors or dicts
        Parameters or parameter groups (every hyperparameter but ``mass_freeze_step``
        and ``seed`` may be set per group). A leading sample/chain dimension ``k``
        needs nothing special: the update is element-wise, so the k chains of a
        ``[k, ...]`` parameter are independent as long as the potential is a sum
        over chains (each chain's gradient depends on its own slice only).
    lr : float
        Step size ``gamma > 0``. Default 1e-3.
    friction : float
        ``alpha`` in (0, 1]: fraction of the momentum removed per step. Default 0.1.
    beta : float
        Decay of the squared-gradient average ``a``, in [0, 1). Default 0.999.
    eps : float
        Stability constant added to the mass, > 0. Default 1e-8.
    dataset_size : int
        ``|D|``, the number of training examples (required, >= 1).
    mass_freeze_step : int or None
        Last step at which the mass adapts (>= 1; required). ``None`` never freezes it:
        an Adam-like optimiser with noise, **not** a valid posterior sampler.
    noise : float
        Multiplier ``>= 0`` of the injected noise. 1.0 samples the posterior; ``noise**2``
        acts as a temperature (the stationary covariance of a Gaussian posterior scales
        by it); 0.0 turns the sampler into the Adam-like optimiser described in Notes.
    noise_start : float
        Reduced-noise start in [0, 1]: the multiplier at step 1 is ``noise * noise_start``
        and rises linearly to ``noise`` at step ``noise_ramp_steps + 1``. Default 1.0 (off).
    noise_ramp_steps : int
        Length of the reduced-noise start, >= 0. Default 0 (off).
    seed : int or None
        Seed of the private generator of the noise. ``None`` draws one from the global
        torch RNG (reproducible under ``torch.manual_seed``). The global RNG is never
        used afterwards.
    chain_seeds : sequence of int, optional
        One seed per chain: every parameter then has a leading chain dimension of this length
        and chain ``c``'s noise comes from its own generator seeded with ``chain_seeds[c]``
        (``seed`` is not used). A chain's draws then do not depend on which other chains run
        beside it, so chains split over processes (``bnnmd.train``'s distributed chains) draw
        what they draw in one process.

    Attributes
    ----------
    generator : torch.Generator
        The CPU generator of the noise; its state travels in :meth:`state_dict`.
    chain_generators : list of torch.Generator
        With ``chain_seeds``: one CPU generator per chain (their states travel in
        :meth:`state_dict`); empty otherwise.

    Notes
    -----
    *gamma and alpha.* The paper obtains this chain from the SGHMC of Chen et al. (2014),
    ``dw = -grad u dt - C M^-1 w dt + sqrt(2 C dt) N``, ``dtheta = M^-1 w dt``, by the
    substitutions ``alpha = dt C / M``, ``gamma = dt^2 |D| / alpha``, ``v = dt w / gamma``.
    So ``alpha`` is the friction per step (``1/alpha`` steps is the momentum memory, like
    ``1 - beta1`` of Adam) and ``gamma`` the step size of the mean loss ``u/|D|``; the
    integration time step is ``dt = sqrt(gamma alpha / |D|)``. Sampling is exact only as
    ``gamma -> 0``: the discretisation bias grows with ``gamma * alpha * H / (|D| M)``
    (``H`` the curvature of ``u``), and the chain is unstable when that is of order 1.

    *Adam correspondence.* With ``noise = 0`` and the mass not frozen, ``-v`` is Adam's
    first moment with ``beta1 = 1 - alpha`` of the gradient ``grad/|D|``, and ``a``,
    ``D`` and ``M`` are AMSGrad's ``exp_avg_sq``, ``max_exp_avg_sq`` and denominator with
    ``beta2 = beta``. The only difference is that ``v`` is not bias-corrected: the step
    equals ``torch.optim.Adam(amsgrad=True, betas=(1 - alpha, beta), eps=eps)`` on
    ``u/|D|`` with a learning rate ``gamma * (1 - (1 - alpha)^t)`` at step ``t``.

    *Why the mass freezes.* A mass that depends on the path makes ``(theta, v)`` not a
    Markov chain, so its limit need not be the posterior. Because ``M`` follows the
    running *maximum* of the squared-gradient average, it barely moves late in the
    adaptation and can be frozen without instability; from then on the chain is plain
    SGHMC with a constant diagonal mass, whose stationary law is the posterior for small
    ``gamma`` (Chen et al. 2014). Adapt the mass where the gradients are representative
    (a mass adapted where ``grad = 0`` is ``eps`` and makes the chain unstable); take
    posterior samples only after the freeze and after burn-in. Every parameter must
    receive a gradient before the freeze.

    *Minibatch noise.* A minibatch gradient is ``grad u + e`` with ``E[e] = 0``; its
    variance adds to the injected noise and the chain runs slightly hot. The effect is
    small while ``|e| / |D| << sqrt(2 M / (gamma |D|))``: choose batch size and ``gamma``
    so that the injected noise dominates. During adaptation the minibatch noise also
    inflates ``a`` and so the mass, which only slows the chain.

    The per-parameter state holds ``momentum`` (v), ``exp_avg_sq`` (a),
    ``max_exp_avg_sq`` (D) and ``mass`` (M). Parameters whose ``.grad`` is ``None`` are
    skipped (neither moved nor adapted). Noise is drawn on the CPU with
    :attr:`generator` and moved to the parameter's device, so a chain is reproducible
    across devices up to floating point.

    Examples
    --------
    Four chains of a 2-parameter model, prior only (``N(0, I)``):

    >>> import torch
    >>> theta = torch.nn.Parameter(torch.zeros(4, 2, dtype=torch.float64))
    >>> with torch.no_grad():
    ...     _ = theta.fill_(3.0)  # start away from the mode: the mass adapts on real gradients
    >>> opt = AdaptiveSGHMC([theta], lr=1e-2, dataset_size=1, mass_freeze_step=10, seed=0)
    >>> for _ in range(300):
    ...     opt.zero_grad()
    ...     gaussian_prior_potential([theta], std=1.0).backward()
    ...     opt.step()
    >>> opt.step_count, opt.is_mass_frozen, tuple(opt.mass(theta).shape)
    (300, True, (4, 2))
    >>> bool(theta.abs().max() < 10)
    True
    """

    def __init__(self, params: Iterable[Union[torch.Tensor, Dict[str, Any]]], lr: float = 1e-3, *,
                 dataset_size: int, mass_freeze_step: Optional[int], friction: float = 0.1,
                 beta: float = 0.999, eps: float = 1e-8, noise: float = 1.0, noise_start: float = 1.0,
                 noise_ramp_steps: int = 0, seed: Optional[int] = None,
                 chain_seeds: Optional[Sequence[int]] = None):
        if mass_freeze_step is not None and not (_is_int(mass_freeze_step) and mass_freeze_step >= 1):
            raise ValueError(f"mass_freeze_step must be an integer >= 1 or None (never freeze), "
                             f"got {mass_freeze_step!r}")
        if seed is not None and not _is_int(seed):
            raise ValueError(f"seed must be an integer or None, got {seed!r}")
        defaults = dict(lr=lr, friction=friction, beta=beta, eps=eps, noise=noise, noise_start=noise_start,
                        noise_ramp_steps=noise_ramp_steps, dataset_size=dataset_size)
        _check_group(defaults)
        self.mass_freeze_step: Optional[int] = None if mass_freeze_step is None else int(mass_freeze_step)
        self._step = 0
        self._mass_frozen = False
        self._primed = False  # prime_mass(): the adaptation continues unbiased estimates (no bias correction)
        if chain_seeds is not None and (len(chain_seeds) == 0 or not all(_is_int(c) for c in chain_seeds)):
            raise ValueError(f"chain_seeds must be a non-empty sequence of integers, got {chain_seeds!r}")
        self.chain_generators: List[torch.Generator] = [torch.Generator().manual_seed(int(c))
                                                        for c in (chain_seeds or ())]
        if seed is None:
            seed = 0 if chain_seeds is not None else int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator()
        self.generator.manual_seed(int(seed))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        """Add a parameter group (hyperparameters checked like the constructor's)."""
        super().add_param_group(param_group)
        try:
            _check_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    # ------------------------------------------------------------------ queries
    @property
    def step_count(self) -> int:
        """Number of :meth:`step` calls so far (``t``)."""
        return self._step

    @property
    def is_mass_frozen(self) -> bool:
        """Whether the mass is frozen (after step ``mass_freeze_step`` or :meth:`freeze_mass`)."""
        return self._mass_frozen

    def mass(self, p: torch.Tensor) -> torch.Tensor:
        """The current mass ``M`` of parameter ``p`` (a copy, same shape as ``p``)."""
        state = self.state.get(p)
        if not state or "mass" not in state:
            raise ValueError("this parameter has no mass yet: it is not in this optimizer or has not "
                             "had a step with a gradient")
        return state["mass"].clone()

    @torch.no_grad()
    def prime_mass(self, second_moments: Dict[torch.Tensor, torch.Tensor]) -> None:
        """Start the mass adaptation from estimates of ``E[(grad / |D|)^2]`` instead of zero.

        ``second_moments`` maps every parameter of this optimizer that will get gradients to an
        unbiased (bias-corrected) estimate of the mean squared gradient of ``u / |D|``, e.g. Adam's
        ``exp_avg_sq / (1 - beta2^t)`` after a warm start that minimised ``u / |D|``. ``a`` and ``D``
        start there, the mass is ``sqrt(D) + eps`` from the first step, and since the estimates are
        unbiased the adaptation continues them without bias correction.

        Why: the unprimed first step sets the mass from ONE gradient, ``M = |grad| / |D| + eps``. At a
        mode, where many gradients are tiny, that mass is tiny and the injected noise
        ``~ alpha sqrt(2 gamma / (|D| M))`` per step is huge: a chain started from a warm start's
        weights diverged at once (CCSD(T) ethanol, 100 frames: validation force MAE 1.08 -> 827). Call before
        the first step."""
        if self._step:
            raise RuntimeError("prime_mass() after the first step: the mass adaptation has started")
        group_of = {p: group for group in self.param_groups for p in group["params"]}
        for p, c in second_moments.items():
            if p not in group_of:
                raise ValueError("prime_mass(): a tensor that is not a parameter of this optimizer")
            if c.shape != p.shape or not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
                raise ValueError(f"prime_mass(): the second moment of a {tuple(p.shape)} parameter must have "
                                 f"its shape and be finite and >= 0, got {tuple(c.shape)}")
            state = self.state[p]
            state["momentum"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = c.detach().to(p).clone()
            state["max_exp_avg_sq"] = c.detach().to(p).clone()
            state["mass"] = state["max_exp_avg_sq"].sqrt().add_(group_of[p]["eps"])
        self._primed = True

    @property
    def is_primed(self) -> bool:
        """Whether :meth:`prime_mass` started the adaptation."""
        return self._primed

    def freeze_mass(self) -> None:
        """Freeze the mass now, before ``mass_freeze_step`` (no effect if already frozen)."""
        if self._step == 0:
            raise RuntimeError("freeze_mass() before the first step: the mass is not defined yet")
        self._mass_frozen = True

    def noise_multiplier(self, group: Dict[str, Any], t: Optional[int] = None) -> float:
        """Noise multiplier ``s_t`` of ``group`` at step ``t`` (default: the next step)."""
        t = self._step + 1 if t is None else t
        ramp = group["noise_ramp_steps"]
        if ramp > 0 and t <= ramp:
            start = group["noise_start"]
            return group["noise"] * (start + (1.0 - start) * (t - 1) / ramp)
        return group["noise"]

    # ------------------------------------------------------------------- update
    def _draw_noise(self, p: torch.Tensor) -> torch.Tensor:
        """Standard normal noise shaped like ``p``, from :attr:`generator`, or with ``chain_seeds`` each
        chain's slice ``p[c]`` from its own generator (a hook for subclasses)."""
        gens = self.chain_generators
        if not gens:
            return torch.randn(p.shape, generator=self.generator, dtype=p.dtype).to(p.device)
        if p.dim() == 0 or p.shape[0] != len(gens):
            raise RuntimeError(f"a parameter of shape {tuple(p.shape)} has no leading chain dimension of "
                               f"len(chain_seeds) = {len(gens)}")
        return torch.stack([torch.randn(p.shape[1:], generator=g, dtype=p.dtype) for g in gens]).to(p.device)

    @torch.no_grad()
    def step(self, closure=None):
        """One SGHMC step from the gradients in ``p.grad``; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        t = self._step + 1
        adapting = not self._mass_frozen
        for group in self.param_groups:
            lr, alpha, beta, eps = group["lr"], group["friction"], group["beta"], group["eps"]
            size = group["dataset_size"]
            scale = self.noise_multiplier(group, t)
            bias_correction_sqrt = 1.0 if self._primed else math.sqrt(1.0 - beta**t)
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("AdaptiveSGHMC does not support sparse gradients")
                if not torch.is_floating_point(p):
                    raise RuntimeError(f"AdaptiveSGHMC needs floating-point parameters, got {p.dtype}")
                state = self.state[p]
                if not state:
                    if not adapting:
                        raise RuntimeError("a parameter got its first gradient after the mass was frozen; "
                                           "every parameter needs gradients during mass adaptation")
                    if self._primed:
                        raise RuntimeError("a parameter without a primed mass got a gradient; prime_mass() "
                                           "needs the second moments of every parameter that gets gradients")
                    for key in ("momentum", "exp_avg_sq", "max_exp_avg_sq", "mass"):
                        state[key] = torch.zeros_like(p, memory_format=torch.preserve_format)
                v, a, d, mass = state["momentum"], state["exp_avg_sq"], state["max_exp_avg_sq"], state["mass"]
                g = grad / size
                if adapting:
                    a.mul_(beta).addcmul_(g, g, value=1.0 - beta)
                    torch.maximum(d, a, out=d)
                    torch.div(d.sqrt(), bias_correction_sqrt, out=mass)
                    mass.add_(eps)
                v.mul_(1.0 - alpha).add_(g, alpha=-alpha)
                if scale > 0:
                    std = mass.mul(2.0 / (size * lr)).sqrt_().mul_(scale * alpha)
                    v.addcmul_(self._draw_noise(p), std)
                p.addcdiv_(v, mass, value=lr)
        self._step = t
        if self.mass_freeze_step is not None and t >= self.mass_freeze_step:
            self._mass_frozen = True
        return loss

    # ------------------------------------------------------------- checkpoints
    def state_dict(self) -> Dict[str, Any]:
        """Optimizer state plus the generator state, step counter and frozen-mass flag.

        Holds only tensors, numbers, booleans and None, so it round-trips through
        ``torch.save`` / ``torch.load(weights_only=True)``; a chain resumed from it
        continues bit for bit.
        """
        sd = super().state_dict()
        sd[_EXTRA_KEY] = {
            "generator_state": self.generator.get_state(),
            "chain_generator_states": [g.get_state() for g in self.chain_generators],
            "step": self._step,
            "mass_frozen": self._mass_frozen,
            "mass_freeze_step": self.mass_freeze_step,
            "primed": self._primed,
        }
        return sd

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (including generator, step and freeze settings)."""
        state_dict = dict(state_dict)
        extra = state_dict.pop(_EXTRA_KEY, None)
        if extra is None:
            raise ValueError(f"not an AdaptiveSGHMC state dict: key {_EXTRA_KEY!r} is missing")
        super().load_state_dict(state_dict)
        self.generator.set_state(extra["generator_state"].to(device="cpu", dtype=torch.uint8))
        states = list(extra.get("chain_generator_states", []))
        if len(states) != len(self.chain_generators):
            raise ValueError(f"the state dict has {len(states)} chain generator(s), this optimizer "
                             f"{len(self.chain_generators)} (chain_seeds must match)")
        for g, st in zip(self.chain_generators, states):
            g.set_state(st.to(device="cpu", dtype=torch.uint8))
        self._step = int(extra["step"])
        self._mass_frozen = bool(extra["mass_frozen"])
        self._primed = bool(extra.get("primed", False))
        freeze = extra["mass_freeze_step"]
        self.mass_freeze_step = None if freeze is None else int(freeze)


def gaussian_prior_potential(params: Iterable[torch.Tensor], std: float = 1.0,
                             centre: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    r"""``-ln N(theta; centre, std^2 I)`` up to a constant: ``sum ||theta - centre||^2 / (2 std^2)``.

    Parameters
    ----------
    params : iterable of tensors
        The parameters ``theta`` (e.g. ``model.parameters()``).
    std : float
        Prior standard deviation, > 0 (the paper uses the ``N(0, I)`` prior: 1.0).
    centre : sequence of tensors, optional
        Prior means, one per parameter, broadcastable to it (e.g. a checkpoint without
        the chain dimension ``k`` for a fine-tuning prior). Default: zero.

    Returns
    -------
    torch.Tensor
        Scalar; add it to the (rescaled) negative log-likelihood to get ``u(theta)``.

    Examples
    --------
    >>> w = torch.tensor([1.0, 2.0])
    >>> gaussian_prior_potential([w], std=2.0)
    tensor(0.6250)
    >>> gaussian_prior_potential([w], centre=[torch.tensor([1.0, 0.0])])
    tensor(2.)
    """
    if not (_is_real(std) and std > 0):
        raise ValueError(f"std must be a finite number > 0, got {std!r}")
    params = list(params)
    if not params:
        raise ValueError("params is empty")
    if centre is not None:
        centre = list(centre)
        if len(centre) != len(params):
            raise ValueError(f"centre has {len(centre)} tensors but params has {len(params)}")
    terms: List[torch.Tensor] = []
    for i, p in enumerate(params):
        diff = p if centre is None else p - centre[i].to(device=p.device, dtype=p.dtype)
        terms.append(diff.pow(2).sum())
    return torch.stack(terms).sum() / (2.0 * std * std)
