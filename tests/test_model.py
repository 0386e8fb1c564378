"""The stochastic NequIP model: symmetry, forces, the sample dimension, scripting, configs."""

import io

import numpy as np
import pytest
import torch

from bnnmd.data import AtomicDataset, GraphDataset, TypeMapper, bundled_dataset, keys as K
from bnnmd.nn import ConfigError, ModelConfig, StochasticNequIP, build_model, predict, predictive, script
from bnnmd.nn import testing as T

from helpers import periodic_dataset

TYPES = ["H", "C", "O"]
CONFIGS = {
    "l2-parity": dict(num_layers=2, l_max=2, num_features=4, parity=True),
    "l1-so3-ssp": dict(num_layers=2, l_max=1, num_features=4, parity=False, nonlinearity="ssp"),
}


@pytest.fixture(scope="module")
def molecules():
    return bundled_dataset("rmd17_ethanol_train").subset([0, 500, 999])


def make(dataset, dtype=torch.float64, k=2, seed=0, cutoff=4.0, shift=False, **cfg):
    """Model and batch. Without ``shift`` the per-species energy shift (~ -1e4 kcal/mol per
    atom, a constant that no symmetry can break) is zeroed, so that tolerances measure the
    model's own output rather than the rounding of a large constant."""
    config = ModelConfig(type_names=TYPES, cutoff=cutoff, num_samples=k, **{**CONFIGS["l2-parity"], **cfg})
    model = build_model(config, dataset, dtype=dtype, seed=seed)
    if not shift:
        model.energy_shift.zero_()
    batch = GraphDataset(dataset, TypeMapper(TYPES), cutoff).batch(range(len(dataset)), dtype=dtype)
    return model, batch


@pytest.mark.parametrize("system", ["molecules", "periodic"])
@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_equivariance(molecules, system, name, dtype):
    ds = molecules if system == "molecules" else periodic_dataset()
    model, batch = make(ds, dtype, **CONFIGS[name])
    T.assert_equivariant(model, batch)  # both are E(3): parity=False only drops pseudo-tensors
    T.assert_permutation_equivariant(model, batch)


def test_equivariance_check_can_fail(molecules):
    """A model with a term that depends on absolute orientation is caught."""
    model, batch = make(molecules)

    def broken(b):
        out = dict(model(b))
        out[K.TOTAL_ENERGY] = out[K.TOTAL_ENERGY] + 1e-3 * b[K.POSITIONS][0, 0]
        return out

    with pytest.raises(AssertionError, match="rotation: total_energy"):
        T.assert_equivariant(broken, batch)


@pytest.mark.parametrize("system", ["molecules", "periodic"])
def test_forces_and_virial_are_derivatives(molecules, system):
    ds = molecules if system == "molecules" else periodic_dataset()
    model, batch = make(ds)
    T.assert_forces_are_gradients(model, batch, cutoff=4.0, atoms=(0, 4, 11))
    if system == "periodic":
        T.assert_virial_is_strain_derivative(model, batch, cutoff=4.0)


def test_forces_float32_close_to_float64(molecules):
    m64, b64 = make(molecules, torch.float64)
    m32, b32 = make(molecules, torch.float32)
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    o64, o32 = m64(b64), m32(b32)
    torch.testing.assert_close(o32[K.FORCES].double(), o64[K.FORCES], atol=1e-3, rtol=1e-4)


def test_stacked_equals_separately_built_models(molecules):
    singles = [make(molecules, k=1, seed=s)[0] for s in (0, 1, 2)]
    _, batch = make(molecules, k=1)
    stacked = StochasticNequIP.stack(singles)
    assert stacked.num_samples == 3
    out = stacked(batch)
    for s, single in enumerate(singles):
        ref = single(batch)
        for key in K.MODEL_OUTPUTS:
            torch.testing.assert_close(out[key][s], ref[key][0], atol=1e-12, rtol=1e-12)
    # samples really differ, and select() takes them back out
    assert (out[K.FORCES][0] - out[K.FORCES][1]).abs().max() > 1e-3
    torch.testing.assert_close(stacked.select([2])(batch)[K.FORCES][0], out[K.FORCES][2], atol=1e-12, rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("training", [False, True])
def test_sample_chunks_equal_one_pass(molecules, training):
    """Large systems run the k samples in chunks; results and parameter gradients do not change."""
    model, batch = make(molecules, k=3)
    model.train(training)
    ref = model(batch)
    loss_ref = sum(ref[key].pow(2).sum() for key in K.MODEL_OUTPUTS)
    g_ref = torch.autograd.grad(loss_ref, list(model.parameters())) if training else None
    model.max_chunk_elements = batch[K.EDGE_INDEX].shape[1] * model.message_dim * 2  # chunks of 2, then 1
    assert model.chunk_size(batch[K.EDGE_INDEX].shape[1]) == 2
    out = model(batch)
    for key in K.MODEL_OUTPUTS:
        torch.testing.assert_close(out[key], ref[key], atol=1e-12, rtol=1e-12)
    if training:
        g = torch.autograd.grad(sum(out[key].pow(2).sum() for key in K.MODEL_OUTPUTS), list(model.parameters()))
        for a, b in zip(g, g_ref):
            torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(script(model.eval())(batch)[K.FORCES], model(batch)[K.FORCES], atol=1e-12, rtol=0)


def test_batch_equals_frames_one_by_one(molecules):
    ds = bundled_dataset("rmd17_ethanol_train").subset([3, 4])
    per = periodic_dataset(1)
    both = AtomicDataset(np.concatenate([ds.atomic_numbers, per.atomic_numbers]),
                         np.concatenate([ds.positions, per.positions]), [9, 9, 10],
                         cell=[np.zeros((3, 3))] * 2 + [per.cell[0]], pbc=[[False] * 3] * 2 + [[True] * 3],
                         energy=[0.0, 0.0, 0.0], forces=np.zeros((28, 3)))
    model, batch = make(both)
    gd = GraphDataset(both, TypeMapper(TYPES), 4.0)
    out = model(batch)
    start = 0
    for f in range(3):
        one = model(gd.batch([f]))
        n = int(both.n_atoms[f])
        torch.testing.assert_close(out[K.TOTAL_ENERGY][:, f], one[K.TOTAL_ENERGY][:, 0], atol=1e-10, rtol=0)
        torch.testing.assert_close(out[K.TOTAL_ENERGY_STD][:, f], one[K.TOTAL_ENERGY_STD][:, 0])
        torch.testing.assert_close(out[K.VIRIAL][:, f], one[K.VIRIAL][:, 0])
        torch.testing.assert_close(out[K.FORCES][:, start:start + n], one[K.FORCES])
        torch.testing.assert_close(out[K.FORCES_STD][:, start:start + n], one[K.FORCES_STD])
        start += n


def test_no_gradient_between_frames(molecules):
    model, batch = make(molecules)
    model.train()  # training graph (create_graph) too
    ref = model(batch)
    moved = dict(batch)
    pos = batch[K.POSITIONS].clone()
    pos[9:18] += 0.05 * torch.randn(9, 3, dtype=pos.dtype)  # frame 1 only
    moved[K.POSITIONS] = pos
    out = model(T.rebuild_edges(moved, 4.0))
    for f, atoms in ((0, slice(0, 9)), (2, slice(18, 27))):
        assert torch.equal(out[K.TOTAL_ENERGY][:, f], ref[K.TOTAL_ENERGY][:, f])
        assert torch.equal(out[K.FORCES][:, atoms], ref[K.FORCES][:, atoms])
    assert not torch.equal(out[K.TOTAL_ENERGY][:, 1], ref[K.TOTAL_ENERGY][:, 1])
    # gradient of frame 0's force loss reaches no input of frame 1
    loss = ref[K.FORCES][:, 0:9].pow(2).sum()
    grads = torch.autograd.grad(loss, [p for p in model.parameters()], allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_far_apart_fragments_add_up(molecules):
    a = molecules.frame(0)
    b = molecules.frame(1)
    together = AtomicDataset(np.concatenate([a["atomic_numbers"], b["atomic_numbers"]]),
                             np.concatenate([a["positions"], b["positions"] + 50.0]), [18])
    apart = molecules.subset([0, 1])
    model, batch_apart = make(apart, num_layers=3)
    batch_together = GraphDataset(together, TypeMapper(TYPES), 4.0).batch([0])
    o_sep, o_tog = model(batch_apart), model(batch_together)
    torch.testing.assert_close(o_tog[K.TOTAL_ENERGY][:, 0], o_sep[K.TOTAL_ENERGY].sum(dim=1), atol=1e-9, rtol=0)
    torch.testing.assert_close(o_tog[K.FORCES], o_sep[K.FORCES])
    torch.testing.assert_close(o_tog[K.FORCES_STD], o_sep[K.FORCES_STD])
    # independent atomic variances add
    torch.testing.assert_close(o_tog[K.TOTAL_ENERGY_STD][:, 0] ** 2,
                               (o_sep[K.TOTAL_ENERGY_STD] ** 2).sum(dim=1), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("system", ["molecules", pytest.param("periodic", marks=pytest.mark.slow)])
def test_scripted_equals_eager(molecules, system, tmp_path):
    ds = molecules if system == "molecules" else periodic_dataset()
    model, batch = make(ds, dropout=0.1)
    model.eval()
    scripted = script(model)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    ref = model(batch)
    for m in (scripted, loaded):
        out = m(batch)
        for key in K.MODEL_OUTPUTS:
            torch.testing.assert_close(out[key], ref[key], atol=1e-12, rtol=1e-12)


def test_sigmas_positive_and_finite(molecules):
    model, batch = make(molecules, dtype=torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20.0)  # extreme parameters
    out = model(batch)
    for key in (K.TOTAL_ENERGY_STD, K.FORCES_STD):
        assert torch.isfinite(out[key]).all() and (out[key] > 0).all()


def test_dropout_masks_per_sample(molecules):
    model, batch = make(molecules, dropout=0.3, k=1)
    model = StochasticNequIP.stack([model, model, model])  # identical parameters
    model.eval()
    e = model(batch)[K.TOTAL_ENERGY]
    assert torch.equal(e[0], e[1])  # no dropout at evaluation
    model.set_dropout_active(True)  # MC dropout: k masks
    e = model(batch)[K.TOTAL_ENERGY]
    assert not torch.equal(e[0], e[1])


def test_training_mode_forces_carry_parameter_gradients(molecules):
    model, batch = make(molecules)
    model.train()
    out = model(batch)
    loss = (out[K.FORCES] - batch[K.FORCES]).pow(2).mean()
    loss.backward()
    assert model.blocks[0].radial.weights[0].grad.abs().sum() > 0
    model.eval()
    assert not model(batch)[K.FORCES].requires_grad  # no graph kept for inference


@pytest.mark.parametrize("layers,parity", [(1, True), (2, True), (2, False)])
def test_every_parameter_gets_a_gradient(molecules, layers, parity):
    """No dead parameters: one would feel only the prior and a sampler's mass would collapse to eps."""
    model, batch = make(molecules, num_layers=layers, parity=parity)
    model.train()
    out = model(batch)
    loss = out[K.FORCES].pow(2).sum() + out[K.TOTAL_ENERGY].sum() + out[K.FORCES_STD].sum() \
        + out[K.TOTAL_ENERGY_STD].sum()
    loss.backward()
    for name, p in model.named_parameters():
        if p.numel():
            assert p.grad is not None and (p.grad != 0).float().mean() > 0.5, name


def test_no_grad_gives_a_clear_error(molecules):
    model, batch = make(molecules)
    with torch.no_grad(), pytest.raises(RuntimeError, match="gradients enabled"):
        model(batch)


def test_predictive_mixture_moments():
    rng = np.random.default_rng(0)
    mu, sd = rng.normal(size=(4, 5, 3)), rng.uniform(0.1, 1.0, size=(4, 5))
    p = predictive(torch.tensor(mu), torch.tensor(sd).unsqueeze(-1))
    np.testing.assert_allclose(p.mean.numpy(), mu.mean(0))
    np.testing.assert_allclose(p.epistemic.numpy(), mu.var(0))
    np.testing.assert_allclose(p.aleatoric.numpy(), np.broadcast_to((sd ** 2).mean(0)[:, None], (5, 3)))
    # the mixture's variance, from its definition E[y^2] - E[y]^2
    second = (mu ** 2 + sd[..., None] ** 2).mean(0)
    np.testing.assert_allclose(p.variance.numpy(), second - mu.mean(0) ** 2, atol=1e-12)
    out = predict({K.TOTAL_ENERGY: torch.tensor(mu[:, :, 0]), K.TOTAL_ENERGY_STD: torch.tensor(sd),
                   K.FORCES: torch.tensor(mu), K.FORCES_STD: torch.tensor(sd)})
    torch.testing.assert_close(out[K.FORCES].variance, p.variance)


@pytest.mark.parametrize("bad,match", [
    (dict(l_max=-1), r"model\.l_max = -1: must be an integer >= 0"),
    (dict(cutoff=0.0), r"model\.cutoff = 0\.0: must be a finite number > 0"),
    (dict(cutoff=-2), r"model\.cutoff = -2"),
    (dict(nonlinearity="relu"), r"model\.nonlinearity = 'relu': must be one of silu, ssp, tanh"),
    (dict(num_samples=0), r"model\.num_samples = 0: must be an integer >= 1 \(k, the sample dimension\)"),
    (dict(num_layers=0), r"model\.num_layers = 0"),
    (dict(dropout=1.0), r"model\.dropout = 1\.0: must be a number in \[0, 1\)"),
    (dict(type_names=["H", "Qq"]), r"model\.type_names.*unknown element symbol 'Qq'"),
])
def test_bad_configs(bad, match):
    with pytest.raises(ConfigError, match=match):
        ModelConfig(**{"type_names": TYPES, **bad})


def test_unknown_config_key_and_missing_neighbours():
    with pytest.raises(ConfigError, match=r"unknown model key\(s\) lmax; allowed keys: .*l_max"):
        ModelConfig.from_dict({"type_names": TYPES, "lmax": 2})
    with pytest.raises(ConfigError, match="avg_num_neighbours is not set"):
        StochasticNequIP(ModelConfig(type_names=TYPES))


def test_stacked_linear_against_a_numpy_twin():
    """StackedLinear (blocks computed whole and concatenated) against a NumPy twin of its rule:
    output block o = sum over input blocks i of the same irrep of x_i W_io / sqrt(sum_i mul_i);
    an output irrep no input has stays zero; TorchScript gives the same."""
    from e3nn import o3

    from bnnmd.nn._stacked import StackedLinear

    irreps_in, irreps_out = o3.Irreps("3x0e+2x1o+4x0e+1x2e"), o3.Irreps("2x1o+5x0e+2x1e")
    lin = StackedLinear(irreps_in, irreps_out, num_samples=3).double()
    x = torch.randn(3, 4, 2, irreps_in.dim, dtype=torch.float64)
    got = lin(x).detach().numpy()
    w = lin.weight.detach().numpy()
    want = np.zeros((3, 4, 2, irreps_out.dim))
    xs, offset = x.numpy(), 0
    for (mul_o, ir_o), so in zip(irreps_out, irreps_out.slices()):
        ins = [(mul_i, si) for (mul_i, ir_i), si in zip(irreps_in, irreps_in.slices()) if ir_i == ir_o]
        fan_in = sum(m for m, _ in ins)
        for mul_i, si in ins:
            wi = w[:, offset:offset + mul_i * mul_o].reshape(3, mul_i, mul_o)
            offset += mul_i * mul_o
            xi = xs[..., si].reshape(3, 4, 2, mul_i, ir_o.dim)
            want[..., so] += np.einsum("kabud,kuv->kabvd", xi, wi).reshape(3, 4, 2, -1) / np.sqrt(fan_in)
    assert offset == lin.weight_numel
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    assert np.abs(got[..., irreps_out.slices()[2]]).max() == 0.0  # 1e: no input block, stays zero
    np.testing.assert_allclose(torch.jit.script(lin)(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin(x[1:], 1, 3).detach().numpy(), want[1:], rtol=1e-12, atol=1e-12)
