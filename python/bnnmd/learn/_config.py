"""The configuration of ``bnn-learn``, validated with messages that name the key and the fix."""

from __future__ import annotations

import importlib.util
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Union

from bnnmd._checks import Checks, is_number
from bnnmd._errors import BnnmdError
from bnnmd._yaml import read_config_file
from bnnmd.nn import ConfigError
from bnnmd.posterior import HaltRuleError, parse_rule
from bnnmd.train import TrainConfig, get_method
from bnnmd.train._distributed import Layout


class LearnError(BnnmdError, RuntimeError):
    """Something the active-learning loop cannot do; the message says why and what to do."""


def _known_keys(cls, d: dict, prefix: str = "") -> dict:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise LearnError(f"unknown key(s) {', '.join(prefix + k for k in unknown)} in the bnn-learn config; "
                         f"allowed: {', '.join(sorted(known))}")
    return d


def _section(cls, name: str, d: Optional[dict]):
    return cls(**_known_keys(cls, dict(d or {}), f"{name}."))


@dataclass
class MDSection:
    """The MD of a round: the built-in heating recipe, or a LAMMPS input template."""

    structure: str = "bundled:rmd17_ethanol_test:0"  # DATASET:FRAME (bnnmd.data) or a file ASE reads
    template: Optional[str] = None  # LAMMPS input with ${model}, ${data} (and ${seed}); None: heating
    temperature: float = 300.0  # K at the start (velocities and thermostat)
    ramp: float = 770.0  # K/ps of the thermostat target (the demo's)
    nsteps: int = 4000  # target length of a round's run
    timestep: float = 0.5  # fs
    halt_every: int = 20  # steps between halt checks (fix halt N)
    # steps each atom's std is averaged over before a check (fix ave/atom 1 W halt_every, the largest
    # average against the threshold; 1 to halt_every): the epistemic std of a heated molecule passes
    # the threshold in spikes of a few steps at the turning points of its bond vibrations, long
    # before the error does; one check on one step halts there (docs/results.md, false alarms)
    halt_window: int = 1
    dump_every: int = 20
    # A, the periodic box around a molecule (larger than the model's reach); a structure periodic in
    # x, y and z (a condensed phase) keeps its own cell
    box: float = 30.0
    seed: int = 12345  # velocity seed of run 0; run i uses seed + i
    # MD runs per round (velocity seeds seed, seed + 1, ...), md.processes at a time: the frames of a
    # round are picked from all of them (one run's frames were too few and too alike to move the
    # halt; docs/results.md), and the steps before the halt are their mean
    runs: int = 1
    processes: int = 1
    # the halt threshold of every round's model: "start" (the start model's, calibrated on the
    # validation frames, kept for all rounds: a fixed force-error level, so a round that learns runs
    # longer), "round" (each round's model recalibrated: its threshold falls as it grows sure of the
    # validation frames), or a number (force std, the model's force unit)
    threshold: Union[str, float] = "start"
    # what the built-in recipe halts on and the frames are picked by: "total" (the model's halt
    # threshold, c_unc[5]) or "epistemic" (the largest per-atom epistemic std against 1.5 x the median
    # over the validation frames of a frame's largest one; md.threshold picks whose, as for total; a
    # number is an epistemic std). After a round learns hot frames the total std rises with the
    # aleatoric part the model learned there, and the halt comes earlier (docs/results.md)
    halt_on: str = "total"
    # steps a halted run of the built-in recipe goes on without the halt (the ramp continued, to
    # nsteps at most): its frames past the halt are picked with the others, so a round labels the
    # hotter geometries the next round's run reaches (the steps before the halt stay the halt's)
    overshoot: int = 0
    # a second halt for condensed phases, on the std of the pressure (LAMMPS' c_unc[6]): the per-atom
    # force std does not see a box compressed beyond its training densities, the pressure std does
    # (docs/results.md, water at 0.7 of its volume). null: off; a rule (median:F or envelope:F) on the
    # start model's validation frames, kept for every round; or a pressure std in the model's
    # energy/length^3 (eV/A^3). The run halts when either ratio passes 1
    halt_pressure: Optional[Union[str, float]] = None
    # rounds: MD runs until the halt, then select, label and fine-tune, round after round; otf: one
    # trajectory of nsteps that never restarts: where the halt would fire, the frame is labelled, the
    # posterior fine-tuned and the new model swapped into the running LAMMPS (section otf)
    mode: str = "rounds"


@dataclass
class OTFSection:
    """md.mode otf: what an event labels, and how often the trajectory is saved for a resume."""

    frames: int = 1  # frames labelled per event: the current one and those of the checks just before it
    restart_every: int = 1000  # MD steps between LAMMPS restart files (one is also written at every event)
    # the accuracy an event must reach before the trajectory goes on: the largest per-atom force error
    # |dF|/sqrt 3 of the new model on the event's labelled frames (model force unit, e.g. eV/A); above
    # it the posterior is fine-tuned again (at most `finetunes` fine-tunings per event), and if it is
    # still above, the run halts there rather than go on with a model that did not learn the frame.
    # null: one fine-tuning per event, whatever its error
    tolerance: Optional[float] = None
    finetunes: int = 1
    # the first step after an event moves the atoms with the labeller's forces at the event's frame
    # instead of the new model's (LAMMPS fix external: the difference added for that step only)
    label_forces: bool = False


@dataclass
class SelectSection:
    n: int = 8  # frames labelled per round at most, ceil(n / md.runs) from each run
    min_gap: int = 100  # MD steps between picked frames


@dataclass
class LabelSection:
    labeller: str = "pyscf"  # pyscf (molecules), tblite (GFN-xTB, periodic boxes with stress), or MODULE:FACTORY
    method: str = "GFN2-xTB"  # tblite's method: GFN2-xTB, GFN1-xTB or IPEA1-xTB
    xc: str = "pbe"
    basis: str = "def2-svp"
    max_cycle: int = 60
    processes: int = 2
    kwargs: Dict[str, Any] = field(default_factory=dict)  # for MODULE:FACTORY (and tblite's own options)
    energy_unit: str = "eV"  # units an ASE calculator returns (pyscf: kcal/mol, handled)
    timeout: Optional[float] = 1800.0  # s of wall clock per frame (its worker's start included); None: none


@dataclass
class FinetuneSection:
    """Overrides of the start run's config for each fine-tuning (SGHMC, prior on the last posterior)."""

    # Adam + EMA steps (lr warm_start_lr) from the last posterior before the sampler: they fit the new
    # frames (SGHMC at lr 5e-4 alone barely moved the model's error on them) and give the sampler's
    # mass Adam's gradient statistics (bnnmd.bayes.sghmc: a mass from one gradient at a mode is
    # tiny, and its noise huge); 0: the sampler starts at once, its mass from the first gradients
    warm_start_steps: int = 2000
    warm_start_lr: float = 1e-3
    max_steps: int = 1500  # sampler steps at most (after the warm start)
    prior_std: float = 0.1
    lr: float = 5e-4
    mass_freeze_step: int = 300
    burn_in: int = 1200  # sampler steps on the new data before the first sample
    sample_interval: int = 100
    validate_every: int = 250
    # processes of each fine-tuning: 1 trains in the bnn-learn process; N > 1 runs
    # torchrun --nproc_per_node N -m bnnmd.cli.train ROUND/finetune.yaml --out ROUND/run (docs/training.md)
    nproc: int = 1
    # every labelled frame appears this many times in the fine-tuning's training frames (1: once, as
    # the start run's): a brief fine-tuning on hundreds of old frames, a minibatch of 2, otherwise
    # sees a new frame in a few steps only and barely moves its error (md.mode otf: docs/results.md).
    # Like a likelihood weight: the new frames count new_frame_weight times in the posterior
    new_frame_weight: int = 1


@dataclass
class ExecutorSection:
    """Where the MD runs and the labels run (bnnmd.learn._executor)."""

    # null: this machine (threads for LAMMPS runs, label.processes processes for labels); a dask
    # scheduler address (tcp://HOST:8786): every MD run and every frame's label is a task on that
    # cluster; local:N: a dask LocalCluster of N worker processes on this machine
    scheduler: Optional[str] = None


@dataclass
class LearnConfig:
    start: str = ""  # a bnn-train run directory (config.yaml, split.json, samples/): round 0's model
    rounds: int = 3  # fine-tunings at most
    max_dft_calls: int = 100
    test: Optional[str] = None  # a labelled dataset for the per-round errors (default: the start run's test)
    hot_test: Optional[str] = None  # labelled frames of hot MD that no round trains on
    md: MDSection = field(default_factory=MDSection)
    select: SelectSection = field(default_factory=SelectSection)
    label: LabelSection = field(default_factory=LabelSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    otf: OTFSection = field(default_factory=OTFSection)
    executor: ExecutorSection = field(default_factory=ExecutorSection)

    @classmethod
    def from_dict(cls, d: dict) -> "LearnConfig":
        """Paths (``start``, ``test``, ``md.structure``, ...) relative to the working directory, as in
        ``bnn-train`` configs."""
        d = _known_keys(cls, dict(d or {}))
        sections = {"md": MDSection, "select": SelectSection, "label": LabelSection, "finetune": FinetuneSection,
                    "otf": OTFSection, "executor": ExecutorSection}
        for name, scls in sections.items():
            d[name] = _section(scls, name, d.get(name))
        return cls(**d).validate()

    @classmethod
    def load(cls, path) -> "LearnConfig":
        return cls.from_dict(read_config_file(path, LearnError))

    def validate(self) -> "LearnConfig":
        start = Path(self.start) if self.start else None
        if start is None or not (start / "samples").is_dir() or not all((start / f).exists()
                                                                        for f in ("split.json", "config.yaml")):
            raise LearnError(f"start = {self.start!r}: must be a bnn-train run directory (with samples/, "
                             "split.json and config.yaml; a relative path is relative to the working directory); train one "
                             "first, e.g. bnn-train examples/demo/train.yaml --out runs/start")
        for key in ("rounds", "max_dft_calls"):
            Checks(LearnError, "").integer(self, key, 0)
        for sec, key, lo in (("md", "nsteps", 1), ("md", "halt_every", 1), ("md", "halt_window", 1), ("md", "dump_every", 1),
                             ("md", "runs", 1), ("md", "processes", 1), ("md", "overshoot", 0),
                             ("select", "n", 1), ("select", "min_gap", 0), ("label", "processes", 1),
                             ("label", "max_cycle", 1), ("finetune", "max_steps", 1),
                             ("finetune", "warm_start_steps", 0), ("finetune", "nproc", 1), ("finetune", "new_frame_weight", 1), ("otf", "frames", 1),
                             ("otf", "restart_every", 1), ("otf", "finetunes", 1)):
            Checks(LearnError, sec).integer(getattr(self, sec), key, lo)
        thr = self.md.threshold
        if not (thr in ("start", "round") or (is_number(thr) and thr > 0)):
            raise LearnError(f"md.threshold = {thr!r}: give start (the start model's halt threshold for every "
                             "round), round (each round's own) or a force std > 0 in the model's force unit")
        lr = self.finetune.warm_start_lr
        if not (is_number(lr) and lr > 0):
            raise LearnError(f"finetune.warm_start_lr = {lr!r}: must be a learning rate > 0, e.g. 0.001")
        if self.md.halt_on not in ("total", "epistemic"):
            raise LearnError(f"md.halt_on = {self.md.halt_on!r}: give total or epistemic")
        if self.md.halt_on == "epistemic" and self.md.template:
            raise LearnError("md.halt_on = epistemic needs the built-in recipe: drop md.template, or halt on "
                             "c_unc[2] in your template (compute reduce max c_unc[2]) and keep md.halt_on total")
        if self.md.overshoot and self.md.template:
            raise LearnError(f"md.overshoot = {self.md.overshoot} needs the built-in recipe: drop md.template, or "
                             "end your template's fix halt with error continue and run on after it, and set "
                             "md.overshoot 0")
        if self.md.halt_window > self.md.halt_every:
            raise LearnError(f"md.halt_window = {self.md.halt_window}: the std is averaged over the steps up to a "
                             f"check, at most md.halt_every = {self.md.halt_every}; give 1 to {self.md.halt_every}")
        if self.md.halt_window > 1 and self.md.template:
            raise LearnError(f"md.halt_window = {self.md.halt_window} needs the built-in recipe: drop md.template, or "
                             "average in your template (fix ave/atom 1 W N c_unc[2], compute reduce max on it) and set "
                             "md.halt_window 1")
        hp = self.md.halt_pressure
        if hp is not None:
            ok = is_number(hp) and hp > 0
            if isinstance(hp, str):
                try:
                    ok = parse_rule(hp)[0] in ("median", "envelope")
                except HaltRuleError:
                    ok = False
            if not ok:
                raise LearnError(f"md.halt_pressure = {hp!r}: give a rule on the validation frames' pressure std "
                                 "(median:1.5 or envelope:1.0), a pressure std > 0 in the model's energy/length^3, "
                                 "or null")
            if self.md.template:
                raise LearnError("md.halt_pressure needs the built-in recipe: drop md.template, or halt on c_unc[6] "
                                 "(the pressure std) in your template and set md.halt_pressure null")
        if self.md.mode not in ("rounds", "otf"):
            raise LearnError(f"md.mode = {self.md.mode!r}: give rounds (MD until the halt, then label and fine-tune, "
                             "round after round) or otf (one trajectory, the model swapped in where the halt would fire)")
        if self.md.mode == "otf":
            m = self.md
            for key, bad, why in (("template", m.template, "the built-in recipe (drop md.template)"),
                                  ("halt_on", m.halt_on != "total", "md.halt_on total"),
                                  ("overshoot", m.overshoot, "md.overshoot 0"), ("runs", m.runs != 1, "md.runs 1"),
                                  ("halt_window", m.halt_window != 1, "md.halt_window 1")):
                if bad:
                    raise LearnError(f"md.{key} = {getattr(m, key)!r}: md.mode otf drives one trajectory of the "
                                     f"built-in recipe and needs {why}")
            if m.halt_every % m.dump_every:
                raise LearnError(f"md.halt_every = {m.halt_every} and md.dump_every = {m.dump_every}: md.mode otf "
                                 "labels the frame of a check from the dump; make md.dump_every divide md.halt_every")
        tol = self.otf.tolerance
        if tol is not None and not (is_number(tol) and tol > 0):
            raise LearnError(f"otf.tolerance = {tol!r}: give the largest per-atom force error an event must reach "
                             "(> 0, the model's force unit, e.g. 0.15 for eV/A), or null")
        if not isinstance(self.otf.label_forces, bool):
            raise LearnError(f"otf.label_forces = {self.otf.label_forces!r}: give true or false")
        if self.otf.finetunes > 1 and tol is None:
            raise LearnError(f"otf.finetunes = {self.otf.finetunes}: an event fine-tunes again only while its error is "
                             "above otf.tolerance; set otf.tolerance, or otf.finetunes 1")
        lab = self.label
        if lab.labeller not in ("pyscf", "tblite") and ":" not in str(lab.labeller):
            raise LearnError(f"label.labeller = {lab.labeller!r}: give pyscf, tblite, or MODULE:FACTORY of an ASE "
                             "calculator (e.g. ase.calculators.emt:EMT)")
        if lab.labeller == "tblite" and lab.method not in TBLITE_METHODS:
            raise LearnError(f"label.method = {lab.method!r}: tblite's methods are {', '.join(TBLITE_METHODS)}")
        t = self.label.timeout
        if t is not None and not (isinstance(t, (int, float)) and not isinstance(t, bool) and t > 0):
            raise LearnError(f"label.timeout = {t!r}: give seconds > 0 per frame, or null for no limit")
        if self.md.halt_every % self.md.dump_every and self.md.dump_every % self.md.halt_every:
            raise LearnError(f"md.halt_every = {self.md.halt_every} and md.dump_every = {self.md.dump_every}: "
                             "one must divide the other, so that the dump holds the frame the halt fired on")
        sched = self.executor.scheduler
        if sched is not None and not (isinstance(sched, str) and SCHEDULER.match(sched)):
            raise LearnError(f"executor.scheduler = {sched!r}: give null (this machine), a dask scheduler address "
                             "(tcp://HOST:8786) or local:N (a dask LocalCluster of N workers on this machine)")
        if sched is not None and importlib.util.find_spec("distributed") is None:
            raise LearnError(DASK_MISSING.format(sched))
        # the fine-tuning's training config, checked now rather than after a round's MD and labels
        ft = finetune_config(start, start / "split.json", start / "samples", self.finetune)
        if self.finetune.nproc > 1:
            try:
                Layout.make(ft.training.distributed, get_method(ft.method)(ft).training_k(), self.finetune.nproc, 0,
                            ft.training.batch_size)
            except ConfigError as exc:
                raise LearnError(f"finetune.nproc = {self.finetune.nproc}: {exc}") from None
        return self

    def to_dict(self) -> dict:
        return asdict(self)


#: executor.scheduler: ``local:N`` or a dask scheduler address (``tcp://HOST:PORT``, ``tls://...``)
SCHEDULER = re.compile(r"^(local:[1-9][0-9]*|[a-z][a-z0-9+]*://\S+)$")
DASK_MISSING = ("executor.scheduler = {!r} needs dask.distributed, which is not installed; "
                "pip install 'dask[distributed]' (make install does), or set executor.scheduler: null")

#: label.method values of label.labeller tblite
TBLITE_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")

#: finetune.KEY -> the key of the training config it sets (:func:`finetune_config`)
FINETUNE_KEYS = {
    "prior_std": "training.prior_std", "validate_every": "training.validate_every",
    "warm_start_steps": "sghmc.warm_start_steps", "warm_start_lr": "adam.lr", "lr": "sghmc.lr",
    "mass_freeze_step": "sghmc.mass_freeze_step", "burn_in": "sghmc.burn_in",
    "sample_interval": "sghmc.sample_interval",
}


def finetune_config(start: Path, split: Path, prior_centre: Path, ft: FinetuneSection) -> TrainConfig:
    """The :class:`~bnnmd.train.TrainConfig` of a fine-tuning: the start run's ``config.yaml`` with the
    ``finetune`` section ``ft`` (:data:`FINETUNE_KEYS`), on ``split``, every chain starting at, and
    pulled towards, its last sample in ``prior_centre``; Adam + EMA first, then the sampler with its
    mass primed from Adam's statistics. Raises :class:`LearnError` naming the ``finetune.*`` key."""
    cfg = TrainConfig.load(Path(start) / "config.yaml")
    cfg.method = "sghmc"
    cfg.data.split = str(split)
    cfg.training.prior_centre = str(prior_centre)
    cfg.training.max_steps = ft.warm_start_steps + ft.max_steps
    cfg.training.time_limit = None  # the start run's budget is not the fine-tuning's
    cfg.sghmc.schedule = "steps"
    cfg.sghmc.warm_start_shared = False
    for key, target in FINETUNE_KEYS.items():
        section, name = target.split(".")
        setattr(getattr(cfg, section), name, getattr(ft, key))
    try:
        return cfg.validate()
    except ConfigError as exc:
        text = str(exc)
        for key, target in FINETUNE_KEYS.items():
            text = text.replace(target, f"finetune.{key}")
        text = text.replace("training.max_steps", "finetune.warm_start_steps + finetune.max_steps")
        raise LearnError(f"the fine-tuning settings: {text}") from None
