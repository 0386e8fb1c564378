"""AdaptiveSGHMC (paper section 3.3): posterior sampling, Adam limit, AMSGrad mass, checkpoints, chains.

Statistical checks use K independent chains held in one ``[K, d]`` parameter.
Because the chains are independent, the spread of the per-chain estimates gives
the standard error of the pooled estimate without any model of the
autocorrelation; the effective sample size of a quantity is then
``ESS = Var / SE^2`` and the tolerance is ``Z * SE = Z * sqrt(Var / ESS)``.
The discretisation bias of the sampler at the chosen step size is computed
exactly (the chain is linear for a Gaussian posterior: discrete Lyapunov
equation) and checked to be far below that tolerance, so a failure means a
wrong sampler, not a too-large step.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from bnnmd.bayes import AdaptiveSGHMC, gaussian_prior_potential

DT = torch.float64
Z = 4.0  # ~6e-5 two-sided per entry; at most 9 entries per check


# ----------------------------------------------------------------------------- helpers
def discrete_stationary_covariance(H, m, size, lr, alpha, noise):
    """Exact stationary covariance of theta for the frozen-mass chain on ``u = (theta-mu)^T H (theta-mu) / 2``.

    The chain is ``x' = A x + B xi`` with ``x = (theta - mu, v)``; solve ``S = A S A^T + B B^T``.
    Also returns the spectral radius of ``A`` (< 1: stable).
    """
    d = len(m)
    eye = np.eye(d)
    minv = np.diag(1.0 / m)
    A = np.block([[eye - lr * alpha / size * minv @ H, lr * (1 - alpha) * minv],
                  [-(alpha / size) * H, (1 - alpha) * eye]])
    bv = np.diag(noise * alpha * np.sqrt(2 * m / (size * lr)))
    B = np.vstack([lr * minv @ bv, bv])
    n = 2 * d
    S = np.linalg.solve(np.eye(n * n) - np.kron(A, A), (B @ B.T).reshape(-1)).reshape(n, n)
    return S[:d, :d], float(np.max(np.abs(np.linalg.eigvals(A))))


def chain_statistics(samples):
    """Pooled mean/covariance of ``samples [K, T, d]`` and their standard errors from the K chains."""
    K = samples.shape[0]
    mean = samples.mean(axis=(0, 1))
    chain_means = samples.mean(axis=1)
    centred = samples - mean
    chain_covs = np.einsum("kti,ktj->kij", centred, centred) / samples.shape[1]
    cov = chain_covs.mean(axis=0)
    se_mean = chain_means.std(axis=0, ddof=1) / np.sqrt(K)
    se_cov = chain_covs.std(axis=0, ddof=1) / np.sqrt(K)
    ess = np.diag(cov) / se_mean**2
    return mean, cov, se_mean, se_cov, ess


def posterior_check(samples, mu, C):
    """z-scores of the sampled mean and covariance (upper triangle) against N(mu, C)."""
    mean, cov, se_mean, se_cov, ess = chain_statistics(samples)
    iu = np.triu_indices(len(mu))
    z_mean = (mean - mu) / se_mean
    z_cov = ((cov - C) / se_cov)[iu]
    return {"mean_ok": bool(np.all(np.abs(z_mean) < Z)), "cov_ok": bool(np.all(np.abs(z_cov) < Z)),
            "z_mean": z_mean, "z_cov": z_cov, "cov": cov, "se_cov": se_cov, "ess": ess}


def run_chains(grad_fn, theta0, *, size, lr, friction, noise, freeze, burn, n_keep, thin, seed=0):
    """Run K chains (rows of ``theta0``); return kept samples ``[K, T, d]`` and the frozen masses."""
    theta = torch.nn.Parameter(theta0.clone())
    opt = AdaptiveSGHMC([theta], lr=lr, friction=friction, dataset_size=size, mass_freeze_step=freeze,
                        noise=noise, seed=seed)
    kept = []
    for t in range(burn + n_keep * thin):
        opt.zero_grad()
        grad_fn(theta)
        opt.step()
        if t >= burn and (t - burn) % thin == 0:
            kept.append(theta.detach().numpy().copy())
    assert opt.is_mass_frozen
    return np.stack(kept, axis=1), opt.mass(theta).numpy()


# ----------------------------------------------------------------------------- sampling: linear regression
class LinearRegression:
    """y = X w + N(0, sigma^2), prior w ~ N(0, s^2 I): posterior N(mu, C) in closed form."""

    size, d, sigma, prior_std = 40, 3, 0.5, 1.0
    lr, friction, freeze, burn, n_keep, thin, chains = 0.05, 0.1, 10, 2000, 600, 10, 64

    def __init__(self):
        rng = np.random.default_rng(1)
        self.X = rng.normal(size=(self.size, self.d)) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 0.5]])
        self.y = self.X @ np.array([1.0, -0.5, 2.0]) + self.sigma * rng.normal(size=self.size)
        self.H = self.X.T @ self.X / self.sigma**2 + np.eye(self.d) / self.prior_std**2  # posterior precision
        self.C = np.linalg.inv(self.H)
        self.mu = self.C @ self.X.T @ self.y / self.sigma**2
        self._X, self._y = torch.tensor(self.X), torch.tensor(self.y)

    def backward(self, theta):
        """Full-batch potential u = -ln p(w) - sum ln p(y|x, w) (constants dropped), by autograd."""
        residual = self._y - theta @ self._X.T  # [K, N]
        u = gaussian_prior_potential([theta], std=self.prior_std) + (residual**2).sum() / (2 * self.sigma**2)
        u.backward()

    def sample(self, noise):
        return run_chains(self.backward, torch.zeros(self.chains, self.d, dtype=DT), size=self.size, lr=self.lr,
                          friction=self.friction, noise=noise, freeze=self.freeze, burn=self.burn,
                          n_keep=self.n_keep, thin=self.thin)


@pytest.fixture(scope="module")
def linreg():
    return LinearRegression()


def test_samples_linear_regression_posterior(linreg):
    torch.manual_seed(0)
    samples, masses = linreg.sample(noise=1.0)
    res = posterior_check(samples, linreg.mu, linreg.C)
    # the check is informative: enough effective samples, step-size bias negligible, chain stable
    assert np.all(res["ess"] > 1000), res["ess"]
    disc = [discrete_stationary_covariance(linreg.H, m, linreg.size, linreg.lr, linreg.friction, 1.0)
            for m in masses]
    assert max(rho for _, rho in disc) < 1
    bias = np.mean([c for c, _ in disc], axis=0) - linreg.C
    assert np.all(np.abs(bias) < 0.1 * Z * res["se_cov"]), (bias, res["se_cov"])
    assert res["mean_ok"], res["z_mean"]
    assert res["cov_ok"], res["z_cov"]


@pytest.mark.slow
@pytest.mark.parametrize("noise", [0.5, 2.0])
def test_wrong_temperature_fails_the_check(linreg, noise):
    """noise multiplies the noise std, so the covariance scales by noise^2: the check must catch it."""
    torch.manual_seed(0)
    samples, _ = linreg.sample(noise=noise)
    assert not posterior_check(samples, linreg.mu, linreg.C)["cov_ok"]
    assert posterior_check(samples, linreg.mu, noise**2 * linreg.C)["cov_ok"]


# ----------------------------------------------------------------------------- sampling: correlated Gaussian
def test_samples_correlated_gaussian():
    """2-D Gaussian with correlation 0.8 and scales 0.5 / 2 (the mass has to adapt to both)."""
    mu = np.array([1.0, -2.0])
    std = np.array([0.5, 2.0])
    C = np.array([[1.0, 0.8], [0.8, 1.0]]) * np.outer(std, std)
    H = np.linalg.inv(C)
    size, lr, friction = 5, 0.2, 0.1
    mu_t, H_t = torch.tensor(mu), torch.tensor(H)

    def backward(theta):
        theta.grad = (theta.detach() - mu_t) @ H_t  # gradient of u = (theta-mu)^T H (theta-mu) / 2

    K = 64
    start = torch.tensor(mu + np.array([3 * std[0], -3 * std[1]])).expand(K, 2)
    samples, masses = run_chains(backward, start, size=size, lr=lr, friction=friction, noise=1.0, freeze=20,
                                 burn=2000, n_keep=600, thin=10)
    res = posterior_check(samples, mu, C)
    assert np.all(res["ess"] > 1000), res["ess"]
    disc = [discrete_stationary_covariance(H, m, size, lr, friction, 1.0) for m in masses]
    assert max(rho for _, rho in disc) < 1
    bias = np.mean([c for c, _ in disc], axis=0) - C
    assert np.all(np.abs(bias) < 0.1 * Z * res["se_cov"]), (bias, res["se_cov"])
    assert res["mean_ok"], res["z_mean"]
    assert res["cov_ok"], res["z_cov"]
    assert abs(res["cov"][0, 1] / np.sqrt(res["cov"][0, 0] * res["cov"][1, 1]) - 0.8) < 0.03


# ----------------------------------------------------------------------------- noise off: Adam-like optimiser
def logistic_problem():
    rng = np.random.default_rng(2)
    N, d = 200, 4
    X = rng.normal(size=(N, d))
    y = (rng.random(N) < 1 / (1 + np.exp(-(X @ np.array([1.5, -2.0, 0.5, 0.0]))))).astype(float)
    # MAP by Newton's method (strictly convex: logistic loss + N(0, I) prior)
    w = np.zeros(d)
    for _ in range(50):
        p = 1 / (1 + np.exp(-(X @ w)))
        g = X.T @ (p - y) + w
        Hm = X.T @ (X * (p * (1 - p))[:, None]) + np.eye(d)
        w -= np.linalg.solve(Hm, g)
    return torch.tensor(X), torch.tensor(y), w


def logistic_potential(theta, X, y):
    """u = -ln p(w) - sum ln p(y|x, w) for logistic regression with a N(0, I) prior."""
    logits = theta @ X.T
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.expand_as(logits), reduction="sum")
    return gaussian_prior_potential([theta]) + nll


def test_noise_off_reaches_the_minimum():
    X, y, w_map = logistic_problem()
    theta = torch.nn.Parameter(torch.zeros(2, 4, dtype=DT))  # 2 chains, both optimise
    with torch.no_grad():
        theta[1] = torch.tensor([-3.0, 3.0, 1.0, -1.0])
    opt = AdaptiveSGHMC([theta], lr=0.05, dataset_size=len(y), mass_freeze_step=200, noise=0.0, seed=0)
    for _ in range(2500):
        opt.zero_grad()
        logistic_potential(theta, X, y).backward()
        opt.step()
    np.testing.assert_allclose(theta.detach().numpy(), np.stack([w_map, w_map]), rtol=0, atol=1e-10)


def test_noise_off_equals_amsgrad_adam_with_rescaled_lr():
    """Derived correspondence (exact in exact arithmetic, so checked to round-off):

    with noise = 0 and the mass adapting, ``-v`` is Adam's first moment with
    ``beta1 = 1 - alpha`` and ``a, D, M`` are AMSGrad's second moment, its running
    max and denominator with ``beta2 = beta``, all of the gradient of ``u / |D|``.
    The only difference: ``v`` is not bias-corrected, so our step ``gamma v / M``
    is Adam's ``lr_t m_hat / M`` with ``lr_t = gamma (1 - (1 - alpha)^t)``.
    """
    X, y, _ = logistic_problem()
    N = len(y)
    gamma, alpha, beta, eps = 0.03, 0.1, 0.99, 1e-8
    start = torch.tensor([[0.3, -0.2, 0.1, 0.5], [-1.0, 2.0, 0.0, 0.2]], dtype=DT)
    ours = torch.nn.Parameter(start.clone())
    ref = torch.nn.Parameter(start.clone())
    opt = AdaptiveSGHMC([ours], lr=gamma, friction=alpha, beta=beta, eps=eps, dataset_size=N,
                        mass_freeze_step=None, noise=0.0)
    adam = torch.optim.Adam([ref], lr=gamma, betas=(1 - alpha, beta), eps=eps, amsgrad=True, foreach=False)
    for t in range(1, 201):
        opt.zero_grad()
        logistic_potential(ours, X, y).backward()
        opt.step()
        adam.zero_grad()
        (logistic_potential(ref, X, y) / N).backward()
        adam.param_groups[0]["lr"] = gamma * (1 - (1 - alpha) ** t)
        adam.step()
        torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-11, atol=1e-13)
        torch.testing.assert_close(opt.mass(ours), adam.state[ref]["max_exp_avg_sq"].sqrt()
                                   / (1 - beta**t) ** 0.5 + eps, rtol=1e-12, atol=0)
        torch.testing.assert_close(-opt.state[ours]["momentum"], adam.state[ref]["exp_avg"], rtol=1e-11, atol=1e-14)
    # and the relation is not trivial: plain Adam (constant lr) differs from the start
    assert not torch.allclose(ours, start)


# ----------------------------------------------------------------------------- the update, equation by equation
class RecordingSGHMC(AdaptiveSGHMC):
    """Records every standard-normal draw (to replay or re-implement the update)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.draws = []

    def _draw_noise(self, p):
        xi = super()._draw_noise(p)
        self.draws.append(xi.clone())
        return xi


class ReplaySGHMC(AdaptiveSGHMC):
    """Uses given noise draws instead of its generator."""

    def __init__(self, *args, draws, **kwargs):
        super().__init__(*args, **kwargs)
        self.draws = list(draws)

    def _draw_noise(self, p):
        return self.draws.pop(0)


def gradient_sequence(T, shape, rng):
    """Gradients whose scale jumps up and then decays, so that a falls while D keeps its max."""
    scales = np.where(np.arange(T) < 4, 1.0, 50.0 * np.exp(-np.arange(T) / 3.0))
    return [scales[t] * rng.normal(size=shape) * np.array([1.0, 1e-3, 1e3]) for t in range(T)]


@pytest.mark.parametrize("noise, noise_start, ramp", [(0.0, 1.0, 0), (1.0, 1.0, 0), (0.7, 0.0, 6)])
def test_update_matches_numpy_reimplementation(noise, noise_start, ramp):
    rng = np.random.default_rng(3)
    T, freeze, shape = 30, 12, (2, 3)
    N, gamma, alpha, beta, eps = 7, 0.01, 0.2, 0.9, 1e-8
    grads = gradient_sequence(T, shape, rng)
    theta = torch.nn.Parameter(torch.tensor(rng.normal(size=shape)))
    opt = RecordingSGHMC([theta], lr=gamma, friction=alpha, beta=beta, eps=eps, dataset_size=N,
                         mass_freeze_step=freeze, noise=noise, noise_start=noise_start, noise_ramp_steps=ramp,
                         seed=5)
    th = theta.detach().numpy().copy()
    v = np.zeros(shape)
    a = np.zeros(shape)
    D = np.zeros(shape)
    M = None
    prev_D, prev_M = None, None
    for t in range(1, T + 1):
        g = grads[t - 1]
        theta.grad = torch.tensor(g)
        opt.step()
        # numpy re-implementation of the paper's equations
        if t <= freeze:
            a = (1 - beta) * g**2 / N**2 + beta * a
            D = np.maximum(D, a)
            M = np.sqrt(D / (1 - beta**t)) + eps
        s = noise * (noise_start + (1 - noise_start) * (t - 1) / ramp if ramp and t <= ramp else 1.0)
        xi = opt.draws.pop(0).numpy() if s > 0 else 0.0
        v = v - alpha * g / N - alpha * v + s * alpha * np.sqrt(2 * M / (N * gamma)) * xi
        th = th + gamma * v / M
        st = opt.state[theta]
        np.testing.assert_allclose(st["exp_avg_sq"].numpy(), a, rtol=1e-13, atol=0)
        np.testing.assert_allclose(st["max_exp_avg_sq"].numpy(), D, rtol=1e-13, atol=0)
        np.testing.assert_allclose(opt.mass(theta).numpy(), M, rtol=1e-13, atol=0)
        np.testing.assert_allclose(st["momentum"].numpy(), v, rtol=1e-11, atol=1e-300)
        np.testing.assert_allclose(theta.detach().numpy(), th, rtol=1e-12, atol=1e-300)
        D_now, M_now = st["max_exp_avg_sq"].clone(), opt.mass(theta)
        if prev_D is not None:
            assert torch.all(D_now >= prev_D)  # running max: never decreases
            if t > freeze:  # frozen: the gradients keep changing, the mass does not
                assert torch.equal(M_now, prev_M) and torch.equal(D_now, prev_D)
        assert opt.is_mass_frozen == (t >= freeze)
        prev_D, prev_M = D_now, M_now
    assert opt.step_count == T
    assert not opt.draws  # every draw was used
    # the sequence really exercises the max: a fell below D
    assert np.any(a < D)


def test_primed_mass_by_hand():
    """prime_mass: a and D start at the given second moments, no bias correction, M = sqrt(D) + eps."""
    rng = np.random.default_rng(4)
    N, gamma, alpha, beta, eps, shape = 7, 0.01, 0.2, 0.9, 1e-8, (2, 3)
    theta = torch.nn.Parameter(torch.tensor(rng.normal(size=shape)))
    c = rng.uniform(0.5, 2.0, size=shape)
    opt = AdaptiveSGHMC([theta], lr=gamma, friction=alpha, beta=beta, eps=eps, dataset_size=N, mass_freeze_step=3,
                        noise=0.0)
    opt.prime_mass({theta: torch.tensor(c)})
    assert opt.is_primed
    np.testing.assert_allclose(opt.mass(theta).numpy(), np.sqrt(c) + eps, rtol=1e-15)
    a, D, v, th = c.copy(), c.copy(), np.zeros(shape), theta.detach().numpy().copy()
    for t in range(1, 6):
        g = rng.normal(size=shape) * (10.0 if t == 2 else 0.01)  # one large gradient: D follows it
        theta.grad = torch.tensor(g)
        opt.step()
        if t <= 3:
            a = beta * a + (1 - beta) * g**2 / N**2
            D = np.maximum(D, a)
        M = np.sqrt(D) + eps
        v = v - alpha * g / N - alpha * v
        th = th + gamma * v / M
        np.testing.assert_allclose(opt.state[theta]["exp_avg_sq"].numpy(), a, rtol=1e-13)
        np.testing.assert_allclose(opt.mass(theta).numpy(), M, rtol=1e-13)
        np.testing.assert_allclose(theta.detach().numpy(), th, rtol=1e-12)
    assert np.any(D > c)  # the large gradient raised the mass
    # the flag travels with the state
    other = AdaptiveSGHMC([theta], lr=gamma, dataset_size=N, mass_freeze_step=3)
    other.load_state_dict(opt.state_dict())
    assert other.is_primed
    # errors: after a step, a wrong shape, a foreign tensor, a parameter left unprimed
    with pytest.raises(RuntimeError, match="after the first step"):
        opt.prime_mass({theta: torch.tensor(c)})
    fresh = AdaptiveSGHMC([theta], dataset_size=N, mass_freeze_step=3)
    with pytest.raises(ValueError, match="must have its shape"):
        fresh.prime_mass({theta: torch.ones(3)})
    with pytest.raises(ValueError, match="not a parameter of this optimizer"):
        fresh.prime_mass({torch.ones(2): torch.ones(2)})
    q = torch.nn.Parameter(torch.ones(2))
    two = AdaptiveSGHMC([theta, q], dataset_size=N, mass_freeze_step=3)
    two.prime_mass({theta: torch.tensor(c)})
    theta.grad, q.grad = torch.zeros(shape, dtype=torch.float64), torch.ones(2)
    with pytest.raises(RuntimeError, match="without a primed mass"):
        two.step()


def test_noise_ramp_multiplier():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = AdaptiveSGHMC([p], dataset_size=1, mass_freeze_step=1, noise=2.0, noise_start=0.25, noise_ramp_steps=3)
    group = opt.param_groups[0]
    assert [opt.noise_multiplier(group, t) for t in (1, 2, 3, 4, 10)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert opt.noise_multiplier(group) == 0.5  # next step is step 1


def test_freeze_mass_early_and_no_mass_before_first_step():
    p = torch.nn.Parameter(torch.ones(3))
    opt = AdaptiveSGHMC([p], dataset_size=10, mass_freeze_step=100, noise=0.0)
    with pytest.raises(ValueError, match="no mass yet"):
        opt.mass(p)
    with pytest.raises(RuntimeError, match="before the first step"):
        opt.freeze_mass()
    p.grad = torch.ones(3)
    opt.step()
    opt.freeze_mass()
    m = opt.mass(p)
    p.grad = torch.full((3,), 100.0)
    opt.step()
    assert opt.is_mass_frozen and torch.equal(opt.mass(p), m)


# ----------------------------------------------------------------------------- checkpoints
def _quartic_backward(theta):
    u = gaussian_prior_potential([theta]) + 0.1 * (theta**4).sum()
    u.backward()


@pytest.mark.parametrize("n_first", [5, 40])  # before and after the mass freezes (step 20)
def test_resume_from_state_dict_bit_for_bit(n_first):
    start = torch.linspace(-2, 2, 12, dtype=torch.float32).reshape(3, 4)
    kwargs = dict(lr=0.05, dataset_size=8, mass_freeze_step=20, noise=1.0, noise_start=0.1, noise_ramp_steps=30,
                  seed=11)
    n_total = 2 * n_first

    theta = torch.nn.Parameter(start.clone())
    opt = AdaptiveSGHMC([theta], **kwargs)
    for _ in range(n_total):
        opt.zero_grad()
        _quartic_backward(theta)
        opt.step()
    reference = theta.detach().clone()

    theta = torch.nn.Parameter(start.clone())
    opt = AdaptiveSGHMC([theta], **kwargs)
    for _ in range(n_first):
        opt.zero_grad()
        _quartic_backward(theta)
        opt.step()
    buffer = io.BytesIO()
    torch.save({"theta": theta.detach(), "optimizer": opt.state_dict()}, buffer)
    del opt, theta
    torch.randn(100)  # the global RNG must not matter

    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    theta = torch.nn.Parameter(checkpoint["theta"].clone())
    opt = AdaptiveSGHMC([theta], **{**kwargs, "seed": 999, "mass_freeze_step": 1000})
    opt.load_state_dict(checkpoint["optimizer"])
    assert opt.step_count == n_first and opt.mass_freeze_step == 20
    assert opt.is_mass_frozen == (n_first >= 20)
    for _ in range(n_total - n_first):
        opt.zero_grad()
        _quartic_backward(theta)
        opt.step()
    assert torch.equal(theta.detach(), reference)


def test_load_state_dict_needs_sampler_state():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = AdaptiveSGHMC([p], dataset_size=1, mass_freeze_step=1)
    plain = torch.optim.SGD([p], lr=0.1).state_dict()
    with pytest.raises(ValueError, match="not an AdaptiveSGHMC state dict"):
        opt.load_state_dict(plain)


def test_seed_makes_chains_reproducible():
    def run(seed):
        theta = torch.nn.Parameter(torch.ones(2, 3, dtype=DT))
        opt = AdaptiveSGHMC([theta], lr=0.01, dataset_size=4, mass_freeze_step=5, seed=seed)
        for _ in range(20):
            opt.zero_grad()
            _quartic_backward(theta)
            opt.step()
        return theta.detach()

    torch.manual_seed(1)
    a = run(3)
    torch.manual_seed(2)
    assert torch.equal(a, run(3))
    assert not torch.equal(a, run(4))


# ----------------------------------------------------------------------------- leading chain dimension
def _coupled_backward(theta, P):
    """Coupled within a chain (theta_c^T P theta_c / 2 + quartic), separate across chains; element-wise ops only."""
    grad = sum(theta.detach()[..., j : j + 1] * P[j] for j in range(P.shape[0]))
    theta.grad = grad + 0.1 * theta.detach() ** 3


def test_chains_are_independent():
    """A chain run inside a [3, d] parameter follows exactly the trajectory it has when run alone
    (the noise of the 3-chain run is recorded and the chain's slice replayed)."""
    P = torch.tensor([[2.0, 0.5, 0.0], [0.5, 1.0, -0.3], [0.0, -0.3, 3.0]], dtype=DT)
    start = torch.tensor([[1.0, -2.0, 0.5], [10.0, 0.0, -7.0], [-0.1, 0.2, 0.0]], dtype=DT)
    kwargs = dict(lr=0.02, friction=0.1, dataset_size=6, mass_freeze_step=15, noise=1.0)
    T = 60
    theta = torch.nn.Parameter(start.clone())
    opt = RecordingSGHMC([theta], seed=1, **kwargs)
    trajectory = []
    for _ in range(T):
        _coupled_backward(theta, P)
        opt.step()
        trajectory.append(theta.detach().clone())
    trajectory = torch.stack(trajectory, dim=1)  # [3, T, d]
    for c in range(3):
        single = torch.nn.Parameter(start[c].clone())
        replay = ReplaySGHMC([single], draws=[xi[c] for xi in opt.draws], seed=2, **kwargs)
        for t in range(T):
            _coupled_backward(single, P)
            replay.step()
            assert torch.equal(single.detach(), trajectory[c, t]), (c, t)
        assert torch.equal(replay.mass(single), opt.mass(theta)[c])


# ----------------------------------------------------------------------------- validation and the prior
@pytest.mark.parametrize("kwargs, name", [
    (dict(lr=0.0), "lr"), (dict(lr=float("nan")), "lr"), (dict(friction=0.0), "friction"),
    (dict(friction=1.5), "friction"), (dict(beta=1.0), "beta"), (dict(beta=-0.1), "beta"),
    (dict(eps=0.0), "eps"), (dict(noise=-1.0), "noise"), (dict(noise_start=1.2), "noise_start"),
    (dict(noise_ramp_steps=-1), "noise_ramp_steps"), (dict(noise_ramp_steps=2.5), "noise_ramp_steps"),
    (dict(dataset_size=0), "dataset_size"), (dict(dataset_size=10.0), "dataset_size"),
    (dict(mass_freeze_step=0), "mass_freeze_step"), (dict(mass_freeze_step=True), "mass_freeze_step"),
    (dict(seed=1.5), "seed"),
])
def test_bad_hyperparameters_raise(kwargs, name):
    p = torch.nn.Parameter(torch.zeros(2))
    full = {"lr": 1e-3, "dataset_size": 10, "mass_freeze_step": 100, **kwargs}
    with pytest.raises(ValueError, match=rf"^{name} "):
        AdaptiveSGHMC([p], **full)


def test_bad_param_group_is_rejected_and_not_added():
    p, q = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = AdaptiveSGHMC([p], dataset_size=10, mass_freeze_step=100)
    with pytest.raises(ValueError, match="^friction "):
        opt.add_param_group({"params": [q], "friction": 2.0})
    assert len(opt.param_groups) == 1


def test_gaussian_prior_potential():
    w = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=DT, requires_grad=True)  # 2 chains
    b = torch.tensor([0.5], dtype=DT)
    u = gaussian_prior_potential([w, b], std=2.0)
    assert u.shape == () and u.item() == pytest.approx((1 + 4 + 9 + 16 + 0.25) / 8)
    centre = [torch.tensor([1.0, 0.0], dtype=DT), torch.zeros(1, dtype=DT)]  # broadcast over chains
    u = gaussian_prior_potential([w, b], centre=centre)
    assert u.item() == pytest.approx((0 + 4 + 4 + 16 + 0.25) / 2)
    u.backward()
    torch.testing.assert_close(w.grad, w.detach() - centre[0])
    with pytest.raises(ValueError, match="^std "):
        gaussian_prior_potential([w], std=0.0)
    with pytest.raises(ValueError, match="centre has 1 tensors but params has 2"):
        gaussian_prior_potential([w, b], centre=centre[:1])
