"""The DFT ground truth of a trajectory: whole molecules out of a periodic box, and the true
per-atom force error against the exported model."""

import ase
import ase.io
import numpy as np
import pytest

from bnnmd import units
from bnnmd.analysis import dft_truth, molecule_atoms, read_trajectory
from bnnmd.calculator import BNNCalculator
from bnnmd.data import bundled_dataset
from bnnmd.deploy import export
from bnnmd.label import PySCFLabeller

from helpers import write_samples

pytest.importorskip("pyscf")


def split_molecule_frames(n=3):
    """Ethanol in a 6 A periodic box, moved so that it straddles the box corner (wrapped)."""
    frames = []
    for f in range(n):
        a = bundled_dataset("rmd17_ethanol_test").to_ase(f)
        a.positions -= a.positions[0] + 0.1 * f  # atom 0 near the corner: the others wrap around
        a.cell, a.pbc = [6.0, 6.0, 6.0], True
        a.wrap()
        a.arrays["forces_std"] = np.full(len(a), 0.1)
        a.info["step"] = 20 * f
        frames.append(a)
    return frames


def test_molecule_is_made_whole(tmp_path):
    ase.io.write(tmp_path / "t.extxyz", split_molecule_frames(), format="extxyz")
    traj = read_trajectory(tmp_path / "t.extxyz")
    for f in range(traj.n_frames):
        ref = bundled_dataset("rmd17_ethanol_test").to_ase(f)
        got = molecule_atoms(traj, f)
        assert not got.pbc.any()
        # the same internal geometry as the unwrapped molecule (all distances)
        np.testing.assert_allclose(got.get_all_distances(), ref.get_all_distances(), atol=1e-4)
    # wrapped positions alone would not be: some distances go through the box
    wrapped = traj.to_atoms(0)
    assert np.abs(wrapped.get_all_distances() - bundled_dataset("rmd17_ethanol_test").to_ase(0).get_all_distances()).max() > 1.0


@pytest.mark.slow
def test_true_error_is_the_model_against_the_labels(tmp_path):
    write_samples(tmp_path / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=2)
    model = export(tmp_path / "samples", tmp_path / "model.pth")
    ase.io.write(tmp_path / "t.extxyz", split_molecule_frames(2), format="extxyz")
    traj = read_trajectory(tmp_path / "t.extxyz")
    labeller = PySCFLabeller(basis="sto-3g", cache=tmp_path / "labels")
    truth = dft_truth(traj, model, labeller, [1, 0, 1])
    assert truth.frames == [0, 1] and truth.steps == [0, 20]
    calc = BNNCalculator(str(model))
    kcal = units.energy_factor("eV", "kcal/mol")
    for i, f in enumerate(truth.frames):
        a = bundled_dataset("rmd17_ethanol_test").to_ase(f)
        a.calc = calc
        want = np.linalg.norm(a.get_forces() * kcal - labeller(molecule_atoms(traj, f)).forces, axis=1) / np.sqrt(3)
        assert truth.max_error[i] == pytest.approx(want.max(), rel=1e-6)
        assert truth.worst_atom[i] == int(want.argmax())
        assert truth.max_std[i] == pytest.approx(calc.results["forces_std"].max() * kcal, rel=1e-6)
    assert truth.first_error_above(0.0) == 0
    assert truth.first_error_above(max(truth.max_error)) is None
    assert len(list((tmp_path / "labels").glob("*.npz"))) == 2


@pytest.mark.slow
def test_frame_errors_by_hand(tmp_path):
    from bnnmd.analysis import frame_errors

    write_samples(tmp_path / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=2)
    model = export(tmp_path / "samples", tmp_path / "model.pth")
    ds = bundled_dataset("rmd17_ethanol_test").subset(range(3))
    got = frame_errors(model, ds)
    calc = BNNCalculator(str(model))
    kcal = units.energy_factor("eV", "kcal/mol")
    for i in range(3):
        a = ds.to_ase(i)
        a.calc = calc
        d = a.get_forces() * kcal - ds.forces[9 * i:9 * i + 9]
        assert got["max_error"][i] == pytest.approx(np.sqrt((d ** 2).sum(axis=1) / 3).max(), rel=1e-9)
        assert got["max_std"][i] == pytest.approx(calc.results["forces_std"].max() * kcal, rel=1e-9)
    assert len(frame_errors(model, ds, n=2)["max_error"]) == 2
