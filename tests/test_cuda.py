"""CUDA against CPU: the eager model, the TorchScript file and the ``.pt2`` package compiled for CUDA
in the C++ evaluator, ``BNNCalculator(device="cuda")`` and LAMMPS ``pair_style bnn device cuda`` on
one rank give the energies, forces, virials and stds of the CPU.

Every test is marked ``cuda`` and skips, with the reason, when torch sees no CUDA GPU. On a GPU
machine ``bench/gpu_check.py`` runs them (``pytest -m cuda tests/test_cuda.py``).

Tolerances (:func:`assert_close`): float64 1e-9 relative to the largest value of the quantity (at
least 1), float32 1e-4. CUDA sums in another order than the CPU (atomics in the scatter sums, other
reduction trees), so the two agree to round-off, not bit for bit; 1e-9 is 10^6 float64 ulps, far
below any physical effect and far above the round-off of these small models.

``BNNMD_CUDA_TESTS_ON_CPU=1`` runs the same tests with the CPU as the device under test (CPU against
CPU): a check of the tests themselves on a machine without a GPU, not of CUDA.
"""

import copy
import os
import re
import subprocess

import numpy as np
import pytest
import torch

from bnnmd import _core
from bnnmd.calculator import BNNCalculator
from bnnmd.data import GraphDataset, TypeMapper, bundled_dataset, keys as K, neighbour_list
from bnnmd.deploy import export
from bnnmd.nn.testing import random_periodic_atoms

from helpers import (BIN, CUTOFF, SINGLE_POINT, TYPES, _inputs, molecule, parse_single_point, periodic_box,
                     periodic_dataset, run_lammps, write_samples)

ON_CPU = os.environ.get("BNNMD_CUDA_TESTS_ON_CPU") == "1"
#: the device under test
DEV = "cpu" if ON_CPU else "cuda"

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not ON_CPU and not torch.cuda.is_available(),
                       reason="torch sees no CUDA GPU (torch.cuda.is_available() is False): these tests compare "
                              "CUDA with the CPU; bench/gpu_check.py runs them on a GPU machine"),
]

#: relative to max(|reference|, 1) of each quantity
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}
#: outputs defined on local atoms only (tests/test_pt2.py): TorchScript and .pt2 differ on ghosts
LOCAL_ONLY = ("atomic_energy", "forces_std")
#: SINGLE_POINT plus the pressure stds c_unc[6..8] (the model below has a stress head)
SINGLE_POINT_PSTD = SINGLE_POINT + 'print "PSTD $(c_unc[6]:%.15g) $(c_unc[7]:%.15g) $(c_unc[8]:%.15g)"\n'


def assert_close(got, want, tol, what):
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    scale = max(float(np.abs(want).max()) if want.size else 0.0, 1.0)
    err = float(np.abs(got - want).max()) if want.size else 0.0
    assert err <= tol * scale, f"{what}: max |{DEV} - cpu| = {err:.3g} > {tol:.0e} x {scale:.3g}"


def assert_results_close(got, want, tol, nlocal=None, prefix=""):
    """Every entry of two evaluator results (nested ``samples`` included); with ``nlocal`` (TorchScript against
    .pt2) the LOCAL_ONLY outputs and the aggregated force stds (which hold sigma_F) on the local atoms only."""
    assert set(got) == set(want), f"{prefix}keys differ: {sorted(set(got) ^ set(want))}"
    for key, w in want.items():
        g = got[key]
        if isinstance(w, dict):
            assert_results_close(g, w, tol, nlocal, prefix + key + ".")
            continue
        if nlocal is not None and prefix == "samples." and key in LOCAL_ONLY:
            g, w = np.asarray(g)[:, :nlocal], np.asarray(w)[:, :nlocal]
        elif nlocal is not None and not prefix and key.startswith("forces_std"):  # their sigma_F part
            g, w = np.asarray(g)[:nlocal], np.asarray(w)[:nlocal]
        assert_close(g, w, tol, prefix + key)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A k = 3 model with a stress head (sigma_W > 0), its samples and its TorchScript file."""
    d = tmp_path_factory.mktemp("cuda")
    ds = bundled_dataset("rmd17_ethanol_train").subset(range(20))
    model = write_samples(d / "samples", ds, k=3, seed=4, stress_std=True)
    return d, ds, model.eval(), export(d / "samples", d / "model.pth")


@pytest.fixture(scope="module")
def pt2_cuda(run):
    """The .pt2 compiled for the device under test by the command line, ``bnn-export ... --device cuda``."""
    d = run[0]
    out = d / f"model_{DEV}.pt2"
    r = subprocess.run([str(BIN / "bnn-export"), str(d / "samples"), str(out), "--device", DEV],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def _frames():
    """(dataset, frame) pairs: an ethanol frame and a small triclinic periodic cell (images interact)."""
    return [(bundled_dataset("rmd17_ethanol_train").subset(range(2)), 0), (periodic_dataset(2, 10, seed=3), 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_model_forward_equals_cpu(run, dtype):
    """The eager stacked model on the device: energies, forces, virials, sigmas of the CPU."""
    _, _, model, _ = run
    cpu = copy.deepcopy(model).to(dtype)
    dev = copy.deepcopy(model).to(dtype).to(DEV)
    for ds, i in _frames():
        gd = GraphDataset(ds, TypeMapper(TYPES), CUTOFF)
        want = cpu(gd.batch([i], dtype=dtype))
        got = dev(gd.batch([i], dtype=dtype, device=torch.device(DEV)))
        assert got[K.FORCES].device.type == DEV
        for key in K.MODEL_OUTPUTS:
            assert_close(got[key].detach().cpu(), want[key].detach(), TOL[dtype], f"{dtype} {key}")


@pytest.mark.parametrize("nlocal", [None, 5], ids=["all_local", "ghosts"])
def test_torchscript_in_the_evaluator_equals_cpu(run, nlocal):
    """``_core.Evaluator(model.pth, device="cuda")``: every output (per sample and aggregated) of the CPU,
    with and without ghost atoms (LAMMPS' nlocal < n)."""
    _, _, _, pth = run
    ev = _core.Evaluator(str(pth), DEV)
    assert ev.device.startswith(DEV)
    cpu = _core.Evaluator(str(pth), "cpu")
    for ds, i in _frames():
        f, types, g = _inputs(ds, i)
        args = (f["positions"], types, g.edge_index, g.shift_vector, len(types) if nlocal is None else nlocal)
        assert_results_close(ev.compute(*args), cpu.compute(*args), TOL[torch.float64])


def test_float32_torchscript_in_the_evaluator_equals_cpu(run, tmp_path):
    d = run[0]
    pth = export(d / "samples", tmp_path / "model32.pth", dtype="float32")
    f, types, g = _inputs(*_frames()[1])
    args = (f["positions"], types, g.edge_index, g.shift_vector, len(types))
    assert_results_close(_core.Evaluator(str(pth), DEV).compute(*args),
                         _core.Evaluator(str(pth), "cpu").compute(*args), TOL[torch.float32])


@pytest.mark.slow
@pytest.mark.parametrize("nlocal", [None, 5], ids=["all_local", "ghosts"])
def test_pt2_compiled_for_cuda_equals_cpu(run, pt2_cuda, nlocal):
    """``bnn-export ... model.pt2 --device cuda`` run by the C++ evaluator on the GPU: the CPU's TorchScript
    numbers (ghosts: the outputs defined on local atoms)."""
    _, _, _, pth = run
    ev = _core.Evaluator(str(pt2_cuda), DEV)
    assert ev.format == "pt2" and ev.device.startswith(DEV)
    cpu = _core.Evaluator(str(pth), "cpu")
    for ds, i in _frames():
        f, types, g = _inputs(ds, i)
        n = len(types) if nlocal is None else nlocal
        args = (f["positions"], types, g.edge_index, g.shift_vector, n)
        assert_results_close(ev.compute(*args), cpu.compute(*args), TOL[torch.float64], nlocal=n)


@pytest.mark.slow
@pytest.mark.parametrize("n_atoms, n_edges", [(1, 0), (3, 1)])
def test_pt2_inputs_below_the_compiled_minimum_on_cuda(run, pt2_cuda, n_atoms, n_edges):
    """The evaluator pads inputs under 2 atoms / 2 edges; the padding is made on the package's device."""
    _, ds, _, pth = run
    f, types, _ = _inputs(ds, 0)
    pos, types = f["positions"][:n_atoms], types[:n_atoms]
    edges = neighbour_list(pos, CUTOFF).edge_index[:, :n_edges]
    args = (pos, types, edges, np.zeros((edges.shape[1], 3)), n_atoms)
    assert_results_close(_core.Evaluator(str(pt2_cuda), DEV).compute(*args),
                         _core.Evaluator(str(pth), "cpu").compute(*args), TOL[torch.float64], nlocal=n_atoms)


@pytest.mark.slow
@pytest.mark.skipif(ON_CPU, reason="a CPU package on the CPU is not refused")
def test_pt2_compiled_for_cuda_is_refused_on_the_cpu(pt2_cuda):
    with pytest.raises(RuntimeError, match=r"compiled for cuda .*--device cpu"):
        _core.Evaluator(str(pt2_cuda), "cpu")


def _calculator_results(atoms, calc):
    a = atoms.copy()
    a.calc = calc
    a.get_stress()
    return a.calc.results


CALC_KEYS = ("energy", "forces", "stress", "energies", "energy_std", "energy_std_epistemic", "energy_std_aleatoric",
             "forces_std", "forces_std_epistemic", "forces_std_aleatoric", "stress_std", "stress_std_epistemic",
             "stress_std_aleatoric", "pressure_std", "pressure_std_epistemic", "pressure_std_aleatoric")


@pytest.mark.parametrize("which", ["core_pth", pytest.param("core_pt2", marks=pytest.mark.slow), "python"])
def test_calculator_on_cuda_equals_cpu(run, which, request):
    """``BNNCalculator(..., device="cuda")`` on a periodic cell: energy, forces, stress and every std of the
    CPU calculator (C++ core with the .pth or the CUDA .pt2; the eager Python backend)."""
    d, _, _, pth = run
    atoms = random_periodic_atoms(30, 8.0, min_distance=1.1, seed=3)
    want = _calculator_results(atoms, BNNCalculator(pth))
    if which == "python":
        calc = BNNCalculator(d / "samples", backend="python", device=DEV)
    else:
        calc = BNNCalculator(request.getfixturevalue("pt2_cuda") if which == "core_pt2" else pth, device=DEV)
    got = _calculator_results(atoms, calc)
    assert want["pressure_std_aleatoric"] > 0  # the stress head is on
    for key in CALC_KEYS:
        assert_close(got[key], want[key], TOL[torch.float64], key)


def _lammps(tmp_path, atoms, model, device):
    r = run_lammps(tmp_path, atoms, SINGLE_POINT_PSTD, model=model, pair_options=f"device {device}")
    assert re.search(rf"pair_style bnn: .* on {device}(:0)?; types", r.stdout), r.stdout[-2000:]
    got = parse_single_point(tmp_path, r)
    got["pressure_std"] = np.array([float(x) for x in re.search(r"PSTD (\S+) (\S+) (\S+)", r.stdout).groups()])
    return got


@pytest.mark.parametrize("fmt, system", [("pth", "molecule"), ("pth", "periodic"),
                                         pytest.param("pt2", "periodic", marks=pytest.mark.slow)])
def test_lammps_pair_style_device_cuda_equals_cpu(tmp_path, run, fmt, system, request):
    """``pair_style bnn device cuda`` on one rank: energy, forces, per-atom stds, energy std, the virial
    pressure tensor and the pressure stds of ``device cpu`` (the .pt2: compiled for CUDA, against the CPU's .pth)."""
    _, _, _, pth = run
    atoms = molecule() if system == "molecule" else periodic_box()
    want = _lammps(tmp_path / "cpu", atoms, pth, "cpu")
    got = _lammps(tmp_path / DEV, atoms, request.getfixturevalue("pt2_cuda") if fmt == "pt2" else pth, DEV)
    tol = TOL[torch.float64]
    for key in ("energy", "energy_std", "umax", "pressure_virial", "pressure_std"):
        assert_close(got[key], want[key], tol, key)
    np.testing.assert_array_equal(got["atoms"][:, 0], want["atoms"][:, 0])  # ids, sorted
    for col, key in ((1, "fx"), (2, "fy"), (3, "fz"), (4, "forces_std"), (5, "forces_std_epistemic"),
                     (6, "forces_std_aleatoric")):
        assert_close(got["atoms"][:, col], want["atoms"][:, col], tol, key)
