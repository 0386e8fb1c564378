"""DFT labels from pyscf: forces are the energy's gradient, the cache returns the same label,
and failures end in a clear message."""

import ase
import numpy as np
import pytest

from bnnmd.label import LabelError, PySCFLabeller, label_frames

pytest.importorskip("pyscf")


def water(shift=0.0):
    a = ase.Atoms("OH2", positions=[[0.0, 0.0, 0.0], [0.96 + shift, 0.0, 0.0], [-0.24, 0.93, 0.0]])
    return a


@pytest.mark.slow
def test_forces_are_minus_the_energy_gradient():
    lab = PySCFLabeller(basis="sto-3g")
    label = lab(water())
    assert label.converged and label.forces.shape == (3, 3)
    eps = 1e-4
    for atom, x in ((1, 0), (2, 1)):
        e = []
        for sign in (1, -1):
            a = water()
            a.positions[atom, x] += sign * eps
            e.append(lab(a).energy)
        assert label.forces[atom, x] == pytest.approx(-(e[0] - e[1]) / (2 * eps), rel=1e-4, abs=1e-3)
    # net force zero (translation invariance) up to the DFT grid, in kcal/mol/A
    np.testing.assert_allclose(label.forces.sum(axis=0), 0.0, atol=5e-3)


def test_cache_resumes_without_recomputing(tmp_path):
    lab = PySCFLabeller(basis="sto-3g", cache=tmp_path)
    first = lab(water())
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = PySCFLabeller(basis="sto-3g", cache=tmp_path).cached(water())
    assert again is not None and again.energy == first.energy
    np.testing.assert_array_equal(again.forces, first.forces)
    # another method or geometry is another entry
    assert PySCFLabeller(basis="6-31g", cache=tmp_path).cached(water()) is None
    assert lab.cached(water(0.01)) is None


@pytest.mark.slow
def test_open_shell_and_parallel_frames():
    lab = PySCFLabeller(basis="sto-3g")
    oh = ase.Atoms("OH", positions=[[0, 0, 0], [0.97, 0, 0]])  # a radical: UKS
    out = label_frames(lab, [water(), oh, water(0.02)], processes=2)
    assert all(not isinstance(x, LabelError) for x in out)
    # Newton's third law, to the DFT grid's accuracy (no grid response in the gradient: pyscf 2.14
    # leaves a net force of ~4e-4 kcal/mol/A on this 114 kcal/mol/A pair)
    assert out[1].forces[1, 0] == pytest.approx(-out[1].forces[0, 0], abs=5e-3)
    assert out[0].energy == pytest.approx(lab(water()).energy, abs=1e-6)


def test_errors():
    with pytest.raises(LabelError, match="did not converge in 1 cycles"):
        PySCFLabeller(basis="sto-3g", max_cycle=1)(water(0.5))
    periodic = water()
    periodic.cell, periodic.pbc = [10, 10, 10], True
    with pytest.raises(LabelError, match="isolated molecules"):
        PySCFLabeller(basis="sto-3g")(periodic)


@pytest.mark.slow
def test_timeout_stops_a_frame_and_keeps_the_others(tmp_path):
    """A frame over the timeout is stopped with a clear error; frames within it and cached ones are labelled."""
    from bnnmd.data import bundled_dataset

    ethanol = bundled_dataset("rmd17_ethanol_test").to_ase(0)
    ethanol.pbc = False
    slow = PySCFLabeller(basis="def2-tzvp", cache=tmp_path)  # minutes for ethanol on one thread
    out = label_frames(slow, [ethanol], timeout=3)
    assert isinstance(out[0], LabelError) and "longer than the timeout (3 s)" in str(out[0])
    # nothing cached: the worker was stopped before its SCF finished (a finished one writes its .npz)
    assert "label.timeout" in str(out[0]) and not list(tmp_path.glob("*.npz"))
    fast = PySCFLabeller(basis="sto-3g", cache=tmp_path)
    fast(water())  # cached: answered without a process
    out = label_frames(fast, [water(), water(0.02), water(0.03)], processes=2, timeout=120)
    assert [x.energy for x in out] == [fast(a).energy for a in (water(), water(0.02), water(0.03))]
