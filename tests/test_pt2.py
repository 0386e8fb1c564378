"""The ``.pt2`` (AOTInductor) export: the same numbers as TorchScript and the eager model, in the C++
evaluator, the ASE calculator and LAMMPS on 1 and 2 ranks; packages it cannot run are refused.

One package is compiled (by the ``bnn-export`` command line, ~1 min) and shared by the tests.
"""

import platform
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import bnnmd.deploy._pt2
from bnnmd import _core, units
from bnnmd.calculator import BNNCalculator
from bnnmd.data import GraphDataset, TypeMapper, bundled_dataset, neighbour_list
from bnnmd.deploy import ExportError, export, read_metadata
from bnnmd.nn.testing import random_periodic_atoms

from helpers import (CUTOFF, SINGLE_POINT, TYPES, _inputs, cpp_metadata, molecule, parse_single_point, periodic_box,
                     periodic_dataset, run_lammps, write_samples)

BIN = sys.executable.rsplit("/", 1)[0]
#: outputs defined on local atoms only: both formats drop ghost messages that no counted energy needs
#: (TorchScript inside the model, layer by layer; the evaluator before a .pt2 call, once), so a
#: ghost's own atomic energy and sigma_F are partial, and differ between the two
LOCAL_ONLY = ("atomic_energy", "forces_std")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(samples dir, the eager model, TorchScript path, .pt2 path) of one k = 3 model."""
    d = tmp_path_factory.mktemp("pt2")
    ds = bundled_dataset("rmd17_ethanol_train").subset(range(20))
    model = write_samples(d / "samples", ds, k=3, seed=4)
    pth = export(d / "samples", d / "model.pth")
    r = subprocess.run([f"{BIN}/bnn-export", str(d / "samples"), str(d / "model.pt2")], capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"bnn-export: wrote {d / 'model.pt2'}: k=3 samples" in r.stdout
    return d, ds, model.eval(), pth, d / "model.pt2"


def _compare(a, b, nlocal, rtol=1e-10, atol=1e-10):
    for key in a:
        x, y = np.asarray(a[key]), np.asarray(b[key])
        if key in LOCAL_ONLY:
            x, y = x[:, :nlocal], y[:, :nlocal]
        np.testing.assert_allclose(y, x, rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.slow
def test_metadata_is_the_torchscript_files(models):
    d, ds, model, pth, pt2 = models
    meta = read_metadata(pt2)
    assert meta == read_metadata(pth)
    ev = _core.Evaluator(str(pt2))
    assert ev.format == "pt2" and _core.Evaluator(str(pth)).format == "torchscript"
    assert cpp_metadata(ev) == meta


@pytest.mark.slow
@pytest.mark.parametrize("frame", [0, 7])
def test_pt2_equals_torchscript_equals_eager(models, frame):
    d, ds, model, pth, pt2 = models
    f, types, g = _inputs(ds, frame)
    eager = model(GraphDataset(ds, TypeMapper(TYPES), CUTOFF).batch([frame]))
    args = (f["positions"], types, g.edge_index, g.shift_vector)
    got = _core.Evaluator(str(pt2)).compute(*args, len(types))["samples"]
    want = _core.Evaluator(str(pth)).compute(*args, len(types))["samples"]
    _compare(want, got, len(types))
    assert got["virial_std"].shape == (3,) and not got["virial_std"].any()  # no stress head
    np.testing.assert_allclose(got["forces"], eager["forces"].detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(got["total_energy"], eager["total_energy"][:, 0].detach().numpy(), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("nlocal", [1, 5, 8])
def test_ghost_atoms_get_forces_but_no_energy(models, nlocal):
    """Atoms >= nlocal are LAMMPS ghosts: the same energies and forces on every atom as TorchScript."""
    d, ds, model, pth, pt2 = models
    f, types, g = _inputs(ds, 3)
    args = (f["positions"], types, g.edge_index, g.shift_vector, nlocal)
    got = _core.Evaluator(str(pt2)).compute(*args)["samples"]
    _compare(_core.Evaluator(str(pth)).compute(*args)["samples"], got, nlocal)
    np.testing.assert_allclose(got["total_energy"], got["atomic_energy"][:, :nlocal].sum(1), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("n_atoms, n_edges", [(1, 0), (2, 0), (2, 2), (3, 1)])
def test_inputs_below_the_compiled_minimum_are_padded_exactly(models, n_atoms, n_edges):
    """The package takes >= 2 atoms and >= 2 edges: a rank with fewer (LAMMPS) still gets the right answer."""
    d, ds, model, pth, pt2 = models
    f, types, g = _inputs(ds, 0)
    pos, types = f["positions"][:n_atoms], types[:n_atoms]
    edges = neighbour_list(pos, CUTOFF).edge_index[:, :n_edges]
    args = (pos, types, edges, np.zeros((edges.shape[1], 3)), n_atoms)
    _compare(_core.Evaluator(str(pth)).compute(*args)["samples"], _core.Evaluator(str(pt2)).compute(*args)["samples"],
             n_atoms)


@pytest.mark.slow
def test_calculator_on_a_periodic_cell(models):
    """BNNCalculator with a .pt2 equals the TorchScript one: energies, forces, stress, stds."""
    d, ds, model, pth, pt2 = models
    atoms = random_periodic_atoms(30, 8.0, min_distance=1.1, seed=3)
    got, want = atoms.copy(), atoms.copy()
    got.calc, want.calc = BNNCalculator(pt2), BNNCalculator(pth)
    assert got.get_potential_energy() == pytest.approx(want.get_potential_energy(), rel=1e-12)
    np.testing.assert_allclose(got.get_forces(), want.get_forces(), rtol=1e-10, atol=1e-11)
    np.testing.assert_allclose(got.get_stress(), want.get_stress(), rtol=1e-9, atol=1e-12)
    for key in ("forces_std", "forces_std_epistemic", "forces_std_aleatoric", "energy_std"):
        np.testing.assert_allclose(got.calc.results[key], want.calc.results[key], rtol=1e-10, atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("system", ["molecule", "periodic"])
def test_lammps_pt2_equals_torchscript(tmp_path, models, system):
    d, ds, model, pth, pt2 = models
    atoms = molecule() if system == "molecule" else periodic_box()
    r = run_lammps(tmp_path / "pt2", atoms, SINGLE_POINT, model=pt2)
    assert re.search(r"pair_style bnn: \S+model\.pt2 \(pt2 sghmc, k = 3", r.stdout)
    got = parse_single_point(tmp_path / "pt2", r)
    want = parse_single_point(tmp_path / "pth", run_lammps(tmp_path / "pth", atoms, SINGLE_POINT, model=pth))
    assert got["energy"] == pytest.approx(want["energy"], rel=1e-12)
    np.testing.assert_allclose(got["atoms"], want["atoms"], rtol=1e-9, atol=1e-10)
    assert got["energy_std"] == pytest.approx(want["energy_std"], rel=1e-9)
    np.testing.assert_allclose(got["pressure_virial"], want["pressure_virial"], rtol=1e-8,
                               atol=1e-9 * np.abs(want["pressure_virial"]).max())


@pytest.mark.slow
def test_lammps_pt2_two_ranks_equal_one_rank(tmp_path, models):
    d, ds, model, pth, pt2 = models
    atoms = periodic_box(n=60, length=11.0, seed=2)
    one = parse_single_point(tmp_path / "np1", run_lammps(tmp_path / "np1", atoms, SINGLE_POINT, model=pt2))
    two = parse_single_point(tmp_path / "np2", run_lammps(tmp_path / "np2", atoms, SINGLE_POINT, nprocs=2,
                                                          model=pt2))
    assert two["energy"] == pytest.approx(one["energy"], rel=1e-13)
    np.testing.assert_allclose(two["atoms"], one["atoms"], rtol=1e-10, atol=1e-11)
    assert two["energy_std"] == pytest.approx(one["energy_std"], rel=1e-11)
    np.testing.assert_allclose(two["pressure_virial"], one["pressure_virial"], rtol=1e-9)


@pytest.fixture(scope="module")
def stress_models(tmp_path_factory):
    """A periodic k = 3 model with a virial sigma head: (samples dir, dataset, eager model, .pth, .pt2, and a .pt2
    compiled as bnnmd did before virial_std: a graph with the 6 outputs before it)."""
    d = tmp_path_factory.mktemp("pt2_stress")
    ds = periodic_dataset(2, 10, seed=5)
    model = write_samples(d / "samples", ds, seed=2, stress_std=True)
    pth, pt2 = export(d / "samples", d / "model.pth"), export(d / "samples", d / "model.pt2")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(bnnmd.deploy._pt2, "OUTPUT_KEYS", _core.output_keys[:6])
        old = export(d / "samples", d / "before_virial_std.pt2")
    return d, ds, model.eval(), pth, pt2, old


def _stress_twin(virial, virial_std, volume):
    """NumPy: ASE stress std (Voigt xx yy zz yz xz xy) and pressure std of k virials [k, 3, 3] and sigma_W [k]."""
    alea = np.mean(np.square(virial_std))
    std = np.sqrt(np.var(virial, axis=0) + alea) / volume
    pressure = np.sqrt(np.var(np.trace(virial, axis1=1, axis2=2) / 3) + alea / 3) / volume
    return std.reshape(9)[[0, 4, 8, 5, 2, 1]], pressure


@pytest.mark.slow
def test_stress_std_of_a_package_with_a_stress_head(stress_models):
    """virial_std reaches the .pt2 graph (its 7th output): the evaluator equals TorchScript and the eager model, the
    calculator's stress and pressure stds equal the NumPy twin of the eager model's samples."""
    d, ds, model, pth, pt2, _ = stress_models
    eager = model(GraphDataset(ds, TypeMapper(TYPES), CUTOFF).batch([1]))
    f, types, g = _inputs(ds, 1)
    args = (f["positions"], types, g.edge_index, g.shift_vector, len(types))
    got = _core.Evaluator(str(pt2)).compute(*args)["samples"]
    _compare(_core.Evaluator(str(pth)).compute(*args)["samples"], got, len(types))
    np.testing.assert_allclose(got["virial_std"], eager["virial_std"][:, 0].detach().numpy(), rtol=1e-10)
    assert (got["virial_std"] > 0).all()
    atoms = ds.to_ase(1)
    atoms.calc = BNNCalculator(pt2)
    atoms.get_stress()
    kcal = units.energy_factor("kcal/mol", "eV")
    stress_std, pressure_std = _stress_twin(eager["virial"][:, 0].detach().numpy() * kcal,
                                            eager["virial_std"][:, 0].detach().numpy() * kcal, atoms.get_volume())
    np.testing.assert_allclose(atoms.calc.results["stress_std"], stress_std, rtol=1e-9)
    assert atoms.calc.results["pressure_std"] == pytest.approx(pressure_std, rel=1e-9)


@pytest.mark.slow
def test_a_package_exported_before_virial_std_runs_with_zeros(stress_models):
    d, ds, model, pth, pt2, old = stress_models
    f, types, g = _inputs(ds, 0)
    inputs = [torch.tensor(f["positions"]), torch.tensor(types), torch.tensor(g.edge_index),
              torch.tensor(g.shift_vector), torch.tensor(len(types))]
    assert len(torch._inductor.aoti_load_package(str(old))(*inputs)) == 6  # the old contract
    args = (f["positions"], types, g.edge_index, g.shift_vector, len(types))
    got, want = _core.Evaluator(str(old)).compute(*args), _core.Evaluator(str(pt2)).compute(*args)
    assert not got["samples"]["virial_std"].any() and (want["samples"]["virial_std"] > 0).all()
    _compare({k: v for k, v in want["samples"].items() if k != "virial_std"}, got["samples"], len(types))
    atoms = ds.to_ase(0)
    atoms.calc = BNNCalculator(old)
    atoms.get_stress()
    r = atoms.calc.results
    assert not r["stress_std_aleatoric"].any() and r["pressure_std_aleatoric"] == 0
    np.testing.assert_allclose(r["stress_std"], r["stress_std_epistemic"], rtol=1e-15)


def _repackaged(src, dst, old, new):
    """A copy of the package ``src`` with ``old`` replaced by ``new`` in its metadata files."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("_metadata.json"):
                assert old.encode() in data
                data = data.replace(old.encode(), new.encode())
            zout.writestr(item, data)
    return dst


@pytest.mark.slow
def test_a_package_from_another_torch_is_refused(models, tmp_path):
    d, ds, model, pth, pt2 = models
    v = read_metadata(pt2)["torch_version"]
    other = _repackaged(pt2, tmp_path / "other.pt2", f"torch_version {v}", "torch_version 2.99.0")
    with pytest.raises(RuntimeError, match=r"compiled by torch 2\.99\.0 and this bnnmd runs torch "
                                           rf"{torch.__version__.rsplit('.', 1)[0]}\.x.*re-export"):
        _core.Evaluator(str(other))
    r = run_lammps(tmp_path / "lmp", molecule(), "run 0\n", model=other, check=False)
    assert r.returncode != 0 and "compiled by torch 2.99.0" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_package_for_another_device_is_refused(models, tmp_path):
    d, ds, model, pth, pt2 = models
    cuda = _repackaged(pt2, tmp_path / "cuda.pt2", '"AOTI_DEVICE_KEY": "cpu"', '"AOTI_DEVICE_KEY": "cuda"')
    with pytest.raises(RuntimeError, match="compiled for cuda and is asked to run on cpu.*--device cpu"):
        _core.Evaluator(str(cuda), "cpu")


def reference_missing_cpu_features(isa: str, flags) -> str:
    """Python twin of bnnmd::missing_cpu_features on x86, from /proc/cpuinfo's flag names."""
    need = {"AVX512": ["avx512f", "avx512dq", "avx512vl", "avx512bw", "fma"], "AVX512_VNNI": ["avx512_vnni"],
            "AVX2": ["avx2", "fma"]}
    missing = []
    for word in isa.upper().split():
        if word in need:
            missing += [f.replace("_", "") for f in need[word] if f not in flags]
        elif word in ("NEON", "VSX", "ZVECTOR") or word.startswith("SVE"):
            missing.append(word)
    return ", ".join(missing)


@pytest.mark.skipif(platform.machine() != "x86_64" or not Path("/proc/cpuinfo").exists(),
                    reason="the twin reads x86 flags from /proc/cpuinfo")
def test_cpu_features_against_proc_cpuinfo():
    flags = set(next(line for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("flags")).split(":", 1)[1].split())
    for isa in ("AVX512", "AVX512 AVX512_VNNI AMX_TILE", "AVX2", "avx2", "NEON", "SVE256", "VSX", "AVX512 NEON", ""):
        assert _core.missing_cpu_features(isa) == reference_missing_cpu_features(isa, flags), isa
    # what this machine's packages are compiled for runs here
    from torch._inductor.cpu_vec_isa import pick_vec_isa

    assert _core.missing_cpu_features(str(pick_vec_isa()).upper()) == ""


@pytest.mark.slow
def test_a_package_for_another_cpu_is_refused(models, tmp_path):
    d, ds, model, pth, pt2 = models
    isa = _core.read_pt2_metadata(str(pt2))["AOTI_CPU_ISA"]
    arm = _repackaged(pt2, tmp_path / "arm.pt2", f'"AOTI_CPU_ISA": "{isa}"', '"AOTI_CPU_ISA": "NEON"')
    with pytest.raises(RuntimeError, match="compiled for CPUs with NEON and this CPU lacks NEON.*re-export it on "
                                           "this machine"):
        _core.Evaluator(str(arm))


def test_not_a_package(tmp_path):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    with pytest.raises(RuntimeError, match="not an AOTInductor package"):
        _core.Evaluator(str(bad))
    with pytest.raises(ExportError, match="not an AOTInductor package"):
        read_metadata(bad)


@pytest.fixture(scope="module")
def samples(tmp_path_factory):
    d = tmp_path_factory.mktemp("pt2_errors")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(5)))
    write_samples(d / "dropout", bundled_dataset("rmd17_ethanol_train").subset(range(5)), k=1,
                  method="mc_dropout", dropout=0.1)
    return d


@pytest.mark.parametrize("kwargs, message", [
    (dict(out="m.pt2", freeze=True), "--freeze is for TorchScript"),
    (dict(out="m.pth", fmt="pt2x"), "format 'pt2x' is unknown"),
    (dict(out="m.pt2", fmt="torchscript"), "a .pt2 name for a TorchScript file"),
    (dict(out="m.pth", fmt="pt2"), "a .pt2 package needs a name ending in .pt2"),
    (dict(out="m.pth", device="cuda"), "device 'cuda' is for .pt2 packages"),
    (dict(out="m.pt2", device="cuda"), "torch sees no CUDA GPU"),
    (dict(out="m.pt2", samples="dropout"), "MC-dropout samples draw random masks"),
])
def test_export_errors(samples, kwargs, message):
    if "torch sees no CUDA GPU" in message and torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    kwargs = dict(kwargs)
    out = samples / kwargs.pop("out")
    with pytest.raises(ExportError, match=re.escape(message)):
        export(samples / kwargs.pop("samples", "samples"), out, **kwargs)
    assert not out.exists()
    assert not [p for p in samples.iterdir() if p.name.startswith(".m.")]  # no half-written package left
