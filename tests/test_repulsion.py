"""The ZBL short-range repulsion: the pair energy against a hand computation, smoothness at its
switch, forces against finite differences, and no effect where the training data lie."""

import math

import numpy as np
import pytest
import torch

from bnnmd.data import AtomicDataset, GraphDataset, TypeMapper, bundled_dataset
from bnnmd.data import keys as K
from bnnmd.nn import ConfigError, ModelConfig, build_model
from bnnmd.nn._repulsion import ZBLRepulsion

# e^2 / (4 pi eps0) = 14.399645 eV A (CODATA), in kcal/mol A; 1 kcal/mol = 0.0433641 eV
COULOMB_KCAL = 14.399645 / 0.04336410390059322
COVALENT = {"H": 0.31, "C": 0.76, "O": 0.66}  # Cordero et al. 2008, A
Z = {"H": 1, "C": 6, "O": 8}
TYPES = ["H", "C", "O"]


def zbl_by_hand(r, a, b, inner=0.5, outer=0.8):
    """E_ab(r) in kcal/mol, r in A, typed out from the ZBL paper's universal function."""
    za, zb = Z[a], Z[b]
    screening = 0.8854 * 0.529177 / (za ** 0.23 + zb ** 0.23)  # a0 = 0.529177 A
    x = r / screening
    phi = (0.18175 * math.exp(-3.1998 * x) + 0.50986 * math.exp(-0.94229 * x)
           + 0.28022 * math.exp(-0.4029 * x) + 0.02817 * math.exp(-0.20162 * x))
    s = COVALENT[a] + COVALENT[b]
    t = min(max((r - inner * s) / ((outer - inner) * s), 0.0), 1.0)
    return COULOMB_KCAL * za * zb / r * phi * (1 - 10 * t ** 3 + 15 * t ** 4 - 6 * t ** 5)


def pair_energy(rep, r, a, b):
    rr = torch.as_tensor(r, dtype=torch.float64).reshape(1, -1)
    ti = torch.full((rr.shape[1],), TYPES.index(a))
    tj = torch.full((rr.shape[1],), TYPES.index(b))
    return rep.double()(rr, ti, tj)[0]


@pytest.fixture(scope="module")
def rep():
    return ZBLRepulsion(TYPES, 0.5, 0.8, "kcal/mol", "A")


@pytest.mark.parametrize("a,b,r", [("C", "H", 0.4), ("C", "H", 0.7), ("H", "H", 0.2), ("O", "C", 0.9),
                                   ("O", "H", 0.6), ("C", "C", 1.5)])
def test_pair_energy_equals_the_zbl_formula(rep, a, b, r):
    got = float(pair_energy(rep, [r], a, b))
    assert got == pytest.approx(zbl_by_hand(r, a, b), rel=2e-6, abs=1e-12)


def test_fused_atoms_are_strongly_repulsive(rep):
    e = pair_energy(rep, [0.3, 0.4, 0.5], "C", "H")
    assert e[1] > 900.0  # kcal/mol at C-H 0.4 A (a C-H bond is about 100)
    assert bool((e[:-1] > e[1:]).all())


def test_smooth_and_exactly_zero_at_the_switch(rep):
    for a, b in (("C", "H"), ("H", "H"), ("O", "C")):
        s = COVALENT[a] + COVALENT[b]
        r_out, r_in = 0.8 * s, 0.5 * s
        delta = 1e-3 * s
        r = torch.tensor([r_out - delta, r_out - 2 * delta, r_out + delta, 3.0], dtype=torch.float64,
                         requires_grad=True)
        ti = torch.full((4,), TYPES.index(a))
        tj = torch.full((4,), TYPES.index(b))
        e = rep.double()(r.unsqueeze(0), ti, tj)[0]
        (g,) = torch.autograd.grad(e.sum(), r, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), r)
        e, g, h = e.detach(), g.detach(), h.detach()
        assert float(e[2]) == 0.0 and float(e[3]) == 0.0 and float(g[2]) == 0.0 and float(h[2]) == 0.0
        # below r_out, E ~ (r_out - r)^3: energy, force and curvature all vanish there
        # (doubling the distance to r_out multiplies them by 8, 4 and 2)
        assert float(e[1] / e[0]) == pytest.approx(8.0, rel=0.02)
        assert float(g[1] / g[0]) == pytest.approx(4.0, rel=0.02)
        assert float(h[1] / h[0]) == pytest.approx(2.0, rel=0.02)
        # continuous at r_in: the switch only starts there
        just = pair_energy(rep, [r_in - 1e-7, r_in + 1e-7], a, b)
        assert float(just[0]) == pytest.approx(float(just[1]), rel=1e-5)


def _batch(atoms_list, cutoff, dtype=torch.float64):
    ds = AtomicDataset.from_frames(atoms_list[0].numbers, np.stack([a.positions for a in atoms_list]))
    return GraphDataset(ds, TypeMapper(TYPES), cutoff).batch(range(len(ds)), dtype=dtype)


def close_pair_molecule(distance=0.45):
    """Bundled ethanol with one H pushed towards its carbon to ``distance`` A."""
    a = bundled_dataset("rmd17_ethanol_test").to_ase(0)
    sym = a.get_chemical_symbols()
    h = sym.index("H")
    d = a.positions[:, None] - a.positions[None]
    dist = np.linalg.norm(d, axis=-1)
    c = min((i for i, s in enumerate(sym) if s == "C"), key=lambda i: dist[h, i])
    u = (a.positions[h] - a.positions[c]) / dist[h, c]
    a.positions[h] = a.positions[c] + distance * u
    return a, h, c


def models(repulsion_seed=3):
    train = bundled_dataset("rmd17_ethanol_train").subset(range(10))
    cfg = dict(type_names=TYPES, num_layers=2, l_max=1, num_features=8, cutoff=4.0, num_samples=2,
               radial_hidden=8, sigma_hidden=4)
    with_rep = build_model(ModelConfig(**cfg), train, seed=repulsion_seed)
    without = build_model(ModelConfig(**cfg, repulsion="none"), train, seed=repulsion_seed)
    without.load_state_dict(with_rep.state_dict())
    return with_rep.eval(), without.eval()


def test_model_adds_the_pair_energy_and_forces_match_finite_differences():
    with_rep, without = models()
    atoms, h, c = close_pair_molecule(0.45)
    b = _batch([atoms], with_rep.cutoff)
    out, ref = with_rep(b), without(b)
    want = sum(zbl_by_hand(float(np.linalg.norm(atoms.positions[i] - atoms.positions[j])), si, sj)
               for i, si in enumerate(atoms.get_chemical_symbols())
               for j, sj in enumerate(atoms.get_chemical_symbols()) if i < j)
    assert want > 500.0
    np.testing.assert_allclose((out[K.TOTAL_ENERGY] - ref[K.TOTAL_ENERGY]).detach().numpy(), want, rtol=2e-6)
    # the stds are the network's alone
    torch.testing.assert_close(out[K.FORCES_STD], ref[K.FORCES_STD])
    torch.testing.assert_close(out[K.TOTAL_ENERGY_STD], ref[K.TOTAL_ENERGY_STD])
    # forces of sample 1 on the moved H and its C: central finite differences of the energy
    eps = 1e-5
    for atom in (h, c):
        for x in range(3):
            e = []
            for sign in (1, -1):
                moved = atoms.copy()
                moved.positions[atom, x] += sign * eps
                e.append(float(with_rep(_batch([moved], with_rep.cutoff))[K.TOTAL_ENERGY][1, 0].detach()))
            fd = -(e[0] - e[1]) / (2 * eps)
            assert float(out[K.FORCES][1, atom, x]) == pytest.approx(fd, rel=1e-6, abs=1e-5)
    # pushed together, the H is pushed away from its C
    f = out[K.FORCES][:, h].detach().numpy()
    u = atoms.positions[h] - atoms.positions[c]
    assert bool((f @ u > 0).all())


def test_no_effect_on_the_training_data():
    with_rep, without = models()
    frames = [bundled_dataset("rmd17_ethanol_train").to_ase(i) for i in range(0, 1000, 50)]
    b = _batch(frames, with_rep.cutoff)
    out, ref = with_rep(b), without(b)
    for key in (K.TOTAL_ENERGY, K.FORCES, K.FORCES_STD, K.VIRIAL):
        assert torch.equal(out[key], ref[key]), key


@pytest.mark.parametrize("change,message", [
    (dict(repulsion="lj"), "model.repulsion = 'lj': must be one of zbl, none"),
    (dict(repulsion_inner=0.9, repulsion_outer=0.8), "must be below model.repulsion_outer"),
    (dict(repulsion_outer=3.0, cutoff=3.0), "reaches model.cutoff = 3.0"),
    (dict(energy_unit="Ry"), "unknown energy unit 'Ry'"),
])
def test_config_errors(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ModelConfig(**dict(dict(type_names=TYPES), **change))


def test_units_follow_the_data():
    """The same repulsion in eV: energies scale by the kcal/mol -> eV factor."""
    kcal = ZBLRepulsion(TYPES, 0.5, 0.8, "kcal/mol", "A").double()
    ev = ZBLRepulsion(TYPES, 0.5, 0.8, "eV", "A").double()
    r = torch.tensor([[0.4, 0.6]], dtype=torch.float64)
    t = torch.tensor([1, 1])  # C-C: both distances inside the repulsion
    torch.testing.assert_close(ev(r, t, t) / kcal(r, t, t), torch.full((1, 2), 0.04336410390059322, dtype=torch.float64))
    nm = ZBLRepulsion(TYPES, 0.5, 0.8, "kcal/mol", "nm").double()
    torch.testing.assert_close(nm(r / 10, t, t), kcal(r, t, t))
