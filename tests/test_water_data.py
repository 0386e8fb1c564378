"""The bundled liquid-water sets (32 H2O, periodic, GFN2-xTB) and their generator scripts/make_water_gfn2.py."""

import os
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
import pytest

from bnnmd.data import BUNDLED, bundled_dataset, bundled_path, read_dataset

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "make_water_gfn2.py"
SETS = {"water_gfn2_train": 300, "water_gfn2_test": 100, "water_gfn2_ood": 100}


@pytest.fixture(scope="module")
def water():
    return {name: bundled_dataset(name) for name in SETS}


@pytest.fixture(scope="module")
def water_frames():
    return {name: ase.io.read(bundled_path(name), index=":") for name in SETS}


def test_bundled_water_sets_load(water):
    for name, count in SETS.items():
        assert name in BUNDLED and bundled_path(name).name == f"{name}.extxyz.gz"
        ds = water[name]
        assert len(ds) == count, name
        assert (ds.n_atoms == 96).all() and ds.energy_unit == "eV" and ds.length_unit == "A"
        z = ds.atomic_numbers.reshape(count, 96)
        assert set(np.unique(z)) == {1, 8} and ((z == 8).sum(axis=1) == 32).all()
        assert ds.pbc.all() and ds.cell.shape == (count, 3, 3) and ds.stress.shape == (count, 3, 3)
        for x in (ds.energy, ds.forces, ds.stress, ds.cell, ds.positions):
            assert np.isfinite(x).all(), name
        np.testing.assert_allclose(ds.stress, ds.stress.transpose(0, 2, 1), atol=1e-12)
        volume = np.abs(np.linalg.det(ds.cell))
        assert (volume > 800).all() and (volume < 1100).all(), name  # 957 A^3 at 1.0 g/cm^3, +-10 %
        e = ds.energy / 96
        assert np.ptp(e) < 0.2 and -47 < e.mean() < -45, name  # eV per atom, GFN2-xTB water


def test_train_cells_are_strained_test_cells_cubic(water, water_frames):
    cell = water["water_gfn2_train"].cell
    shear = np.abs(cell - cell * np.eye(3)).max(axis=(1, 2))
    strained = shear > 1e-6
    assert 150 < strained.sum() < 250  # every third frame unstrained
    info = [a.info for a in water_frames["water_gfn2_train"]]
    np.testing.assert_array_equal(strained, [i["strained"] for i in info])
    assert all(np.abs(i["strain"][:3]).max() <= 0.03 and np.abs(i["strain"][3:]).max() <= 0.02 for i in info)
    test_cell = water["water_gfn2_test"].cell
    np.testing.assert_allclose(test_cell, test_cell[:, :1, :1] * np.eye(3), atol=1e-9)
    # the strain changes the stress: the strained frames spread wider in pressure
    p = -np.trace(water["water_gfn2_train"].stress, axis1=1, axis2=2) / 3
    assert p[strained].std() > p[~strained].std()


def test_ood_kinds(water_frames):
    info = [a.info for a in water_frames["water_gfn2_ood"]]
    kinds = [i["kind"] for i in info]
    assert kinds.count("hot") == 50 and kinds.count("compressed") == 50
    hot_t = [i["temperature"] for i in info if i["kind"] == "hot"]
    assert min(hot_t) == 600 and max(hot_t) == 1000 and len(set(hot_t)) == 5
    assert all(i["temperature"] == 300 for i in info if i["kind"] == "compressed")
    vol = {k: np.mean([a.get_volume() for a in water_frames["water_gfn2_ood"] if a.info["kind"] == k])
           for k in ("hot", "compressed")}
    assert vol["compressed"] / vol["hot"] == pytest.approx(0.9, abs=1e-6)


def test_read_dataset_equals_ase(water, water_frames):
    ds, frames = water["water_gfn2_ood"], water_frames["water_gfn2_ood"]
    for i in (0, 99):
        np.testing.assert_array_equal(ds.frame(i)["positions"], frames[i].positions)
        np.testing.assert_array_equal(ds.frame(i)["forces"], frames[i].get_forces())
        np.testing.assert_array_equal(ds.stress[i], frames[i].get_stress(voigt=False))
        assert ds.energy[i] == frames[i].get_potential_energy()


@pytest.mark.slow
def test_labels_equal_a_fresh_tblite_call(water_frames):
    tblite_ase = pytest.importorskip("tblite.ase")
    for i in (0, 1):  # frame 0 unstrained, frame 1 strained
        stored = water_frames["water_gfn2_train"][i]
        assert stored.info["method"] == "GFN2-xTB"
        a = ase.Atoms(numbers=stored.numbers, positions=stored.positions, cell=stored.cell, pbc=True)
        a.calc = tblite_ase.TBLite(method="GFN2-xTB", accuracy=1.0, electronic_temperature=300.0,
                                   max_iterations=int(stored.info["scf_max_iterations"]),
                                   mixer_damping=float(stored.info["scf_mixer_damping"]), verbosity=0)
        assert a.get_potential_energy() == pytest.approx(stored.get_potential_energy(), abs=1e-6)
        np.testing.assert_allclose(a.get_forces(), stored.get_forces(), rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.get_stress(), stored.get_stress(), rtol=0, atol=1e-7)


def _generate(tmp_path, *extra):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(tmp_path / "out"),
                        "--work", str(tmp_path / "work"), *extra],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return [line for line in r.stdout.splitlines() if line.startswith("labelled ")], r.stdout


def test_generator_small_run_and_resume(tmp_path):
    pytest.importorskip("tblite.ase")
    args = ("--test", "0", "--hot", "0")  # train (strained) and compressed: two short MD runs
    labelled, _ = _generate(tmp_path, *args)
    assert len(labelled) == 3  # 2 train + 1 compressed, GFN1-xTB, 8 H2O
    train = tmp_path / "out" / "water_gfn2_train.extxyz.gz"
    ds = read_dataset(train)
    assert len(ds) == 2 and (ds.n_atoms == 24).all() and ds.stress is not None and ds.cell is not None
    first = ase.io.read(train, index=":")
    assert [a.info["strained"] for a in first] == [False, True] and first[0].info["method"] == "GFN1-xTB"
    ood = ase.io.read(tmp_path / "out" / "water_gfn2_ood.extxyz.gz", index=":")
    assert [a.info["kind"] for a in ood] == ["compressed"]
    # a half-written frame at the end of the partial file (a kill during the write) is dropped
    partial = tmp_path / "work" / "labels" / "train.partial.extxyz"
    with open(partial, "a") as fh:
        fh.write("24\nLattice=\"1 0 0 0 1 0 0 0 1\" Properties=species:S:1:pos:R:3\nO 0.0 0.0\n")
    # one more train frame: the MD is rerun (same seed: the cached frames are reproduced), one frame labelled
    labelled, out = _generate(tmp_path, *args, "--train", "3")
    assert len(labelled) == 1 and labelled[0].startswith("labelled train 3/3"), out
    assert "ood: all 1 frames already labelled" in out and "dropping a truncated last frame" in out
    again = ase.io.read(train, index=":")
    assert len(again) == 3
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a.positions, b.positions)
        assert a.get_potential_energy() == b.get_potential_energy()
