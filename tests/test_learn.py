"""bnn-learn: one tiny round end to end (real LAMMPS, real pyscf with a minimal basis, real
fine-tuning), resume after kill -9, and labeller failures that end in a clear message."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from bnnmd.cli.learn import main
from bnnmd.learn import ActiveLearning, LearnConfig, LearnError
from bnnmd.learn._loop import pick_frames
from helpers import learn_start_run

pytest.importorskip("pyscf")


@pytest.fixture(scope="module")
def start_run(tmp_path_factory):
    return learn_start_run(tmp_path_factory.mktemp("learn_start"))


def learn_config(start_run, **over):
    d = {"start": str(start_run / "run"), "rounds": 1, "max_dft_calls": 4, "test": "bundled:rmd17_ethanol_test",
         "md": {"template": str(start_run / "in.template"), "nsteps": 60, "halt_every": 10, "dump_every": 10,
                "seed": 5},
         # frames every 5 steps, 5 apart: the halt at step 10 leaves 2 to pick from its run's second half
         # (steps 5 and 10) whatever the tiny model's stds against its own threshold
         "select": {"n": 2, "min_gap": 5}, "label": {"basis": "sto-3g", "processes": 1},
         "finetune": {"warm_start_steps": 10, "max_steps": 30, "mass_freeze_step": 5, "burn_in": 10,
                      "sample_interval": 5, "validate_every": 10}}
    for k, v in over.items():
        d[k] = {**d[k], **v} if isinstance(v, dict) else v
    return d


def write_config(path, d):
    path.write_text(yaml.safe_dump(d))
    return path


@pytest.mark.slow
def test_one_round_end_to_end(start_run, tmp_path):
    out = tmp_path / "out"
    rep = ActiveLearning(LearnConfig.from_dict(learn_config(start_run)), out).run()
    assert rep["status"] == "round budget reached (1 fine-tunings)"
    assert rep["dft_calls"] == 2
    r0, r1 = rep["rounds"]
    assert r0["halt_step"] == 10 and r0["labelled"] == 2 and r1["round"] == 1 and r1["halt_step"] is not None
    # the fine-tuning trained on the 20 old frames and the 2 new ones, with the old validation frames
    split = json.loads((out / "round_01" / "split.json").read_text())
    assert split["train"]["n"] == 22 and split["val"]["n"] == 4
    with np.load(out / "round_01" / "data.npz") as d, np.load(out / "round_00" / "labels.npz") as lab:
        np.testing.assert_array_equal(d["forces"][-2:], lab["forces"])
        np.testing.assert_array_equal(d["coords"][-2:], lab["positions"])
    assert len(list((out / "round_01" / "run" / "samples").glob("sample_*.pt"))) == 4
    # an Adam warm start of finetune.warm_start_steps at finetune.warm_start_lr, then the sampler
    sched = json.loads((out / "round_01" / "run" / "schedule.json").read_text())
    assert sched["warm_start_steps"] == 10 and sched["mass_freeze_step"] == 5 and sched["burn_in"] == 10
    ft_cfg = yaml.safe_load((out / "round_01" / "run" / "config.yaml").read_text())
    assert ft_cfg["adam"]["lr"] == 1e-3 and ft_cfg["training"]["max_steps"] == 10 + 30
    assert ft_cfg["training"]["prior_centre"] == str(out / "round_00" / "run" / "samples")
    assert (out / "round_01" / "model.pth").exists()
    # md.threshold: start (default): round 1 halts at round 0's calibrated threshold, not its own
    from bnnmd.deploy import read_metadata

    meta0, meta1 = (read_metadata(out / f"round_0{r}" / "model.pth") for r in (0, 1))
    assert meta0["halt_rule"].startswith("median:1.5") and meta1["halt_rule"].startswith("fixed")
    assert r1["threshold"] == r0["threshold"] == meta1["halt_threshold"] == meta0["halt_threshold"]
    # the labels are pyscf's, cached by geometry
    import ase

    from bnnmd.label import PySCFLabeller

    assert len(list((out / "labels").glob("*.npz"))) == 2
    with np.load(out / "round_00" / "labels.npz") as lab:
        for pos, e in zip(lab["positions"], lab["energy"]):
            hit = PySCFLabeller(basis="sto-3g", cache=out / "labels").cached(ase.Atoms(lab["numbers"], positions=pos))
            assert hit is not None and hit.energy == e
    md = (out / "report.md").read_text()
    assert "| 0 | 10 | 10 | 2 | 2 |" in md and (out / "report.png").exists()


@pytest.mark.slow
def test_several_md_runs_pool_their_frames(start_run, tmp_path):
    """md.runs = 2 (velocity seeds 5 and 6, two at a time): the round's frames come from both runs,
    ceil(select.n / runs) from each, and steps_run is the runs' mean."""
    out = tmp_path / "out"
    cfg = LearnConfig.from_dict(learn_config(start_run, md={"runs": 2, "processes": 2}, select={"n": 3},
                                             finetune={"max_steps": 12, "burn_in": 6, "mass_freeze_step": 3,
                                                       "sample_interval": 2, "warm_start_steps": 4}))
    rep = ActiveLearning(cfg, out).run()
    state = json.loads((out / "state.json").read_text())
    r0 = state["rounds"]["0"]
    assert r0["halt_steps"] == [10, 10] and r0["steps_run"] == 10.0 and rep["rounds"][0]["halt_steps"] == [10, 10]
    assert sorted(i for i, _ in r0["selected"]) == [0, 0, 1] and state["dft_calls"] == 3
    dumps = [(out / "round_00" / d / "traj.dump").read_text() for d in ("md", "md_01")]
    assert dumps[0] != dumps[1]  # another velocity seed: another trajectory
    assert "velocity all create 300 ${seed}" in (out / "round_00" / "md_01" / "in.lmp").read_text()
    assert (out / "round_00" / "selection.extxyz").read_text().count("selection_rank") == 3
    with np.load(out / "round_01" / "data.npz") as d:
        assert len(d["energies"]) == 20 + r0["labelled"] and r0["labelled"] == 3
    assert len(state["rounds"]["1"]["halt_steps"]) == 2


@pytest.mark.slow
def test_halt_on_epistemic(start_run, tmp_path):
    """md.halt_on epistemic: the built-in recipe halts on the largest per-atom epistemic std
    (compute reduce max c_unc[2]) against 1.5 x the median of the validation frames' largest
    epistemic std (NumPy twin below), or against a given number."""
    base = learn_config(start_run, rounds=0, md={"template": None, "nsteps": 40, "halt_on": "epistemic"})
    out = tmp_path / "out"
    ActiveLearning(LearnConfig.from_dict(base), out).run()
    cal = json.loads((out / "round_00" / "run" / "samples" / "calibration.json").read_text())
    twin = 1.5 * float(np.median(cal["halt"]["frame_max_std_epistemic"]))
    state = json.loads((out / "state.json").read_text())
    assert state["rounds"]["0"]["threshold_epistemic"] == pytest.approx(twin, rel=1e-12)
    assert twin != pytest.approx(state["rounds"]["0"]["threshold"])  # not the total std's
    text = (out / "round_00" / "md" / "in.lmp").read_text()
    assert "compute emax all reduce max c_unc[2]" in text  # model and LAMMPS both in kcal/mol/A
    ratio = next(line for line in text.splitlines() if line.startswith("variable ratio"))
    assert float(ratio.split("/")[-1]) == pytest.approx(twin, rel=1e-12)
    # a tiny epistemic threshold: the first check halts
    out2 = tmp_path / "out2"
    ActiveLearning(LearnConfig.from_dict(learn_config(start_run, rounds=0, md={
        "template": None, "nsteps": 40, "halt_on": "epistemic", "threshold": 1e-9})), out2).run()
    assert json.loads((out2 / "state.json").read_text())["rounds"]["0"]["halt_steps"] == [10]
    with pytest.raises(LearnError, match="md.halt_on = 'both': give total or epistemic"):
        LearnConfig.from_dict(learn_config(start_run, md={"halt_on": "both"}))
    with pytest.raises(LearnError, match="md.halt_on = epistemic needs the built-in recipe"):
        LearnConfig.from_dict(learn_config(start_run, md={"halt_on": "epistemic"}))


@pytest.mark.slow
def test_halt_window_matches_its_python_twin(start_run, tmp_path):
    """md.halt_window: LAMMPS (fix ave/atom 1 W N of the per-atom epistemic std, the largest average
    against the threshold every N steps) halts on the step bnnmd.posterior.halt_step finds in the
    per-step stds of the same run without a halt; window 1 is the plain check, and on a threshold
    where the two differ both agree with their twin; the windowed total std runs against the
    model's exported threshold."""
    from bnnmd.data import bundled_dataset
    from bnnmd.deploy import export
    from bnnmd.learn import MDSection, run_md
    from bnnmd.analysis import read_trajectory
    from bnnmd.posterior import halt_step

    model = export(start_run / "run" / "samples", tmp_path / "model.pth")
    atoms = bundled_dataset("rmd17_ethanol_test").to_ase(0)
    every, window, n = 10, 10, 200
    run_md(model, atoms, tmp_path / "free", MDSection(nsteps=n, dump_every=1), seed=7, halt=False)
    traj = read_trajectory(tmp_path / "free" / "traj.dump", data=tmp_path / "free" / "system.data",
                           elements=["C", "H", "O"])
    assert list(traj.steps) == list(range(n + 1))
    ep = np.asarray(traj.uncertainty["epistemic"], dtype=np.float64)
    def threshold_between(stds):
        """A threshold halfway between two per-check values of either rule, away from the dump's 6
        significant digits, where the window changes the halt step."""
        checks = range(every, n + 1, every)
        values = sorted({float(stds[s].max()) for s in checks}
                        | {float(stds[s - window + 1:s + 1].mean(0).max()) for s in checks})
        mids = [(a + b) / 2 for a, b in zip(values, values[1:]) if b - a > 1e-3 * b]
        return next(t for t in mids if halt_step(stds, t, every, 1) != halt_step(stds, t, every, window)
                    and halt_step(stds, t, every, window) is not None)

    thr = threshold_between(ep)
    for w in (1, window):
        c = MDSection(nsteps=n, dump_every=every, halt_every=every, halt_window=w)
        assert run_md(model, atoms, tmp_path / f"w{w}", c, seed=7, epistemic_threshold=thr) == halt_step(ep, thr, every, w)
    assert "fix uwin all ave/atom 1 10 10 c_unc[2]" in (tmp_path / f"w{window}" / "in.lmp").read_text()
    # the total std against the model's own threshold (c_unc[5], stored by bnn-export): the tiny
    # model's total std varies too little along the run to split the two rules apart, so a threshold
    # under every value (both halt on the first check) only shows the windowed input runs
    total = np.asarray(traj.uncertainty["total"], dtype=np.float64)
    thr_total = 0.5 * float(total.min())
    model_total = export(start_run / "run" / "samples", tmp_path / "model_total.pth", halt_threshold=thr_total)
    for w in (1, window):
        c = MDSection(nsteps=n, dump_every=every, halt_every=every, halt_window=w)
        assert run_md(model_total, atoms, tmp_path / f"t{w}", c, seed=7) == halt_step(total, thr_total, every, w)
    assert "variable ratio equal c_uwinmax/c_unc[5]" in (tmp_path / f"t{window}" / "in.lmp").read_text()
    with pytest.raises(LearnError, match="md.halt_window = 30: .* at most md.halt_every = 20"):
        LearnConfig.from_dict(learn_config(start_run, md={"template": None, "halt_every": 20, "halt_window": 30}))
    with pytest.raises(LearnError, match="md.halt_window = 5 needs the built-in recipe"):
        LearnConfig.from_dict(learn_config(start_run, md={"halt_window": 5}))


@pytest.mark.slow
def test_overshoot_runs_on_past_the_halt(start_run, tmp_path):
    """md.overshoot: a halted run of the built-in recipe goes on without the halt (to md.nsteps at
    most), its frames past the halt are dumped and picked, and the step reported is the halt's."""
    def round0(out, **md):
        loop = ActiveLearning(LearnConfig.from_dict(learn_config(start_run, rounds=0, md={
            "template": None, "nsteps": 60, "halt_on": "epistemic", **md})), out)
        loop.run()
        return json.loads((out / "state.json").read_text())["rounds"]["0"], loop._trajectory(0)

    info, traj = round0(tmp_path / "a", threshold=1e-9, overshoot=20)  # halts at the first check
    assert info["halt_steps"] == [10] and info["steps_run"] == 10
    assert list(traj.steps) == [0, 10, 20, 30]  # 20 steps past the halt, no frame written twice
    sel = pick_frames(traj, 1e-9, 4, "epistemic", min_gap=10)
    assert sorted(int(traj.steps[f]) for f in sel.frame_indices) == [0, 10, 20, 30]  # past the halt too
    info, traj = round0(tmp_path / "b", threshold=1e-9, overshoot=500)  # no further than nsteps
    assert info["halt_steps"] == [10] and traj.steps[-1] == 60
    info, traj = round0(tmp_path / "c", threshold=1e9, overshoot=20)  # no halt: nothing after nsteps
    assert info["halt_steps"] == [None] and traj.steps[-1] == 60
    with pytest.raises(LearnError, match="md.overshoot = 20 needs the built-in recipe"):
        LearnConfig.from_dict(learn_config(start_run, md={"overshoot": 20}))
    with pytest.raises(LearnError, match="md.overshoot = -1: must be an integer >= 0"):
        LearnConfig.from_dict(learn_config(start_run, md={"template": None, "overshoot": -1}))


@pytest.mark.slow
def test_resume_after_kill(start_run, tmp_path):
    cfg = write_config(tmp_path / "learn.yaml", learn_config(start_run))
    out = tmp_path / "out"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "bnnmd.cli.learn", str(cfg), "--out", str(out)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill -9 once the frames are selected (labelling or later)
        state = out / "state.json"
        if state.exists() and "0.select" in json.loads(state.read_text())["done"]:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = json.loads((out / "state.json").read_text())["done"]
    assert "0.select" in done_before and "1.md" not in done_before
    assert main([str(cfg), "--out", str(out)]) == 2  # without --resume: refused, nothing overwritten
    assert json.loads((out / "state.json").read_text())["done"] == done_before
    assert main([str(cfg), "--out", str(out), "--resume"]) == 0
    state = json.loads((out / "state.json").read_text())
    assert state["dft_calls"] == 2 and state["status"].startswith("round budget reached")
    assert state["done"][:len(done_before)] == done_before  # nothing redone that was done
    assert len(list((out / "labels").glob("*.npz"))) == 2
    # resuming a finished loop changes nothing
    assert main([str(cfg), "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "state.json").read_text()) == state


@pytest.mark.slow
def test_scf_failure_keeps_the_state_and_resumes(start_run, tmp_path, capsys):
    bad = learn_config(start_run, label={"max_cycle": 1})
    out = tmp_path / "out"
    assert main([str(write_config(tmp_path / "bad.yaml", bad)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "none of the 2 selected frames could be labelled" in err and "did not converge in 1 cycles" in err
    assert "rerun with --resume: the state is kept" in err
    done = json.loads((out / "state.json").read_text())["done"]
    assert done == ["0.export", "0.evaluate", "0.md", "0.select"]
    good = write_config(tmp_path / "good.yaml", learn_config(start_run))  # only the label section changed
    assert main([str(good), "--out", str(out), "--resume"]) == 0
    # another change than the labeller is refused on resume
    other = write_config(tmp_path / "other.yaml", learn_config(start_run, rounds=2))
    assert main([str(other), "--out", str(out), "--resume"]) == 2
    assert "only the label and executor sections may change on resume" in capsys.readouterr().err


def test_ase_labeller_and_errors(start_run, tmp_path, capsys):
    from bnnmd.label import ASELabeller, LabelError

    lab = ASELabeller("ase.calculators.emt:EMT", cache=tmp_path / "cache")
    import ase

    atoms = ase.Atoms("CO", positions=[[0, 0, 0], [1.2, 0, 0]])
    got = lab(atoms)
    from ase.calculators.emt import EMT

    atoms.calc = EMT()
    assert got.energy == pytest.approx(atoms.get_potential_energy() / 0.04336410390059322)
    assert lab(atoms).energy == got.energy and len(list((tmp_path / "cache").glob("*.npz"))) == 1
    with pytest.raises(LabelError, match="labeller 'nosuch.module:Calc' cannot be imported"):
        ASELabeller("nosuch.module:Calc")
    missing = write_config(tmp_path / "m.yaml", learn_config(start_run, label={"labeller": "nosuch.module:Calc"}))
    assert main([str(missing), "--out", str(tmp_path / "m")]) == 2
    assert "cannot be imported" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()  # no state.json left behind: a rerun with a fixed labeller starts
    with pytest.raises(LearnError, match="must be a bnn-train run directory"):
        LearnConfig.from_dict(dict(learn_config(start_run), start=str(tmp_path)))
    for bad in ("last", 0, -1.0, True):
        with pytest.raises(LearnError, match=f"md.threshold = {bad!r}: give start"):
            LearnConfig.from_dict(learn_config(start_run, md={"threshold": bad}))
    assert LearnConfig.from_dict(learn_config(start_run, md={"threshold": 2.5})).md.threshold == 2.5
    with pytest.raises(LearnError, match="finetune.warm_start_steps = -1: must be an integer >= 0"):
        LearnConfig.from_dict(learn_config(start_run, finetune={"warm_start_steps": -1}))
    with pytest.raises(LearnError, match="finetune.warm_start_lr = 0: must be a learning rate > 0"):
        LearnConfig.from_dict(learn_config(start_run, finetune={"warm_start_lr": 0}))
    with pytest.raises(LearnError, match="label.timeout = 0: give seconds > 0"):
        LearnConfig.from_dict(learn_config(start_run, label={"timeout": 0}))
    with pytest.raises(LearnError, match=r"unknown key\(s\) md.steps"):
        LearnConfig.from_dict(learn_config(start_run, md={"steps": 3}))


def test_config_errors_at_load_before_any_md_or_dft(start_run, tmp_path, capsys):
    """Fine-tuning settings, counts and the config file itself are checked when the config loads."""
    with pytest.raises(LearnError, match=r"the fine-tuning settings: finetune\.burn_in = 2: must be >= "
                                         r"finetune\.mass_freeze_step \(5\)"):
        LearnConfig.from_dict(learn_config(start_run, finetune={"burn_in": 2}))
    with pytest.raises(LearnError, match=r"finetune\.lr = -0\.1: must be a number"):
        LearnConfig.from_dict(learn_config(start_run, finetune={"lr": -0.1}))
    with pytest.raises(LearnError, match="rounds = True: must be an integer >= 0"):
        LearnConfig.from_dict(learn_config(start_run, rounds=True))
    with pytest.raises(LearnError, match="select.n = True: must be an integer >= 1"):
        LearnConfig.from_dict(learn_config(start_run, select={"n": True}))
    bad = write_config(tmp_path / "bad.yaml", learn_config(start_run, finetune={"burn_in": 2}))
    assert main([str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnn-learn: error: the fine-tuning settings: finetune.burn_in = 2") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "empty.yaml").write_text("")
    assert main([str(tmp_path / "empty.yaml"), "--out", str(tmp_path / "out")]) == 2
    assert "empty.yaml: the config file is empty" in capsys.readouterr().err
    twice = tmp_path / "twice.yaml"
    twice.write_text(f"start: {start_run / 'run'}\nrounds: 1\nrounds: 2\n")
    assert main([str(twice), "--out", str(tmp_path / "out")]) == 2
    assert "key 'rounds' is given twice, on lines 2 and 3" in capsys.readouterr().err
    # md.halt_pressure on a molecule (no stresses, no pressure statistics): one line naming the fix
    cfg = learn_config(start_run, md={"template": None, "halt_pressure": "median:1.5"})
    assert main([str(write_config(tmp_path / "p.yaml", cfg)), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bnn-learn: error: md.halt_pressure = 'median:1.5': no pressure statistics in the "
                          "calibration of ") and "calibrate on periodic frames with stresses" in err
    assert err.count("\n") == 1


def test_heating_input_is_the_recipe_as_written():
    """The packaged heat.lmp filled in: byte for byte the input bnn-learn has always run."""
    from bnnmd.learn import MDSection, heating_input

    c = MDSection(overshoot=400, nsteps=4000, timestep=0.5, temperature=300.0, ramp=770.0, halt_every=20,
                  dump_every=20)
    assert heating_input(c, ["C", "H", "O"], 12346, threshold=1.25) == """\
# bnn-learn: heating with the thermostat target rising 770.0 K/ps
units real
atom_style atomic
atom_modify map yes
boundary p p p
read_data ${data}
pair_style bnn
pair_coeff * * ${model} C H O
compute unc all bnn/atom
compute emax all reduce max c_unc[2]
variable ratio equal c_emax/1.25
thermo_style custom step temp pe c_unc[4] c_emax
thermo 20
dump traj all custom 20 traj.dump id type x y z c_unc[1] c_unc[2] c_unc[3]
velocity all create 300.0 12346 mom yes rot yes
fix heat all nvt temp 300.0 1840.0 50.0
fix stop all halt 20 v_ratio > 1.0 error continue
timestep 0.5
run 4000
unfix stop
if "$(step) < 4000" then "run $(ternary(step+400<4000,400,4000-step)) start 0 stop 4000"
"""
    plain = heating_input(c, ["H", "O"], 7, halt=False)
    assert "variable ratio equal c_unc[4]/c_unc[5]\nthermo_style custom step temp pe c_unc[4] c_unc[5]\n" in plain
    assert "# no halt\n" in plain and plain.endswith("run 4000\n") and "unfix" not in plain
    assert "pair_coeff * * ${model} H O\n" in plain and "velocity all create 300.0 7 " in plain


def test_loop_state_reads_and_writes_the_state_json_layout():
    """state.json as bnn-learn has always written it (a run of bnnmd <= 0.1.0 included) resumes."""
    from bnnmd.learn import LoopState, Phase

    old = {"config": {"rounds": 2}, "done": ["0.export", "0.evaluate", "0.md", "0.select"], "dft_calls": 3,
           "rounds": {"0": {"threshold": 1.5, "halt_rule": "median:1.5", "errors": {"test": {"force_mae": 0.9}},
                            "halt_step": 620, "steps_run": 620.0, "selected_frames": [3, 7]}},
           "status": "running"}
    state = LoopState.from_dict(old)
    assert state.is_done(0, Phase.SELECT) and not state.is_done(0, Phase.LABEL)
    assert state.round(0).picked() == [[0, 3], [0, 7]] and state.round(0).halts() == [620]
    assert state.to_dict() == old  # nothing added, nothing lost
    state.mark(0, Phase.LABEL, labelled=2, label_failures={}, dft_calls=5)
    assert state.to_dict()["done"][-1] == "0.label" and state.to_dict()["rounds"]["0"]["labelled"] == 2
    with pytest.raises(KeyError, match="no field 'halt_stpe'"):
        state.mark(1, Phase.MD, halt_stpe=3)
