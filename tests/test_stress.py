"""Training with stresses: the likelihood's virial term, its gradient, every method on a mixed-size
periodic extxyz set (Cu/Al crystals of 4, 6 and 8 atoms labelled by ASE's EMT)."""

import csv

import numpy as np
import pytest
import torch

from bnnmd.bayes import negative_log_likelihood
from bnnmd.data import GraphDataset, Split, TypeMapper, keys as K, read_ase
from bnnmd.nn import ConfigError, ModelConfig, build_model
from bnnmd.posterior import load_samples, read_sample
from bnnmd.train import TrainConfig, train
from bnnmd.uq import evaluate

from helpers import TINY_MODEL, emt_extxyz, tiny

VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


@pytest.fixture(scope="module")
def emt_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("emt") / "cual.extxyz"
    emt_extxyz(path)
    return path


def _model(dataset, k=2, seed=0):
    cfg = ModelConfig(type_names=["Al", "Cu"], num_layers=1, l_max=1, num_features=4, cutoff=4.0, num_samples=k,
                      stress_std=True)
    return build_model(cfg, dataset, seed=seed)


def test_stress_nll_is_a_gaussian_per_virial_component(emt_file):
    ds = read_ase(emt_file)
    assert ds.stress is not None and sorted(set(ds.n_atoms.tolist())) == [4, 6, 8]
    model = _model(ds)
    batch = GraphDataset(ds, TypeMapper(["Al", "Cu"]), 4.0).batch([0, 1, 2, 5])
    out = model(batch)
    weight = 2.5
    nll = negative_log_likelihood(out, batch, stress_weight=weight)
    # NumPy twin: W = -V stress, six components, one sigma_W per frame and sample
    vol = np.abs(np.linalg.det(batch[K.CELL].numpy()))
    w_ref = -batch[K.STRESS].numpy() * vol[:, None, None]
    w = out[K.VIRIAL].detach().numpy()
    s = out[K.VIRIAL_STD].detach().numpy()
    assert (s > 0).all()
    expect = np.zeros(2)
    for a, b in VOIGT:
        z = (w_ref[:, a, b][None] - w[:, :, a, b]) / s
        expect += (0.5 * z ** 2 + np.log(s) + 0.5 * np.log(2 * np.pi)).sum(axis=1)
    np.testing.assert_allclose(nll["stress"].detach().numpy(), weight * expect, rtol=1e-12)
    torch.testing.assert_close(nll["total"], nll["energy"] + nll["forces"] + nll["stress"])
    # without stresses in the batch, or with weight 0, the term is zero
    assert float(negative_log_likelihood(out, batch, stress_weight=0.0)["stress"].abs().sum()) == 0.0
    nostress = {k: v for k, v in batch.items() if k != K.STRESS}
    assert float(negative_log_likelihood(out, nostress)["stress"].abs().sum()) == 0.0


def test_stress_term_gradient_matches_finite_differences(emt_file):
    """The virial is itself a derivative: its likelihood's gradient goes through a double backward."""
    ds = read_ase(emt_file)
    model = _model(ds, k=1, seed=3).train()
    batch = GraphDataset(ds, TypeMapper(["Al", "Cu"]), 4.0).batch([1, 2])
    p = model.blocks[0].parameters().__next__()  # a weight of the interaction block (not a sigma head)

    def nll_s():
        return negative_log_likelihood(model(batch), batch)["stress"].sum()

    g = torch.autograd.grad(nll_s(), [p])[0]
    idx = tuple(int(i) for i in torch.nonzero(g.abs() == g.abs().max())[0])
    h = 1e-5
    with torch.no_grad():
        p[idx] += h
    up = float(nll_s().detach())
    with torch.no_grad():
        p[idx] -= 2 * h
    down = float(nll_s().detach())
    with torch.no_grad():
        p[idx] += h
    assert float(g[idx]) != 0.0
    assert abs((up - down) / (2 * h) - float(g[idx])) < 1e-5 * max(1.0, abs(float(g[idx])))


def _config(emt_file, method, **over):
    cfg = tiny(method, data={"train": str(emt_file), "test": None, "protocol": "random", "n_train": 18, "n_val": 6},
               **over).to_dict()
    return TrainConfig.from_dict(cfg)


@pytest.mark.parametrize("method", ["map", "sghmc", "ensemble", "mc_dropout"])
def test_every_method_trains_on_a_mixed_size_periodic_set_with_stress(tmp_path, emt_file, method):
    result = train(_config(emt_file, method), tmp_path / "run", progress=False)
    assert result.status == "finished"
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert all(float(r["val_stress_mae"]) > 0 for r in rows)
    sample = read_sample(result.samples[0])
    assert sample["config"]["stress_std"] is True and "sigma_stress_head.weights.0" in sample["state_dict"]
    model = load_samples(tmp_path / "run" / "samples")
    ds = read_ase(emt_file)
    out = model(GraphDataset(ds, TypeMapper(model.config.type_names), model.config.cutoff).batch([0, 1, 2]))
    assert (out[K.VIRIAL_STD] > 0).all()


def test_training_on_stress_lowers_the_stress_error(tmp_path, emt_file):
    """The same MAP run with and without the stress term: the stress error on validation frames differs,
    lower with it (the term reaches the weights)."""
    def final_stress_mae(weight):
        cfg = _config(emt_file, "map", training={"max_steps": 60, "validate_every": 60, "stress_weight": weight},
                      adam={"lr": 1e-2, "ema_decay": 0.0})
        run = tmp_path / f"w{weight}"
        train(cfg, run, progress=False)
        rows = list(csv.DictReader(open(run / "log.csv")))
        return rows[-1]["val_stress_mae"]

    without, with_stress = final_stress_mae(0.0), final_stress_mae(10.0)
    assert without == ""  # no stress term, no stress head, no stress column
    # the stress error of the model trained without stresses, measured on the same frames
    run = tmp_path / "w0.0"
    model = load_samples(run / "samples")
    ds = read_ase(emt_file)
    val = Split.load(run / "split.json").val.indices
    b = GraphDataset(ds, TypeMapper(model.config.type_names), model.config.cutoff).batch(val)
    vol = torch.linalg.det(b[K.CELL]).abs()[:, None, None]
    mae_without = float((-model(b)[K.VIRIAL].detach().mean(0) / vol - b[K.STRESS]).abs().mean())
    assert float(with_stress) < 0.7 * mae_without, (with_stress, mae_without)  # measured: 0.0086 vs 0.020


def test_stress_config_rules(emt_file):
    with pytest.raises(ConfigError, match=r"model\.stress_std is set by the trainer \(the data's stresses and "
                                          r"training\.stress_weight\)"):
        tiny("map", model={**TINY_MODEL, "stress_std": True})
    with pytest.raises(ConfigError, match=r"training\.stress_weight = -1"):
        tiny("map", training={"stress_weight": -1})


def test_evaluation_reports_stress_metrics(tmp_path, emt_file):
    run = train(_config(emt_file, "sghmc"), tmp_path / "run", progress=False)
    ds = read_ase(emt_file)
    result = evaluate(tmp_path / "run" / "samples", ds)
    model = load_samples(tmp_path / "run" / "samples")
    out = model(GraphDataset(ds, TypeMapper(model.config.type_names), model.config.cutoff).batch(range(len(ds))))
    vol = np.abs(np.linalg.det(ds.cell))
    mean = -out[K.VIRIAL].detach().numpy().mean(0) / vol[:, None, None]
    err = np.abs(np.stack([mean[:, a, b] - ds.stress[:, a, b] for a, b in VOIGT], axis=1))
    assert result["stress.mae"] == pytest.approx(err.mean(), rel=1e-10)
    assert result["stress.mll"] is not None and result["stress.n"] == 6 * len(ds)
    assert run.status == "finished"
    table = result.table()
    assert "stress eV/A^3" in table and table.splitlines()[5].split()[-1] == "stress"
