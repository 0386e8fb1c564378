"""bnn-learn on a periodic box (issue 26, item 2): the bundled GFN2-xTB water, a tiny model trained
on stresses, the built-in heating recipe in the box's own cell, labels with stresses from tblite
(GFN1-xTB: cheap), and a fine-tuning on the old frames plus the labelled ones with their cells."""

import json

import ase.io
import numpy as np
import pytest

from bnnmd.data import bundled_dataset, read_dataset
from bnnmd.label import LABEL_UNITS, TBLiteLabeller
from bnnmd.learn import ActiveLearning, LearnConfig, LearnError, heating_input
from bnnmd.train import TrainConfig, train
from bnnmd.units import energy_factor, force_factor

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
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return d


@pytest.mark.slow
def test_periodic_round_with_stress_labels(water_run, tmp_path):
    out = tmp_path / "out"
    cfg = water_config(water_run, finetune={"new_frame_weight": 3})
    rep = ActiveLearning(LearnConfig.from_dict(cfg), out).run()
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
    # the fine-tuning: the 12 old frames (with stresses) and the 2 new ones (finetune.new_frame_weight: 3
    # times each), the old validation frames
    split = json.loads((out / "round_01" / "split.json").read_text())
    assert split["train"]["n"] == 12 + 2 * 3 and split["val"]["n"] == 3
    assert sorted(split["train"]["indices"]) == list(range(12)) + [12, 12, 12, 13, 13, 13]
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


@pytest.mark.slow
def test_pressure_halt_matches_its_python_twin(water_run, tmp_path, capsys):
    """md.halt_pressure: the calibration's pressure statistics are the C++ core's pressure std of the
    validation frames (BNNCalculator), the rule's threshold is 1.5 x their median, and the built-in
    recipe halts on c_unc[6] where the Python twin (the pressure std of the dumped frames, in atm)
    first passes a threshold, with the force halt out of the way (md.threshold 1e6)."""
    from bnnmd.analysis import frame_atoms, read_trajectory
    from bnnmd.calculator import BNNCalculator
    from bnnmd.data import Split
    from bnnmd.learn import run_md
    from bnnmd.learn._loop import lammps_pressure

    out = tmp_path / "out"
    cfg = LearnConfig.from_dict(water_config(water_run, md={"threshold": 1e6, "halt_pressure": "median:1.5",
                                                            "nsteps": 60}))
    al = ActiveLearning(cfg, out)
    al._export(0)
    model = out / "round_00" / "model.pth"
    calc = BNNCalculator(str(model))
    val = Split.load(water_run / "run" / "split.json").val.load()

    def pressure_std(atoms):
        atoms.calc = calc
        atoms.get_forces()
        return calc.results["pressure_std"]

    pval = [pressure_std(val.to_ase(i)) for i in range(len(val))]
    thr = al.state.round(0).threshold_pressure
    assert thr == pytest.approx(1.5 * np.median(pval), rel=1e-6) and thr > 0
    # along a run without the halt: LAMMPS' pressure ratio at each check (thermo every 10 steps) against
    # the Python twin on the dumped frame (6 digits of the positions), in LAMMPS' atm
    atoms = al.start_structure()
    atm = lammps_pressure(model, 1.0)
    assert run_md(model, atoms, tmp_path / "free", cfg.md, halt=False, pressure_threshold=thr) is None
    traj = read_trajectory(tmp_path / "free" / "traj.dump", data=tmp_path / "free" / "system.data",
                           elements=["H", "O"])
    p = {int(s): pressure_std(frame_atoms(traj, f, True)) for f, s in enumerate(traj.steps)}
    log = {}
    for line in (tmp_path / "free" / "log.lammps").read_text().splitlines():
        w = line.split()
        if len(w) == 6 and w[0].isdigit():  # step temp pe c_unc[4] c_unc[5] v_pratio
            log[int(w[0])] = float(w[5])
    assert sorted(log) == sorted(p) == [0, 10, 20, 30, 40, 50, 60]
    for step, v in p.items():
        assert log[step] == pytest.approx(v * atm / (thr * atm), rel=1e-4), step
    # the halt fires at the first check whose ratio passes 1, and not at all when none does
    checks = {s: v for s, v in p.items() if s > 0}
    for factor in (0.9999, 1.0001):
        limit = factor * float(max(checks.values()))
        twin = min((s for s, v in checks.items() if v > limit), default=None)
        assert run_md(model, atoms, tmp_path / f"halt{factor}", cfg.md, pressure_threshold=limit) == twin
    assert twin is None
    text = (tmp_path / "halt1.0001" / "in.lmp").read_text()
    assert f"variable pratio equal c_unc[6]/{lammps_pressure(model, limit)!r}" in text
    assert "variable ratio equal ternary(v_fratio>v_pratio,v_fratio,v_pratio)" in text
    # bnn-export prints the same threshold, in the model's unit and LAMMPS' atm, for hand-written inputs
    from bnnmd.cli.export import main as export_main

    assert export_main([str(out / "round_00" / "run" / "samples"), str(tmp_path / "m.pth")]) == 0
    printed = capsys.readouterr().out
    assert f"pressure-std halt threshold {thr:.6g} eV/A^3 = {lammps_pressure(model, thr):.6g} atm (units real)" in printed
    for bad in ("rmse:3", "median", -1.0):
        with pytest.raises(LearnError, match="md.halt_pressure = .*: give a rule on the validation frames' pressure"):
            LearnConfig.from_dict(water_config(water_run, md={"halt_pressure": bad}))


def otf_config(water_run, **over):
    return water_config(water_run, **{"rounds": 2, "max_dft_calls": 4, "otf": {"restart_every": 20},
                                      "md": {"mode": "otf", "nsteps": 60}, **over})


def thermo_rows(log):
    """(step, temp, pe) of every thermo row of a LAMMPS log."""
    rows = []
    for line in log.read_text().splitlines():
        w = line.split()
        if len(w) == 5 and w[0].isdigit():
            rows.append((int(w[0]), float(w[1]), float(w[2])))
    return rows


def dump_steps(path):
    lines = path.read_text().splitlines()
    return [int(lines[i + 1]) for i, line in enumerate(lines) if line.startswith("ITEM: TIMESTEP")]


@pytest.mark.slow
def test_otf_swaps_the_model_and_continues_the_trajectory(water_run, tmp_path):
    """md.mode otf with a forced threshold: every check is an event; the model is fine-tuned and swapped
    into the running LAMMPS, whose step numbers go on and whose atoms keep their velocities; when the
    event budget (rounds: 2) is spent, the next check halts the run."""
    import ase.io

    from bnnmd.calculator import BNNCalculator
    from bnnmd.learn import OnTheFly

    out = tmp_path / "out"
    # a tolerance every event meets at once: one fine-tuning each, as without one
    rep = OnTheFly(LearnConfig.from_dict(otf_config(water_run, otf={"tolerance": 50.0, "finetunes": 3})), out).run()
    assert rep["status"].startswith("halted at step 30: the uncertainty passed the threshold and the budget is spent")
    assert [e["step"] for e in rep["events"]] == [10, 20] and rep["dft_calls"] == 2
    assert [e["finetunes"] for e in rep["events"]] == [1, 1] and not (out / "round_01" / "run_2").exists()
    assert dump_steps(out / "otf" / "traj.dump") == [0, 10, 20, 30]  # one trajectory, no frame twice
    log = (out / "otf" / "log.lammps").read_text()
    assert log.count("velocity all create") == 1 and "read_restart" not in log
    for r in (1, 2):  # the swaps: pair_coeff with each new model, in the same LAMMPS
        assert f"pair_coeff * * {(out / f'round_0{r}' / 'model.pth').resolve()} H O" in log
    rows = thermo_rows(out / "otf" / "log.lammps")
    for step in (10, 20):  # old model at the end of the chunk, new one after the swap: same velocities
        at = [row for row in rows if row[0] == step]
        assert len(at) >= 2 and len({t for _, t, _ in at}) == 1, at
        assert at[0][2] != pytest.approx(at[-1][2], abs=1e-3)  # another model: another energy
    # Python twin of the ratio after each swap: the new model's largest per-atom std at the event's frame
    for e in rep["events"]:
        atoms = ase.io.read(out / f"round_0{e['event']}" / "event.extxyz")
        assert atoms.info["step"] == e["step"] and atoms.pbc.all()
        atoms.calc = BNNCalculator(str(out / f"round_0{e['event'] + 1}" / "model.pth"))
        forces = atoms.get_forces()
        assert e["ratio_after"] == pytest.approx(atoms.calc.results["forces_std"].max() / 1e-6, rel=1e-4)
        # the largest per-atom error on the labelled frame, new model against GFN1-xTB (eV/A)
        label = read_dataset(out / f"round_0{e['event']}" / "labels.extxyz")
        err = np.linalg.norm(forces - label.forces, axis=1).max() / np.sqrt(3)
        assert e["error_after"] == pytest.approx(err, rel=1e-4, abs=1e-6) and e["error_before"] > 0
        assert e["ratio_after"] != pytest.approx(e["ratio_before"], rel=1e-6) and e["seconds"] > 0
    labels = read_dataset(out / "round_01" / "labels.extxyz")
    assert len(labels) == 1 and labels.stress is not None
    assert len(read_dataset(out / "round_02" / "data.extxyz")) == 12 + 2
    assert "## on-the-fly events" in (out / "report.md").read_text()


@pytest.mark.slow
def test_otf_fine_tunes_again_above_the_tolerance_then_halts(water_run, tmp_path):
    """otf.tolerance: while the error on the event's labelled frame is above it, the posterior is
    fine-tuned again from where the last fine-tuning ended; still above after otf.finetunes, the run
    halts at the event's step and the unlearned model is never swapped in."""
    import ase.io
    import yaml

    from bnnmd.calculator import BNNCalculator
    from bnnmd.learn import OnTheFly

    out = tmp_path / "out"
    cfg = LearnConfig.from_dict(otf_config(water_run, otf={"tolerance": 1e-6, "finetunes": 2}))
    rep = OnTheFly(cfg, out).run()
    assert rep["status"].startswith("halted at step 10: after 2 fine-tuning(s) the largest per-atom force error on "
                                    "event 0's labelled frames is ")
    assert "> otf.tolerance 1e-06" in rep["status"]
    (e,) = rep["events"]
    assert e["finetunes"] == 2 and e["error_after"] == e["finetune_errors"][1] and rep["dft_calls"] == 1
    assert e["finetune_errors"][0] != pytest.approx(e["finetune_errors"][1], rel=1e-6)  # another model
    second = yaml.safe_load((out / "round_01" / "run_2" / "config.yaml").read_text())
    assert second["training"]["prior_centre"] == str(out / "round_01" / "run" / "samples")  # on from the first
    assert second["data"]["split"] == str(out / "round_01" / "split.json")  # the same frames
    # round_01/model.pth is the second fine-tuning's: its error on the labelled frame is the one reported
    atoms = ase.io.read(out / "round_00" / "event.extxyz")
    atoms.calc = BNNCalculator(str(out / "round_01" / "model.pth"))
    label = read_dataset(out / "round_00" / "labels.extxyz")
    err = np.linalg.norm(atoms.get_forces() - label.forces, axis=1).max() / np.sqrt(3)
    assert e["error_after"] == pytest.approx(err, rel=1e-4, abs=1e-6)
    assert dump_steps(out / "otf" / "traj.dump") == [0, 10]  # halted at the event
    assert "round_01" not in (out / "otf" / "log.lammps").read_text()  # never swapped in
    assert OnTheFly(cfg, out, resume=True).run()["status"] == rep["status"]  # a halted run stays halted
    # kill -9 during the second fine-tuning: --resume finishes it (from its checkpoint) to the same numbers
    import os
    import signal
    import subprocess
    import sys
    import time

    cfg_file = tmp_path / "otf.yaml"
    cfg_file.write_text(yaml.safe_dump(otf_config(water_run, otf={"tolerance": 1e-6, "finetunes": 2})))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "bnnmd.cli.learn", str(cfg_file), "--out", str(killed)],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None and not (killed / "round_01" / "run_2" / "log.csv").exists():
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "state.json").read_text())
    assert len(state["rounds"]["0"]["finetune_errors"]) == 1 and state["status"] == "running"
    again = OnTheFly(cfg, killed, resume=True).run()
    assert again["status"] == rep["status"].replace(str(out), str(killed))
    assert again["events"][0]["finetune_errors"] == pytest.approx(e["finetune_errors"], rel=1e-9)
    with pytest.raises(LearnError, match="otf.finetunes = 2: an event fine-tunes again only while its error is above"):
        LearnConfig.from_dict(otf_config(water_run, otf={"finetunes": 2}))
    with pytest.raises(LearnError, match="otf.tolerance = -1: give the largest per-atom force error"):
        LearnConfig.from_dict(otf_config(water_run, otf={"tolerance": -1}))


@pytest.mark.slow
def test_otf_label_forces_drive_the_step_after_the_event(water_run, tmp_path):
    """otf.label_forces: at the event's step LAMMPS holds the labeller's forces (not the new model's),
    and the next step's positions differ from the same run without it by exactly the velocity-Verlet
    displacement of the force difference, dt * (dt/2) * (F_label - F_model) / m; before it nothing differs."""
    from bnnmd.analysis import read_trajectory
    from bnnmd.calculator import BNNCalculator
    from bnnmd.learn import OnTheFly

    reps, trajs = {}, {}
    for on in (True, False):
        out = tmp_path / f"label_forces_{on}"
        cfg = otf_config(water_run, rounds=1, max_dft_calls=2, otf={"label_forces": on},
                         md={"mode": "otf", "nsteps": 30, "dump_every": 1})
        reps[on] = OnTheFly(LearnConfig.from_dict(cfg), out).run()
        trajs[on] = read_trajectory(out / "otf" / "traj.dump", data=out / "otf" / "system.data", elements=["H", "O"])
    (e,) = reps[True]["events"]
    assert e["step"] == 10 and reps[True]["status"].startswith("halted at step 20")
    assert e["label_force_deviation"] < 1e-8 and reps[False]["events"][0]["label_force_deviation"] is None
    # the labeller's forces at the event's frame against the new model's there (eV/A)
    out = tmp_path / "label_forces_True"
    atoms = ase.io.read(out / "round_00" / "event.extxyz")
    label = read_dataset(out / "round_00" / "labels.extxyz").forces
    atoms.calc = BNNCalculator(str(out / "round_01" / "model.pth"))
    diff = (label - atoms.get_forces()) * force_factor("eV/A", "kcal/mol/A")  # LAMMPS real
    assert np.abs(diff).max() > 1.0  # the check above can fail
    a, b = trajs[True], trajs[False]
    assert list(a.steps) == list(b.steps) == list(range(21))
    for step in range(11):
        np.testing.assert_array_equal(a.positions(step), b.positions(step))
    dt, ftm2v = 0.5, 1.0 / 48.88821291 / 48.88821291  # fs; LAMMPS real's force/mass -> A/fs^2
    want = dt * (0.5 * dt * ftm2v) * diff / atoms.get_masses()[:, None]
    got = a.positions(11) - b.positions(11)
    cell = atoms.cell.lengths()
    got -= cell * np.round(got / cell)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(got, want, atol=3e-5)  # the dump's 6 digits


@pytest.mark.slow
def test_otf_resumes_after_kill(water_run, tmp_path):
    """kill -9 in the middle of an event (after its label): --resume finishes the event, reads the restart
    file at the event's step and goes on; the trajectory has every step once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml

    from bnnmd.cli.learn import main

    cfg = tmp_path / "otf.yaml"
    cfg.write_text(yaml.safe_dump(otf_config(water_run)))
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bnnmd.cli.learn", str(cfg), "--out", str(out)],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        state = out / "state.json"
        if state.exists() and "0.label" in json.loads(state.read_text())["done"]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((out / "state.json").read_text())
    assert "0.label" in state["done"] and "1.export" not in state["done"] and state["otf"]["restart_step"] == 10
    assert main([str(cfg), "--out", str(out), "--resume"]) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["status"].startswith("halted at step 30") and state["dft_calls"] == 2
    assert [state["rounds"][r]["event_step"] for r in ("0", "1")] == [10, 20]
    assert all(state["rounds"][r]["ratio_after"] is not None for r in ("0", "1"))
    assert dump_steps(out / "otf" / "traj.dump") == [0, 10, 20, 30]
    log = (out / "otf" / "log.lammps").read_text()
    commands = [line.split()[0] for line in log.splitlines() if line.strip() and not line[0].isspace()]
    assert commands.count("velocity") == 1 and commands.count("read_restart") == 1


def test_otf_config_errors(water_run):
    with pytest.raises(LearnError, match="md.mode = 'live': give rounds"):
        LearnConfig.from_dict(water_config(water_run, md={"mode": "live"}))
    with pytest.raises(LearnError, match="md.runs = 2: md.mode otf drives one trajectory of the built-in recipe"):
        LearnConfig.from_dict(otf_config(water_run, md={"mode": "otf", "runs": 2}))
    with pytest.raises(LearnError, match="md.template = 'in.lmp': md.mode otf drives one trajectory"):
        LearnConfig.from_dict(otf_config(water_run, md={"mode": "otf", "template": "in.lmp"}))
    with pytest.raises(LearnError, match="otf.frames = 0: must be an integer >= 1"):
        LearnConfig.from_dict(otf_config(water_run, otf={"frames": 0}))
