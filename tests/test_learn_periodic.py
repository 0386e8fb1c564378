"""bnn-learn on a periodic box (issue 26, item 2): the bundled GFN2-xTB water, a tiny model trained
on stresses, the built-in heating recipe in the box's own cell, labels with stresses from tblite
(GFN1-xTB: cheap), and a fine-tuning on the old frames plus the labelled ones with their cells."""

import json

import numpy as np
import pytest

from bnnmd.data import bundled_dataset, read_dataset
from bnnmd.label import LABEL_UNITS, TBLiteLabeller
from bnnmd.learn import ActiveLearning, LearnConfig, LearnError, heating_input
from bnnmd.train import TrainConfig, train
from bnnmd.units import energy_factor

pytest.importorskip("tblite")


@pytest.fixture(scope="module")
def water_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("learn_water")
    cfg = TrainConfig.from_dict({
        "method": "sghmc", "seed": 2, "data": {"train": "bundled:water_gfn2_train", "test": "bundled:water_gfn2_test",
                                               "n_train": 12, "n_val": 3},
        "model": {"num_layers": 1, "l_max": 1, "num_features": 4, "cutoff": 3.5, "radial_hidden": 8,
                  "sigma_hidden": 4},
        "training": {"batch_size": 2, "max_steps": 20, "validate_every": 10, "checkpoint_every": 10,
                     "stress_weight": 1.0},
        "sghmc": {"warm_start_steps": 8, "mass_freeze_step": 4, "burn_in": 6, "num_samples": 2,
                  "sample_interval": 3, "chains": 1}})
    train(cfg, d / "run", progress=False)
    return d


def water_config(water_run, **over):
    d = {"start": str(water_run / "run"), "rounds": 1, "max_dft_calls": 2, "test": "bundled:water_gfn2_test",
         "md": {"structure": "bundled:water_gfn2_test:3", "nsteps": 30, "halt_every": 10, "dump_every": 10,
                "seed": 3, "threshold": 1e-6},  # a forced threshold: the first check halts
         "select": {"n": 2, "min_gap": 10}, "label": {"labeller": "tblite", "method": "GFN1-xTB", "processes": 1},
         "finetune": {"warm_start_steps": 4, "max_steps": 12, "mass_freeze_step": 3, "burn_in": 6,
                      "sample_interval": 3, "validate_every": 6}}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    return d


@pytest.mark.slow
def test_periodic_round_with_stress_labels(water_run, tmp_path):
    out = tmp_path / "out"
    rep = ActiveLearning(LearnConfig.from_dict(water_config(water_run)), out).run()
    assert rep["status"] == "round budget reached (1 fine-tunings)" and rep["dft_calls"] == 2
    r0, r1 = rep["rounds"]
    assert r0["halt_step"] == 10 and r0["labelled"] == 2 and r1["halt_step"] == 10
    # the MD ran in the water box's own cell (not a molecule's 30 A box), keeping angular momentum
    start = bundled_dataset("water_gfn2_test").to_ase(3)
    text = (out / "round_00" / "md" / "in.lmp").read_text()
    assert "mom yes rot no" in text
    # labels: the frames at their MD cell, GFN1-xTB energy, forces and stress, as a fresh tblite call
    labels = read_dataset(out / "round_00" / "labels.extxyz")
    assert len(labels) == 2 and labels.stress is not None and labels.pbc.all()
    np.testing.assert_allclose(np.abs(np.linalg.det(labels.cell)), start.get_volume(), rtol=1e-6)  # LAMMPS' digits
    atoms = labels.to_ase(1)  # extxyz keeps 8 decimals of the positions: the label moves by ~1e-7 eV/A
    fresh = TBLiteLabeller("GFN1-xTB")(atoms)  # no cache: computed again
    to_ev = energy_factor(LABEL_UNITS["energy"], "eV")
    assert labels.energy[1] == pytest.approx(fresh.energy * to_ev, rel=1e-9)
    np.testing.assert_allclose(labels.forces[96:], fresh.forces * to_ev, atol=1e-5)
    np.testing.assert_allclose(labels.stress[1], fresh.stress * to_ev, atol=1e-7)
    assert np.abs(labels.stress[1]).max() > 1e-4  # a real stress, not zeros
    # the fine-tuning: the 12 old frames (with stresses) and the 2 new ones, old validation frames
    split = json.loads((out / "round_01" / "split.json").read_text())
    assert split["train"]["n"] == 14 and split["val"]["n"] == 3
    both = read_dataset(out / "round_01" / "data.extxyz")
    assert len(both) == 14 and both.stress is not None
    np.testing.assert_allclose(both.stress[-2:], labels.stress, atol=1e-12)
    np.testing.assert_allclose(both.positions[-192:], labels.positions, atol=1e-12)
    np.testing.assert_allclose(both.cell[-2:], labels.cell, atol=1e-12)
    old = bundled_dataset("water_gfn2_train").subset(json.loads((water_run / "run" / "split.json").read_text())
                                                      ["train"]["indices"])
    np.testing.assert_allclose(both.stress[:12], old.stress, atol=1e-12)
    assert len(list((out / "round_01" / "run" / "samples").glob("sample_*.pt"))) == 2
    assert (out / "round_01" / "model.pth").exists()


def test_periodic_heating_input_and_label_errors(water_run):
    from bnnmd.learn import MDSection

    assert "mom yes rot no" in heating_input(MDSection(), ["H", "O"], 1, periodic=True)
    assert "mom yes rot yes" in heating_input(MDSection(), ["H", "O"], 1)
    with pytest.raises(LearnError, match="label.method = 'GFN3': tblite's methods are GFN2-xTB, GFN1-xTB"):
        LearnConfig.from_dict(water_config(water_run, label={"method": "GFN3"}))
    with pytest.raises(LearnError, match="label.labeller = 'xtb': give pyscf, tblite, or MODULE:FACTORY"):
        LearnConfig.from_dict(water_config(water_run, label={"labeller": "xtb"}))
