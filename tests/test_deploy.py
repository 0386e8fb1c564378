"""Export, the C++ evaluator core and the ASE calculator: all against the eager model."""

import json
import subprocess
import sys
from typing import Dict

import ase
import numpy as np
import pytest
import torch
from ase.md.verlet import VelocityVerlet
from ase.units import Hartree, fs, kcal, kJ, mol
from e3nn.util.jit import compile_mode

import bnnmd.deploy._export
from bnnmd import _core, units
from bnnmd.calculator import BNNCalculator
from bnnmd.data import GraphDataset, TypeMapper, bundled_dataset, keys as K, neighbour_list
from bnnmd.deploy import DeployedModel, ExportError, export, read_metadata
from bnnmd.nn import ModelConfig, StochasticNequIP, build_model
from bnnmd.nn import testing as T
from bnnmd.posterior import StdMap, energy_stats, force_stats, metadata_to_text, save_sample, virial_stats

from helpers import CUTOFF, TYPES, _inputs, cpp_metadata, periodic_dataset, strain_derivative, write_samples


@pytest.fixture(scope="module")
def molecule_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mol")
    ds = bundled_dataset("rmd17_ethanol_train").subset(range(20))
    model = write_samples(d / "samples", ds)
    return d, ds, model.eval()


@pytest.fixture(scope="module")
def periodic_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("pbc")
    ds = periodic_dataset(2, 10, seed=3)
    model = write_samples(d / "samples", ds, seed=1)
    return d, ds, model.eval()


@pytest.mark.parametrize("run", ["molecule_run", pytest.param("periodic_run", marks=pytest.mark.slow)])
def test_eager_equals_exported_equals_cpp(run, request):
    d, ds, model = request.getfixturevalue(run)
    path = export(d / "samples", d / "model.pth")
    meta = read_metadata(path)
    assert meta["num_samples"] == 3 and meta["type_names"] == TYPES and meta["num_layers"] == 2
    scripted = torch.jit.load(str(path))
    ev = _core.Evaluator(str(path))
    assert cpp_metadata(ev) == meta
    gd = GraphDataset(ds, TypeMapper(TYPES), CUTOFF)
    for i in range(2):
        eager = model(gd.batch([i]))
        f, types, g = _inputs(ds, i)
        ts = scripted(torch.tensor(f["positions"]), torch.tensor(types), torch.tensor(g.edge_index),
                      torch.tensor(g.shift_vector), len(types))
        cpp = ev.compute(f["positions"], types, g.edge_index, g.shift_vector, len(types))["samples"]
        assert not eager[K.VIRIAL_STD].any()  # no stress head: sigma_W = 0 in every format
        for key in (K.TOTAL_ENERGY, K.TOTAL_ENERGY_STD, K.VIRIAL, K.VIRIAL_STD):
            np.testing.assert_allclose(ts[key].detach().numpy(), eager[key][:, 0].detach().numpy(), rtol=1e-12)
            np.testing.assert_allclose(cpp[key], eager[key][:, 0].detach().numpy(), rtol=1e-12, atol=1e-10)
        for key in (K.FORCES, K.FORCES_STD, K.ATOMIC_ENERGY):
            np.testing.assert_allclose(ts[key].detach().numpy(), eager[key].detach().numpy(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(cpp[key], eager[key].detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_ghost_atoms_get_forces_but_no_energy(molecule_run):
    """Atoms >= nlocal (LAMMPS ghosts) contribute no energy; forces reach them."""
    d, ds, model = molecule_run
    path = export(d / "samples", d / "ghost.pth")
    ev = _core.Evaluator(str(path))
    f, types, g = _inputs(ds, 0)
    full = ev.compute(f["positions"], types, g.edge_index, g.shift_vector, 9)["samples"]
    part = ev.compute(f["positions"], types, g.edge_index, g.shift_vector, 5)["samples"]
    np.testing.assert_allclose(part["total_energy"], full["atomic_energy"][:, :5].sum(1), rtol=1e-12)
    # forces are minus the gradient of the local energy: check one ghost by finite differences
    eps, a, c = 1e-5, 7, 1
    e = []
    for sgn in (1, -1):
        p = f["positions"].copy()
        p[a, c] += sgn * eps
        gg = neighbour_list(p, CUTOFF)
        e.append(ev.compute(p, types, gg.edge_index, gg.shift_vector, 5)["samples"]["total_energy"])
    np.testing.assert_allclose(part["forces"][:, a, c], -(e[0] - e[1]) / (2 * eps), rtol=1e-5, atol=1e-6)


# ---- Python twins of the C++ core (the package calls the C++ code; these are the references) ----
def reference_energy_stats(energy, energy_std, calibration):
    epi, alea = np.var(energy), np.mean(np.square(energy_std))
    c2 = float(calibration.factor_at(np.sqrt(epi + alea))) ** 2
    epi, alea = epi * c2, alea * c2
    return {"energy": float(np.mean(energy)), "energy_std": float(np.sqrt(epi + alea)),
            "energy_std_epistemic": float(np.sqrt(epi)), "energy_std_aleatoric": float(np.sqrt(alea))}


def reference_force_stats(forces, forces_std, calibration):
    epi = np.var(forces, axis=0).mean(axis=-1)  # mean over x, y, z of the variance over samples
    alea = np.mean(np.square(forces_std), axis=0)
    c2 = calibration.factor_at(np.sqrt(epi + alea)) ** 2
    epi, alea = epi * c2, alea * c2
    return {"forces": forces.mean(axis=0), "forces_std": np.sqrt(epi + alea),
            "forces_std_epistemic": np.sqrt(epi), "forces_std_aleatoric": np.sqrt(alea)}


def reference_virial_stats(virial, virial_std):
    """virial [k, 3, 3], virial_std [k]: per component and for tr(W)/3 (components independent)."""
    epi, alea = np.var(virial, axis=0), np.mean(np.square(virial_std))
    trace = np.trace(virial, axis1=1, axis2=2) / 3
    return {"virial": virial.mean(axis=0), "virial_std": np.sqrt(epi + alea), "virial_std_epistemic": np.sqrt(epi),
            "virial_std_aleatoric": np.full((3, 3), np.sqrt(alea)), "pressure_volume": float(trace.mean()),
            "pressure_volume_std": float(np.sqrt(np.var(trace) + alea / 3)),
            "pressure_volume_std_epistemic": float(np.std(trace)),
            "pressure_volume_std_aleatoric": float(np.sqrt(alea / 3))}


def test_virial_stats_equals_numpy_reference():
    rng = np.random.default_rng(4)
    for k in (1, 2, 5):
        w, sw = rng.normal(scale=3.0, size=(k, 3, 3)), rng.uniform(0.1, 2.0, size=k)
        want = reference_virial_stats(w, sw)
        for got in (virial_stats(w, sw), _core.virial_stats(w, sw)):
            assert sorted(got) == sorted(want)
            for key in want:
                np.testing.assert_allclose(got[key], want[key], rtol=1e-13, atol=1e-15, err_msg=key)
    # a model without a stress head: sigma_W = 0, only the spread of the samples
    r = virial_stats(w, np.zeros(k))
    assert not r["virial_std_aleatoric"].any() and r["pressure_volume_std_aleatoric"] == 0
    np.testing.assert_allclose(r["virial_std"], r["virial_std_epistemic"], rtol=1e-15)
    # hand check: two samples that differ in W_xx by 2, sigma_W 3 and 1
    w = np.zeros((2, 3, 3))
    w[1, 0, 0] = 2.0
    r = virial_stats(w, [3.0, 1.0])
    assert r["virial_std_epistemic"][0, 0] == pytest.approx(1.0) and r["virial_std_epistemic"][1, 1] == 0
    assert r["virial_std_aleatoric"][2, 1] == pytest.approx(np.sqrt(5.0))
    assert r["pressure_volume"] == pytest.approx(1 / 3) and r["pressure_volume_std_epistemic"] == pytest.approx(1 / 3)
    assert r["pressure_volume_std_aleatoric"] == pytest.approx(np.sqrt(5.0 / 3))
    with pytest.raises(ValueError, match=r"virial must be \(k, 3, 3\) and virial_std \(k,\)"):
        _core.virial_stats(np.zeros((2, 3, 3)), np.zeros(3))


def test_pressure_std_is_the_mixtures():
    """tr(W)/3 drawn from the mixture (1/k) sum_s N(W_s, sigma_s^2 I_9) has the std virial_stats gives."""
    rng = np.random.default_rng(5)
    w, sw = rng.normal(size=(3, 3, 3)), np.array([0.5, 1.0, 2.0])
    s = rng.integers(0, 3, 400_000)
    draws = w[s] + sw[s, None, None] * rng.normal(size=(len(s), 3, 3))
    assert np.std(np.trace(draws, axis1=1, axis2=2) / 3) == pytest.approx(
        virial_stats(w, sw)["pressure_volume_std"], rel=5e-3)
    np.testing.assert_allclose(draws.std(axis=0), virial_stats(w, sw)["virial_std"], rtol=1e-2)


def reference_metadata(text):
    """bnnmd.txt read in Python: key, space, value; numbers, lists and maps converted."""
    meta = dict(line.partition(" ")[::2] for line in text.splitlines() if line.strip())
    for key in ("format_version", "num_layers", "num_samples"):
        meta[key] = int(meta[key])
    for key in ("cutoff", "halt_threshold"):
        if key in meta:
            meta[key] = float(meta[key])
    for key in ("calibration_forces", "calibration_energy"):
        meta[key] = StdMap.from_text(meta[key])
    meta["type_names"] = meta["type_names"].split()
    return meta


@pytest.mark.slow
def test_metadata_reader_equals_python_twin(molecule_run, tmp_path):
    d, ds, _ = molecule_run
    for name, fmap in (("plain.pth", StdMap.scale(1.0)), ("iso.pth", ISOTONIC)):
        path = _exported_with_calibration(d, name, fmap, StdMap.scale(0.7))
        extra = {"bnnmd.txt": ""}
        torch.jit.load(str(path), _extra_files=extra)
        text = extra["bnnmd.txt"].decode()
        assert read_metadata(path) == reference_metadata(text) == cpp_metadata(_core.Evaluator(str(path)))
        assert read_metadata(path)["calibration_forces"] == fmap


ISOTONIC = StdMap("isotonic", (0.5, 1.0, 2.5), (1.8, 1.2, 0.9))


def _exported_with_calibration(d, name, forces, energy):
    (d / "samples" / "calibration.json").write_text(json.dumps(
        {"format": 1, "forces": forces.to_dict(), "energy": energy.to_dict()}))
    try:
        return export(d / "samples", d / name)
    finally:
        (d / "samples" / "calibration.json").unlink()


@pytest.mark.parametrize("fmap, emap", [pytest.param(StdMap.scale(1.7), StdMap.scale(0.6), marks=pytest.mark.slow),
                                        (ISOTONIC, StdMap("isotonic", (0.3, 0.9), (2.0, 0.7)))],
                         ids=["scale", "isotonic"])
def test_aggregation_equals_numpy_reference(molecule_run, fmap, emap):
    d, ds, model = molecule_run
    path = _exported_with_calibration(d, f"cal_{fmap.kind}.pth", fmap, emap)
    ev = _core.Evaluator(str(path))
    meta = cpp_metadata(ev)
    assert meta["calibration_forces"] == fmap and meta["calibration_energy"] == emap
    rng = np.random.default_rng(0)
    forces, sig = rng.normal(scale=0.3, size=(5, 7, 3)), rng.uniform(0.05, 3, size=(5, 7))
    got, want = ev.force_stats(forces, sig), reference_force_stats(forces, sig, fmap)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-13)
        np.testing.assert_allclose(force_stats(forces, sig, fmap)[key], want[key], rtol=1e-13)
    for trial in range(6):  # energies whose total std falls below, between and above the knots
        e, es = rng.normal(scale=0.2 * trial, size=5), rng.uniform(0.05, 0.3 * (trial + 1), 5)
        got, want = ev.energy_stats(e, es), reference_energy_stats(e, es, emap)
        for key in want:
            assert got[key] == pytest.approx(want[key], rel=1e-13)
            assert energy_stats(e, es, emap)[key] == pytest.approx(want[key], rel=1e-13)
    if fmap.kind == "isotonic":  # the map really acts: factors differ across atoms
        ratio = ev.force_stats(forces, sig)["forces_std"] / force_stats(forces, sig)["forces_std"]
        assert ratio.max() - ratio.min() > 0.2 and 0.9 - 1e-12 <= ratio.min() and ratio.max() <= 1.8 + 1e-12


def test_calibration_map_factor_equals_python_twin():
    s = np.concatenate([[0.0, 0.5, 1.0, 2.5], np.random.default_rng(3).uniform(0, 4, 500)])
    for m in (StdMap.scale(0.8), ISOTONIC, StdMap("isotonic", (1e-3,), (3.0,))):
        np.testing.assert_allclose(_core.calibration_factor(m.to_text(), s), m.factor_at(s), rtol=1e-14)
    # the calibrated std c(s) s is continuous and non-decreasing for a map with increasing g at the knots
    g = ISOTONIC.factor_at(np.sort(s)) * np.sort(s)
    assert np.all(np.diff(g) >= -1e-12)


@pytest.mark.slow
def test_isotonic_knots_follow_the_evaluator_units(molecule_run):
    d, ds, _ = molecule_run
    path = _exported_with_calibration(d, "cal_units.pth", ISOTONIC, StdMap.scale(1.0))
    native, ev = _core.Evaluator(str(path)), _core.Evaluator(str(path), energy_unit="eV", length_unit="nm")
    f = units.energy_factor("kcal/mol", "eV") / units.length_factor("A", "nm")
    rng = np.random.default_rng(1)
    forces, sig = rng.normal(size=(4, 9, 3)), rng.uniform(0.1, 2, size=(4, 9))
    a, b = native.force_stats(forces, sig), ev.force_stats(forces * f, sig * f)
    np.testing.assert_allclose(b["forces_std"], a["forces_std"] * f, rtol=1e-12)
    np.testing.assert_allclose(b["forces_std"], force_stats(forces * f, sig * f, ISOTONIC.in_units(f))["forces_std"],
                               rtol=1e-12)
    # the NumPy twin with the knots in the model's units, its std converted after
    np.testing.assert_allclose(b["forces_std"], reference_force_stats(forces, sig, ISOTONIC)["forces_std"] * f,
                               rtol=1e-12)
    # hand check of the definition: two samples, one atom
    r = force_stats(np.array([[[1.0, 0, 0]], [[3.0, 0, 0]]]), np.array([[2.0], [2.0]]))
    assert r["forces_std_epistemic"][0] == pytest.approx(np.sqrt(1.0 / 3))  # var 1 in x, 0 in y, z
    assert r["forces_std_aleatoric"][0] == pytest.approx(2.0)
    assert r["forces_std"][0] == pytest.approx(np.sqrt(4 + 1.0 / 3))


@pytest.mark.slow
def test_ase_backends_agree_with_an_isotonic_calibration(molecule_run):
    d, ds, _ = molecule_run
    # knots in the model units (kcal/mol/A, kcal/mol), where this untrained model's stds fall
    fmap, emap = StdMap("isotonic", (20.0, 23.0, 26.0), (1.5, 1.0, 0.8)), StdMap("isotonic", (0.01, 0.1), (2.0, 0.5))
    (d / "samples" / "calibration.json").write_text(json.dumps(
        {"format": 1, "forces": fmap.to_dict(), "energy": emap.to_dict()}))
    try:
        path = export(d / "samples", d / "iso_ase.pth")
        results = []
        for model, backend in ((path, "core"), (d / "samples", "python")):
            atoms = ds.to_ase(0)
            atoms.calc = BNNCalculator(model, backend=backend)
            atoms.get_potential_energy()
            results.append(atoms.calc.results)
    finally:
        (d / "samples" / "calibration.json").unlink()
    core, py = results
    for key in ("energy_std", "forces_std", "forces_std_epistemic", "forces_std_aleatoric"):
        np.testing.assert_allclose(core[key], py[key], rtol=1e-10)
    # both aggregate their samples (eV) with the C++ core: check each against the NumPy twin, which
    # applies the maps in the model's units (kcal/mol, kcal/mol/A), where their knots are
    e = kcal / mol
    for res in results:
        s = res["samples"]
        want = {**reference_energy_stats(s["total_energy"] / e, s["total_energy_std"] / e, emap),
                **reference_force_stats(s["forces"] / e, s["forces_std"] / e, fmap)}
        for key, value in want.items():
            np.testing.assert_allclose(res[key], np.asarray(value) * e, rtol=1e-10, atol=1e-12, err_msg=key)
    raw = force_stats(core["samples"]["forces"], core["samples"]["forces_std"])["forces_std"]
    assert np.ptp(core["forces_std"] / raw) > 0.01  # the map acts, differently per atom


@pytest.mark.slow
def test_units_table_matches_python_and_conversion(molecule_run):
    table = _core.units_table()  # against ase.units (bnnmd.units reads this same table)
    assert table["energy"] == pytest.approx({"eV": 1.0, "meV": 1e-3, "kcal/mol": kcal / mol, "kJ/mol": kJ / mol,
                                             "Hartree": Hartree}, rel=1e-15)
    assert table["length"] == pytest.approx({"A": 1.0, "nm": 10.0, "Bohr": ase.units.Bohr}, rel=1e-15)
    d, ds, _ = molecule_run
    path = export(d / "samples", d / "u.pth")
    native = _core.Evaluator(str(path))
    ev = _core.Evaluator(str(path), energy_unit="eV", length_unit="nm")
    assert ev.cutoff == pytest.approx(CUTOFF / 10)
    f, types, g = _inputs(ds, 1)
    a = native.compute(f["positions"], types, g.edge_index, g.shift_vector, 9)
    b = ev.compute(f["positions"] / 10, types, g.edge_index, g.shift_vector / 10, 9)
    ke = units.energy_factor("kcal/mol", "eV")
    assert b["energy"] == pytest.approx(a["energy"] * ke, rel=1e-13)
    np.testing.assert_allclose(b["forces"], a["forces"] * ke * 10, rtol=1e-12)
    np.testing.assert_allclose(b["forces_std"], a["forces_std"] * ke * 10, rtol=1e-12)


@pytest.mark.slow
def test_select_k_and_float32(molecule_run):
    d, ds, model = molecule_run
    p = export(d / "samples", d / "k2.pth", k=2)
    assert read_metadata(p)["num_samples"] == 2
    p = export(d / "samples", d / "sel.pth", select=[2])
    f, types, g = _inputs(ds, 0)
    one = _core.Evaluator(str(p)).compute(f["positions"], types, g.edge_index, g.shift_vector, 9)["samples"]
    full = _core.Evaluator(str(export(d / "samples", d / "all.pth"))).compute(
        f["positions"], types, g.edge_index, g.shift_vector, 9)["samples"]
    np.testing.assert_allclose(one["forces"][0], full["forces"][2], rtol=1e-12, atol=1e-12)
    p32 = export(d / "samples", d / "f32.pth", dtype="float32", freeze=True)
    r32 = _core.Evaluator(str(p32)).compute(f["positions"], types, g.edge_index, g.shift_vector, 9)["samples"]
    np.testing.assert_allclose(r32["forces"], full["forces"], atol=1e-2 * np.abs(full["forces"]).max())


def test_mc_dropout_export_uses_k_masks(tmp_path):
    ds = bundled_dataset("rmd17_ethanol_train").subset(range(5))
    write_samples(tmp_path / "samples", ds, k=1, method="mc_dropout", dropout=0.2)
    p = export(tmp_path / "samples", tmp_path / "mc.pth", k=6)
    ev = _core.Evaluator(str(p))
    assert ev.metadata["num_samples"] == 6 and ev.metadata["method"] == "mc_dropout"
    f, types, g = _inputs(ds, 0)
    e = ev.compute(f["positions"], types, g.edge_index, g.shift_vector, 9)["samples"]["total_energy"]
    assert len(set(np.round(e, 10))) > 1  # different masks, same parameters


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["core", "python"])
def test_ase_forces_stress_and_nve(periodic_run, backend):
    d, ds, model = periodic_run
    path = export(d / "samples", d / "ase.pth")
    calc = BNNCalculator(path if backend == "core" else d / "samples", backend=backend)
    atoms = ds.to_ase(0)
    atoms.calc = calc
    forces = atoms.get_forces()
    e0 = atoms.get_potential_energy()
    kcal = units.energy_factor("kcal/mol", "eV")
    eager = model(GraphDataset(ds, TypeMapper(TYPES), CUTOFF).batch([0]))
    assert e0 == pytest.approx(eager[K.TOTAL_ENERGY].mean().item() * kcal, rel=1e-12)
    assert calc.results["forces_std"].shape == (10,) and (calc.results["forces_std"] > 0).all()
    # forces: finite differences of the energy
    eps = 1e-5
    for a, c in ((0, 0), (3, 2)):
        e = []
        for sgn in (1, -1):
            moved = atoms.copy()
            moved.calc = calc
            moved.positions[a, c] += sgn * eps
            e.append(moved.get_potential_energy())
        assert forces[a, c] == pytest.approx(-(e[0] - e[1]) / (2 * eps), rel=1e-5, abs=1e-7)
    # stress: finite differences under strain
    stress = atoms.get_stress(voigt=False)
    for (i, j) in ((0, 0), (1, 2)):
        assert stress[i, j] == pytest.approx(strain_derivative(atoms, i, j) / atoms.get_volume(), rel=1e-5, abs=1e-8)


@pytest.fixture(scope="module")
def stress_run(tmp_path_factory):
    """A periodic model (triclinic cells) with a virial sigma head, exported to TorchScript."""
    d = tmp_path_factory.mktemp("stress")
    ds = periodic_dataset(2, 10, seed=5)
    model = write_samples(d / "samples", ds, seed=2, stress_std=True)
    return d, ds, model.eval(), export(d / "samples", d / "model.pth")


VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]  # ASE's order: xx yy zz yz xz xy


@pytest.mark.parametrize("backend", ["core", "python"])
def test_stress_std_of_a_model_with_a_stress_head(stress_run, backend):
    """The calculator's stress and pressure stds are the NumPy twin's moments of the eager model's samples / V;
    the stress itself is still the strain derivative of the energy (finite differences, triclinic cell)."""
    d, ds, model, path = stress_run
    calc = BNNCalculator(path if backend == "core" else d / "samples", backend=backend)
    atoms = ds.to_ase(0)
    assert abs(atoms.cell.array[1, 0]) > 0.5  # triclinic
    atoms.calc = calc
    stress = atoms.get_stress()
    eager = model(GraphDataset(ds, TypeMapper(TYPES), CUTOFF).batch([0]))
    kcal = units.energy_factor("kcal/mol", "eV")
    w, sw = eager[K.VIRIAL][:, 0].detach().numpy() * kcal, eager[K.VIRIAL_STD][:, 0].detach().numpy() * kcal
    np.testing.assert_allclose(calc.results["samples"]["virial_std"], sw, rtol=1e-12)
    want, volume, r = reference_virial_stats(w, sw), atoms.get_volume(), calc.results
    np.testing.assert_allclose(stress, [-want["virial"][i, j] / volume for i, j in VOIGT], rtol=1e-10, atol=1e-14)
    for part in ("", "_epistemic", "_aleatoric"):
        np.testing.assert_allclose(r["stress_std" + part], [want["virial_std" + part][i, j] / volume for i, j in VOIGT],
                                   rtol=1e-10, err_msg=part)
        assert r["pressure_std" + part] == pytest.approx(want["pressure_volume_std" + part] / volume, rel=1e-10)
        assert r["stress_std" + part].shape == (6,) and isinstance(r["pressure_std" + part], float)
    # both parts matter here: k = 3 samples that differ, and a head that is not 0
    assert r["pressure_std_epistemic"] > 0.05 * r["pressure_std"] and r["pressure_std_aleatoric"] > 0.05 * r[
        "pressure_std"]
    np.testing.assert_allclose(r["stress_std"] ** 2, r["stress_std_epistemic"] ** 2 + r["stress_std_aleatoric"] ** 2,
                               rtol=1e-12)
    for i, j in ((0, 1), (2, 2)):
        assert atoms.get_stress(voigt=False)[i, j] == pytest.approx(strain_derivative(atoms, i, j) / volume, rel=1e-5,
                                                                    abs=1e-8)


@compile_mode("script")
class DeployedModelBeforeVirialStd(torch.nn.Module):
    """The 6-output module of bnnmd before virial_std: DeployedModel's dict without it."""

    def __init__(self, model):
        super().__init__()
        self.deployed = DeployedModel(model)

    def forward(self, pos: torch.Tensor, atom_type: torch.Tensor, edge_index: torch.Tensor, edge_shift: torch.Tensor,
                num_local: int) -> Dict[str, torch.Tensor]:
        out = self.deployed(pos, atom_type, edge_index, edge_shift, num_local)
        out.pop("virial_std")
        return out


def _export_before_virial_std(samples, out, monkeypatch):
    """``samples`` exported as bnnmd did before virial_std (a TorchScript dict without it)."""
    with monkeypatch.context() as m:
        m.setattr(bnnmd.deploy._export, "DeployedModel", DeployedModelBeforeVirialStd)
        return export(samples, out)


@pytest.mark.slow
def test_a_file_exported_before_virial_std_runs_with_zeros(stress_run, monkeypatch):
    d, ds, model, path = stress_run
    old = _export_before_virial_std(d / "samples", d / "v1.pth", monkeypatch)
    f, types, g = _inputs(ds, 1)
    args = (torch.tensor(f["positions"]), torch.tensor(types), torch.tensor(g.edge_index),
            torch.tensor(g.shift_vector), len(types))
    assert sorted(torch.jit.load(str(old))(*args)) == sorted(_core.output_keys[:6])
    assert sorted(torch.jit.load(str(path))(*args)) == sorted(_core.output_keys)
    args = (f["positions"], types, g.edge_index, g.shift_vector, len(types))
    got, want = _core.Evaluator(str(old)).compute(*args), _core.Evaluator(str(path)).compute(*args)
    assert (want["samples"]["virial_std"] > 0).all() and not got["samples"]["virial_std"].any()
    assert got["samples"]["virial_std"].shape == (3,)
    for key in want["samples"]:
        if key != "virial_std":
            np.testing.assert_array_equal(got["samples"][key], want["samples"][key], err_msg=key)
    np.testing.assert_array_equal(got["virial_std_epistemic"], want["virial_std_epistemic"])
    assert not got["virial_std_aleatoric"].any() and got["pressure_volume_std_aleatoric"] == 0
    atoms = ds.to_ase(1)
    atoms.calc = BNNCalculator(old)
    atoms.get_stress()
    r = atoms.calc.results
    assert not r["stress_std_aleatoric"].any() and r["pressure_std_aleatoric"] == 0
    np.testing.assert_array_equal(r["stress_std"], r["stress_std_epistemic"])
    assert r["pressure_std"] == r["pressure_std_epistemic"] > 0


@pytest.mark.slow
def test_ase_nve_conserves_energy(molecule_run):
    d, ds, _ = molecule_run
    atoms = ds.to_ase(0)
    atoms.calc = BNNCalculator(export(d / "samples", d / "nve.pth"))
    from ase.md.velocitydistribution import thermalize_momenta

    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.25 * fs)
    etot = []
    for _ in range(40):
        dyn.run(5)
        etot.append(atoms.get_total_energy())
    drift = max(etot) - min(etot)
    ekin = atoms.get_kinetic_energy()
    assert drift < 0.01 * ekin, (drift, ekin)


@pytest.mark.slow
def test_bad_input_messages(tmp_path, molecule_run, periodic_run):
    d, ds, _ = molecule_run
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ExportError, match="no sample_XXX.pt files"):
        export(empty, tmp_path / "x.pth")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_samples(mixed, ds, k=1)
    write_samples(tmp_path / "m2", ds, k=1, num_basis=5)
    (mixed / "sample_002.pt").write_bytes((tmp_path / "m2" / "sample_000.pt").read_bytes())
    with pytest.raises(ExportError, match="sample_002.pt differs from sample_000.pt in num_basis"):
        export(mixed, tmp_path / "x.pth")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "sample_000.pt").write_bytes(b"garbage")
    with pytest.raises(ExportError, match=r"not a bnnmd sample file \(unreadable or damaged\)") as info:
        export(bad, tmp_path / "x.pth")
    assert "weights_only" not in str(info.value)  # torch's advice to unpickle anything is not for users
    with pytest.raises(ExportError, match=r"k = 9: \w+ wrote 3 sample\(s\); use --k 3 or fewer"):
        export(d / "samples", tmp_path / "x.pth", k=9)
    # the C++ side: missing, foreign, unknown format version
    with pytest.raises(RuntimeError, match="cannot be opened"):
        _core.Evaluator(str(tmp_path / "missing.pth"))
    (tmp_path / "text.pth").write_text("hello")
    with pytest.raises(RuntimeError, match="not a TorchScript archive"):
        _core.Evaluator(str(tmp_path / "text.pth"))
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "foreign.pth"))
    with pytest.raises(RuntimeError, match="not a bnnmd model .*bnn-export"):
        _core.Evaluator(str(tmp_path / "foreign.pth"))
    good = export(d / "samples", tmp_path / "good.pth")
    m = torch.jit.load(str(good))
    meta = read_metadata(good)
    meta["format_version"] = _core.format_version + 1
    torch.jit.save(m, str(tmp_path / "vnext.pth"), _extra_files={"bnnmd.txt": metadata_to_text(meta)})
    with pytest.raises(RuntimeError, match=f"format version {_core.format_version + 1} is unknown to this bnnmd "
                                           ".*re-export"):
        _core.Evaluator(str(tmp_path / "vnext.pth"))
    meta["format_version"] = _core.format_version
    for text, match in [("isotonic 2.0:1.0 1.0:1.0", "knots must be positive and strictly increasing"),
                        ("isotonic 1.0:-1", "factors must be positive"), ("scale x", "'x' is not a number"),
                        ("quantile 1.0", "unknown calibration kind 'quantile'")]:
        lines = [f"calibration_forces {text}" if line.startswith("calibration_forces") else line
                 for line in metadata_to_text(meta).splitlines()]
        torch.jit.save(m, str(tmp_path / "badcal.pth"), _extra_files={"bnnmd.txt": "\n".join(lines) + "\n"})
        with pytest.raises(RuntimeError, match=f"calibration_forces.*{match}.*re-export"):
            _core.Evaluator(str(tmp_path / "badcal.pth"))
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="torch sees no CUDA GPU"):
            _core.Evaluator(str(good), device="cuda")
    with pytest.raises(RuntimeError, match="unknown device 'gpu'"):
        _core.Evaluator(str(good), device="gpu")
    with pytest.raises(RuntimeError, match="unknown energy unit 'kcal'"):
        _core.Evaluator(str(good), energy_unit="kcal")


@pytest.mark.slow
def test_cli(tmp_path, molecule_run):
    d, _, _ = molecule_run
    r = subprocess.run([sys.executable, "-m", "bnnmd.cli.export", str(d / "samples"), str(tmp_path / "m.pth"),
                        "--k", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "k=2 samples" in r.stdout and "ghost cutoff 7.0 A" in r.stdout
    r = subprocess.run([sys.executable, "-m", "bnnmd.cli.export", str(tmp_path), str(tmp_path / "m.pth")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "no sample_XXX.pt files" in r.stderr
    # an output path that cannot be written (its "directory" is a file): one line, exit 2, no traceback
    (tmp_path / "afile").write_text("")
    r = subprocess.run([sys.executable, "-m", "bnnmd.cli.export", str(d / "samples"),
                        str(tmp_path / "afile" / "m.pth")], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert r.stderr.startswith("bnn-export: error:") and "afile" in r.stderr and "Traceback" not in r.stderr
    assert f"{tmp_path / 'afile'} is a file, not a directory; give a path in a directory" in r.stderr


# ---- the metadata format: one definition in C++ (keys, writer, reader), checked against the Python twin ----
AWKWARD = StdMap("isotonic", (1e-300, 0.1 + 0.2, 1 / 3, 2.5, 1e17), (1 / 3, 1e-300, 0.1 + 0.2, 1.0, 7e22))
FULL_META = {
    "format_version": _core.format_version, "type_names": ["H", "C", "O"], "cutoff": 0.1 + 0.2, "num_layers": 2,
    "num_samples": 4, "energy_unit": "kcal/mol", "length_unit": "A", "dtype": "float64",
    "calibration_forces": AWKWARD, "calibration_energy": StdMap.scale(1 / 3), "method": "sghmc",
    "samples_sha256": "ab" * 32, "bnnmd_version": "0.1.0", "torch_version": "2.13.0+cpu",
    "halt_threshold": 1 / 3, "halt_rule": "median:1.5: 1.5 x the median of 6 frames' max std",
}


@pytest.mark.parametrize("optional", [True, False], ids=["with_halt", "without_halt"])
def test_metadata_writer_round_trips(optional):
    from bnnmd.posterior import METADATA_KEYS, OPTIONAL_METADATA_KEYS, parse_metadata

    meta = dict(FULL_META) if optional else {k: v for k, v in FULL_META.items() if k in METADATA_KEYS}
    text = metadata_to_text(meta)
    assert [line.split(" ")[0] for line in text.splitlines()] == list(
        METADATA_KEYS + (OPTIONAL_METADATA_KEYS if optional else ()))
    # the independent Python reader and the C++ reader both give back every value, floats bit for bit
    assert reference_metadata(text) == meta == parse_metadata(text)
    assert text.splitlines()[8] == "calibration_forces isotonic " + " ".join(
        f"{s!r}:{c!r}" for s, c in zip(AWKWARD.std, AWKWARD.factor))
    # the dict form that _core.parse_metadata returns is accepted as it is
    d = _core.parse_metadata(text)
    assert _core.metadata_to_text(d) == text and _core.parse_metadata(_core.metadata_to_text(d)) == d
    # None is "not known" for an optional key
    assert metadata_to_text(dict(meta, halt_threshold=None, halt_rule=None)) == metadata_to_text(
        {k: v for k, v in meta.items() if k in METADATA_KEYS})


def test_metadata_floats_are_written_as_python_repr():
    """Every double is written as repr writes it: the shortest text that float() reads back exactly."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.integers(0, 2 ** 63, 2000, dtype=np.int64).view(np.float64),
                             [0.0, -0.0, 1e16, 1e15, 1e-4, 1e-5, 5e-324, 1.7976931348623157e308, 100000.0]])
    for x in values[np.isfinite(values)]:
        line = metadata_to_text(dict(FULL_META, cutoff=float(x))).splitlines()[2]
        assert line == f"cutoff {float(x)!r}" and float(line.split()[1]) == x


def test_metadata_writer_errors():
    from bnnmd.posterior import EXTRA_FILE

    assert EXTRA_FILE == _core.metadata_file == "bnnmd.txt"
    with pytest.raises(ValueError, match="^metadata lacks cutoff, dtype$"):
        metadata_to_text({k: v for k, v in FULL_META.items() if k not in ("cutoff", "dtype")})
    with pytest.raises(ValueError, match="^metadata lacks method$"):
        metadata_to_text(dict(FULL_META, method=None))
    for key, value in (("method", "sghmc\nnum_samples 9"), ("halt_rule", "a\rb"), ("energy_unit", ""),
                       ("halt_rule", "")):
        with pytest.raises(ValueError, match=f"metadata value of {key} must be a non-empty single line"):
            metadata_to_text(dict(FULL_META, **{key: value}))
    with pytest.raises(ValueError, match="type_names holds 'C O': each must be non-empty, without spaces"):
        metadata_to_text(dict(FULL_META, type_names=["H", "C O"]))
    with pytest.raises(ValueError, match="metadata value of num_layers = 'two' has the wrong type"):
        metadata_to_text(dict(FULL_META, num_layers="two"))
    with pytest.raises(ValueError, match="calibration_energy = 0.7 is not a calibration map"):
        metadata_to_text(dict(FULL_META, calibration_energy=0.7))
    with pytest.raises(ValueError, match="a scale map needs as many knots as factors"):
        metadata_to_text(dict(FULL_META, calibration_energy={"kind": "scale", "std": [1.0], "factor": [1.0, 2.0]}))


def test_output_order_comes_from_the_core(molecule_run):
    """The .pt2 graph's output order is the C++ evaluator's; the TorchScript dict has exactly those keys."""
    from bnnmd.deploy import DeployedModel
    from bnnmd.deploy._pt2 import OUTPUT_KEYS

    d, ds, model = molecule_run
    assert OUTPUT_KEYS == _core.output_keys == (K.TOTAL_ENERGY, K.ATOMIC_ENERGY, K.FORCES, K.TOTAL_ENERGY_STD,
                                                K.FORCES_STD, K.VIRIAL, K.VIRIAL_STD)
    f, types, g = _inputs(ds, 0)
    out = DeployedModel(model)(torch.tensor(f["positions"]), torch.tensor(types), torch.tensor(g.edge_index),
                               torch.tensor(g.shift_vector), len(types))
    assert sorted(out) == sorted(OUTPUT_KEYS)
