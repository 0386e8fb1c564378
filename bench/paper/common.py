"""Shared code of the paper-repetition benchmarks in ``bench/paper/`` (see README.md there).

What lives here:

* paths of the reference data (``../shared/data``) and of the results (``bench/results/paper``);
* the three scales (``smoke``, ``cpu``, ``paper``): model size, data sizes, how long runs train;
* config builders for the four methods; at a timed scale SGHMC plans its schedule in the trainer
  (bnnmd's ``sghmc.schedule: time``) so that a chain collects all its samples inside a wall-clock
  budget; "equal compute": a baseline's ``training.time_limit`` is the training time the SGHMC
  run actually used;
* training (``bnnmd.train.Trainer``) and evaluation (``bnnmd.uq.evaluate``) with timings;
* machine information (``bench/_machine.py``), strict JSON writing and Markdown tables;
* the paper's numbers (Rensmeyer et al., Digital Discovery 2024, 3, 2356), typed in from its
  tables and text, each with the table and row it comes from.

Scripts import it as ``import common`` (they run as ``python bench/paper/<script>.py``, which puts
this directory first on ``sys.path``).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
if str(REPO / "bench") not in sys.path:
    sys.path.append(str(REPO / "bench"))
from _machine import machine_info as _machine_info  # noqa: E402  (bench/_machine.py)

DATA = REPO.parent / "shared" / "data"
RESULTS = REPO / "bench" / "results" / "paper"
CCSD_T_FILE = DATA / "ethanol_ccsd_t" / "ethanol_ccsd_t-train.npz"

#: rMD17 molecules of the shared data (file stem) -> the name the paper's Table 4 uses
RMD17_MOLECULES = {
    "aspirin": "Aspirin", "ethanol": "Ethanol", "uracil": "Uracil", "malonaldehyde": "Malonaldehyde",
    "salicylic": "Salicylic acid", "naphthalene": "Naphthalene", "toluene": "Toluene", "benzene": "Benzene",
    "azobenzene": None, "paracetamol": None,  # in the shared data, not in the paper's Table 4
}

PAPER = "Rensmeyer, Craig, Kramer, Niggemann, Digital Discovery 2024, 3, 2356 (seed/000_ffd59be7e9335abd.txt)"


def rmd17_file(molecule: str, part: str) -> Path:
    """``../shared/data/rmd17/rmd17_<molecule>_<train|test>_01.npz`` (1000 frames each)."""
    return DATA / "rmd17" / f"rmd17_{molecule}_{part}_01.npz"


# ---- the paper's numbers --------------------------------------------------------------------
# All forces in kcal/mol/A, energies in kcal/mol. "mll" is the mean log-likelihood (higher is
# better), "auc" the ROC-AUC of detecting force components with |error| > 1 kcal/mol/A.

#: Table 4 ("Results on the RMD17 dataset using k = 8 Monte Carlo samples"), forces, one row per
#: molecule; columns "Dropout: MAE RMSE MLL AUC-ROC" and "Proposed algorithm: MAE RMSE MLL AUC-ROC".
#: In the text extraction the table is split into two column blocks; the dropout AUC-ROC column is
#: cut after "0.8"/"0.9" and its last two digits appear at the start of the other block's rows
#: ("00", "97", "88", "24", "09", "02", "94"): Aspirin 0.800, Ethanol 0.897, Uracil 0.888,
#: Malonaldehyde 0.824, Salicylic acid 0.809, Naphthalene 0.902, Toluene 0.894.
#: Benzene: AUC "NA" (no force error above 1 kcal/mol/A for the proposed model).
PAPER_TABLE4 = {
    "aspirin": {"mc_dropout": {"mae": 0.215, "rmse": 0.340, "mll": -1.85, "auc": 0.800},
                "sghmc": {"mae": 0.144, "rmse": 0.229, "mll": 0.22, "auc": 0.952}},
    "ethanol": {"mc_dropout": {"mae": 0.078, "rmse": 0.147, "mll": 0.74, "auc": 0.897},
                "sghmc": {"mae": 0.064, "rmse": 0.115, "mll": 1.03, "auc": 0.993}},
    "uracil": {"mc_dropout": {"mae": 0.082, "rmse": 0.141, "mll": 0.71, "auc": 0.888},
               "sghmc": {"mae": 0.085, "rmse": 0.138, "mll": 0.83, "auc": 0.986}},
    "malonaldehyde": {"mc_dropout": {"mae": 0.145, "rmse": 0.259, "mll": -0.18, "auc": 0.824},
                      "sghmc": {"mae": 0.099, "rmse": 0.170, "mll": 0.49, "auc": 0.983}},
    "salicylic": {"mc_dropout": {"mae": 0.108, "rmse": 0.199, "mll": 0.14, "auc": 0.809},
                  "sghmc": {"mae": 0.109, "rmse": 0.182, "mll": 0.63, "auc": 0.977}},
    "naphthalene": {"mc_dropout": {"mae": 0.044, "rmse": 0.069, "mll": 1.19, "auc": 0.902},
                    "sghmc": {"mae": 0.043, "rmse": 0.069, "mll": 1.63, "auc": 0.995}},
    "toluene": {"mc_dropout": {"mae": 0.052, "rmse": 0.084, "mll": 1.11, "auc": 0.894},
                "sghmc": {"mae": 0.051, "rmse": 0.082, "mll": 1.43, "auc": 0.995}},
    "benzene": {"mc_dropout": {"mae": 0.020, "rmse": 0.032, "mll": 1.50, "auc": None},
                "sghmc": {"mae": 0.010, "rmse": 0.016, "mll": 3.06, "auc": None}},
}
PAPER_TABLE4_SOURCE = ("Table 4 (rMD17, k = 8, forces in kcal/mol/A), row = molecule; columns Dropout / "
                       "Proposed algorithm: MAE, RMSE, MLL, AUC-ROC. Split: 1000 random frames "
                       "(970 train + 30 validation), the rest of the trajectory for testing.")

#: Table 3 ("Influence of the MC sample size on the length 16 PEDOT dataset"), forces of the
#: proposed algorithm, one row per k; columns MAE RMSE NECE MLL. The samples come from ONE chain.
#: PEDOT chains of length 16 were not in the training set (trained on lengths 8 and 12).
PAPER_TABLE3 = {
    1: {"mae": 0.222, "rmse": 0.385, "nece": 0.649, "mll": -1.79},
    2: {"mae": 0.219, "rmse": 0.381, "nece": 0.473, "mll": -0.87},
    4: {"mae": 0.216, "rmse": 0.378, "nece": 0.376, "mll": -0.44},
    8: {"mae": 0.210, "rmse": 0.371, "nece": 0.313, "mll": -0.20},
    16: {"mae": 0.201, "rmse": 0.356, "nece": 0.254, "mll": 0.00},
}
PAPER_TABLE3_SOURCE = ("Table 3 (PEDOT, chain length 16, forces in kcal/mol/A), row = number of samples k; "
                       "columns MAE, RMSE, NECE, MLL of the proposed algorithm.")

#: Table 2 ("Results on the PEDOT datasets"), forces; rows chain length 16 (not trained on:
#: domain shift), 12 and 8 (the training lengths); columns k = 1 and k = 8: MAE RMSE NECE MLL.
PAPER_TABLE2 = {
    16: {1: {"mae": 0.222, "rmse": 0.385, "nece": 0.649, "mll": -1.79},
         8: {"mae": 0.210, "rmse": 0.371, "nece": 0.313, "mll": -0.20}},
    12: {1: {"mae": 0.184, "rmse": 0.276, "nece": 0.652, "mll": -0.87},
         8: {"mae": 0.169, "rmse": 0.254, "nece": 0.317, "mll": 0.14}},
    8: {1: {"mae": 0.151, "rmse": 0.221, "nece": 0.619, "mll": -0.28},
        8: {"mae": 0.139, "rmse": 0.203, "nece": 0.215, "mll": 0.44}},
}
PAPER_TABLE2_SOURCE = ("Table 2 (PEDOT, forces in kcal/mol/A), rows chain length 16 (unseen in training), "
                       "12 and 8 (training lengths); columns k = 1 and k = 8: MAE, RMSE, NECE, MLL.")

#: Section 4.3.5 ("Results on the coupled cluster dataset"), text and Fig. 5: proposed algorithm
#: (SGHMC, k = 8) vs a deep ensemble of 8 stochastic NequIP models (early stopping on 30
#: validation frames); 100 training frames, 1000 test frames (the sGDML test file).
PAPER_CCSD_T = {
    "sghmc": {"forces.mae": 0.401, "forces.rmse": 0.675, "forces.mll": -1.00, "forces.auc": 0.885,
              "energy.mae": 0.069, "energy.rmse": 0.097, "energy.mll": 0.978},
    "ensemble": {"forces.mae": 0.489, "forces.rmse": 0.871, "forces.mll": -1.19, "forces.auc": 0.866,
                 "energy.mae": 0.142, "energy.rmse": 0.191, "energy.mll": 0.327},
}
PAPER_CCSD_T_SOURCE = ("Section 4.3.5 text (forces: MAE 0.401 vs 0.489, RMSE 0.675 vs 0.871, MLL -1.00 vs "
                       "-1.19; ROC-AUC 0.885 vs 0.866 (Fig. 5); energies: MAE 0.069 vs 0.142, RMSE 0.097 vs "
                       "0.191, MLL 0.978 vs 0.327), SGHMC k = 8 vs deep ensemble of 8. The paper does not "
                       "state the training time of either.")

PAPER_NOT_GIVEN = ("The paper's text leaves the architecture, step counts, step size, batch size and "
                   "training times to its ESI Section A, which we do not have.")


# ---- scales ---------------------------------------------------------------------------------
@dataclass
class Scale:
    """How big and how long: see README.md for what each scale is for."""

    name: str
    model: Dict[str, Any]
    dtype: str = "float64"
    batch_size: int = 5
    n_train: Optional[int] = None  # None: the protocol's sizes (rMD17 970, CCSD(T) 100)
    n_val: Optional[int] = None  # None: the protocol's 30
    max_test_frames: Optional[int] = None  # None: every test frame
    timed: bool = True  # True: runs train for a wall-clock budget; False: fixed step counts
    # fixed schedule (timed = False): SGHMC steps; baselines get the SGHMC chain's training time
    mass_freeze_step: Optional[int] = None
    burn_in: Optional[int] = None
    sample_interval: Optional[int] = None
    validate_every: Optional[int] = None  # None: about 50 validations per run, from the step rate
    warm_start_fraction: float = 0.85  # SGHMC: the share of its planned steps in the Adam+EMA warm start
    # (0.85 beat 0.5 in bench/peer_nequip.py at 600 s: force MAE 0.778 vs 0.883, MLL -1.37 vs -1.51)
    warm_start_steps: Optional[int] = None  # fixed schedule: the warm start's steps
    sghmc_lr: float = 1e-3
    sghmc_friction: float = 0.1
    adam_lr: float = 1e-2  # with adam_ema 0.999: the recipe of issue 12 (nequip's)
    adam_ema: float = 0.999
    device: str = "cpu"  # training.device: the timed scales' budgets are CPU budgets
    note: str = ""


SCALES: Dict[str, Scale] = {
    "smoke": Scale(
        "smoke",
        model={"num_layers": 1, "l_max": 1, "num_features": 4, "cutoff": 4.0, "num_basis": 4,
               "radial_hidden": 8, "radial_layers": 1, "sigma_hidden": 4},
        n_train=20, n_val=5, max_test_frames=10,
        # a smoke run holds ~100-300 steps; the trainer's plan times 20 sampler steps after the warm
        # start and needs ~3 per sample before the first one, so the sampler gets half the steps here
        warm_start_fraction=0.5,
        note="seconds per run: a tiny model on 20 training frames, to prove that the script runs end to "
             "end. Its numbers mean nothing."),
    "cpu": Scale(
        "cpu",
        model={"num_layers": 2, "l_max": 1, "num_features": 16, "cutoff": 4.0},
        note="the CPU-sized model of examples/train/ethanol_sghmc.yaml (2 interaction blocks, l_max 1, "
             "16 features, cutoff 4 A, float64, batch 5) on the paper's splits; every run trains for a "
             "wall-clock budget (training.time_limit) so that one experiment takes about an hour on one "
             "core. Far smaller and far shorter than the paper's runs: compare methods with each other, "
             "not with the paper's absolute numbers."),
    "paper": Scale(
        "paper",
        model={"num_layers": 4, "l_max": 2, "num_features": 32, "cutoff": 5.0, "num_basis": 8,
               "radial_hidden": 64, "radial_layers": 2, "sigma_hidden": 32},
        timed=False, device="auto", warm_start_steps=100_000, mass_freeze_step=100_000, burn_in=500_000,
        sample_interval=25_000, validate_every=1000,
        note="NOT given in the paper's text (its ESI Section A has the details; we do not have it). Our "
             "choice, after the NequIP paper's rMD17 models: 4 interaction blocks, l_max 2, 32 features, "
             "cutoff 5 A, 8 Bessel functions, radial MLP 2 x 64, batch 5, float64. SGHMC (lr 1e-3, friction "
             "0.1 as in the authors' public code): a 100k-step Adam + EMA warm start (lr 1e-2, EMA 0.999), "
             "then mass adapted for 100k steps, burn-in 500k steps, then "
             "one sample every 25k steps (8 samples: 775k steps; 16 samples: 975k). The paper says only that "
             "sampling takes 'a few days' on one GPU. Baselines train for the SGHMC run's measured "
             "training time (equal compute). Trains on a GPU when torch sees one (training.device: "
             "auto), otherwise on the CPU, where it would take weeks."),
}


def scale_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scale", choices=sorted(SCALES), default="cpu",
                        help="smoke: seconds, proves the script runs; cpu: about an hour on one core; "
                             "paper: the paper-sized model and step counts (GPU-sized)")


def common_args(parser: argparse.ArgumentParser, experiment: str) -> None:
    scale_arg(parser)
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of training per run (timed scales; default: the script's value for "
                             "the scale, see README.md)")
    parser.add_argument("--out", default=None,
                        help=f"JSON output (default bench/results/paper/{experiment}.json; smoke runs "
                             f"default to /tmp/bnnmd_paper_smoke/{experiment}.json)")
    parser.add_argument("--workdir", default=None,
                        help=f"run directories (default /tmp/bnnmd_paper/{experiment}-SCALE; kept "
                             "afterwards for bnn-eval --plots)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the configs (validated) without training")


def out_path(args, experiment: str) -> Path:
    if args.out:
        return Path(args.out)
    if args.scale == "smoke":  # never mistaken for a result
        return Path("/tmp/bnnmd_paper_smoke") / f"{experiment}.json"
    return RESULTS / f"{experiment}.json"


def workdir_of(args, experiment: str) -> Path:
    return Path(args.workdir) if args.workdir else Path("/tmp/bnnmd_paper") / f"{experiment}-{args.scale}"


def budget_of(args, defaults: Dict[str, Optional[float]]) -> Optional[float]:
    scale = SCALES[args.scale]
    if not scale.timed:
        if args.budget is not None:
            raise SystemExit(f"--budget: scale {args.scale} trains fixed step counts, not for a budget")
        return None
    return float(args.budget if args.budget is not None else defaults[args.scale])


# ---- configs --------------------------------------------------------------------------------
def base_config(method: str, scale: Scale, *, train: Path, test: Optional[Path], protocol: str, seed: int = 0,
                num_samples: int = 8):
    """A validated ``TrainConfig`` of ``method`` at ``scale``; time limits and schedules come later.

    SGHMC gets a placeholder schedule (replaced by :func:`plan_sghmc` or :func:`fixed_sghmc`);
    MC dropout gets ``num_samples`` masks, the ensemble ``num_samples`` members. Baselines keep
    their best-validation parameters (what early stopping returns) and are not stopped before
    their time is up (``early_stopping_patience`` effectively infinite), so that they use the whole
    compute they are given.
    """
    from bnnmd.train import TrainConfig

    d: Dict[str, Any] = {
        "method": method, "seed": seed, "dtype": scale.dtype,
        "data": {"train": str(train), "test": str(test) if test else None, "protocol": protocol},
        "model": dict(scale.model),
        "training": {"batch_size": scale.batch_size, "device": scale.device, "max_steps": 10 ** 9,
                     "validate_every": 100, "checkpoint_every": 10 ** 9},
        "sghmc": {"lr": scale.sghmc_lr, "friction": scale.sghmc_friction, "num_samples": num_samples,
                  "mass_freeze_step": 1, "burn_in": 1, "sample_interval": 1, "chains": 1},
        "adam": {"lr": scale.adam_lr, "ema_decay": scale.adam_ema, "early_stopping_patience": 10 ** 6,
                 "members": num_samples,
                 "mc_samples": num_samples},
    }
    if scale.n_train is not None:
        d["data"]["n_train"] = scale.n_train
    if scale.n_val is not None:
        d["data"]["n_val"] = scale.n_val
    return TrainConfig.from_dict(d)


def rmd17_config(method: str, scale: Scale, molecule: str, seed: int = 0, num_samples: int = 8):
    """The paper's rMD17 protocol: 970 train + 30 validation frames of the training file; test file."""
    return base_config(method, scale, train=rmd17_file(molecule, "train"), test=rmd17_file(molecule, "test"),
                       protocol="rmd17", seed=seed, num_samples=num_samples)


def ccsd_t_config(method: str, scale: Scale, seed: int = 0, num_samples: int = 8):
    """CCSD(T) ethanol: 100 train / 30 validation / 870 test frames of the one available file."""
    return base_config(method, scale, train=CCSD_T_FILE, test=None, protocol="ccsd_t_ethanol", seed=seed,
                       num_samples=num_samples)


def measure_rate(cfg, workdir: Path, min_time: float = 3.0, max_steps: int = 60) -> Dict[str, float]:
    """Seconds per training step and per validation of ``cfg``'s method, model and data.

    Builds a throw-away Trainer in ``workdir``, takes 3 untimed steps, then times steps until
    ``min_time`` seconds or ``max_steps`` steps have passed, and one validation. SGHMC is timed
    in its sampler phase with no sample written (an Adam warm-start step costs about the same,
    bench/train_budget.py). The rate sets ``validate_every`` (about 50 validations per run) and
    is recorded with each run; SGHMC's schedule is planned by the trainer from its own rate.
    """
    from bnnmd.train import Trainer

    d = workdir / f"_rate_{cfg.method}"
    shutil.rmtree(d, ignore_errors=True)
    cfg = copy.deepcopy(cfg)
    if cfg.method == "sghmc":  # time sampler steps, and no sample writes (about 7 steps' cost each)
        s = cfg.sghmc
        s.schedule, s.warm_start_steps, s.mass_freeze_step, s.burn_in = "steps", 0, 10 ** 6, 10 ** 6
        cfg.training.max_steps = max(cfg.training.max_steps, s.burn_in + s.num_samples * s.sample_interval)
    t0 = time.perf_counter()
    trainer = Trainer(cfg.validate(), d, progress=False)
    setup = time.perf_counter() - t0
    for _ in range(3):
        trainer.train_step()
    n, t0 = 0, time.perf_counter()
    while n < 5 or (n < max_steps and time.perf_counter() - t0 < min_time):
        trainer.train_step()
        n += 1
    step_s = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    trainer.validate()
    val_s = time.perf_counter() - t0
    del trainer
    shutil.rmtree(d, ignore_errors=True)
    return {"step_s": step_s, "validate_s": val_s, "setup_s": setup, "timed_steps": n}


#: ``sghmc.schedule: time`` writes every sample by this share of ``training.time_limit`` (bnnmd's
#: planner, docs/training.md); here it only sizes ``validate_every`` and words the JSON header.
SAMPLES_BY = 0.95


def _validate_every(steps: float) -> int:
    return max(10, int(round(steps / 50)))


def plan_sghmc(cfg, budget: float, rate: Dict[str, float], scale: Scale):
    """SGHMC for ``budget`` seconds of training, its schedule planned by bnnmd (``sghmc.schedule: time``).

    ``training.time_limit = budget``; the trainer plans the phases during the run from its own
    step rate so that every sample is written by 0.95 x the budget (docs/training.md): the first
    ``scale.warm_start_fraction`` (0.85; smoke 0.5) of the steps that fit are the Adam + EMA warm start; of
    the sampler's steps the mass adapts for the first third, burn-in takes half of the rest and the
    samples of each chain are spread evenly over the other half; a chain with one sample takes it
    at the last planned step. The plan it made is in the run's ``schedule`` record
    (:func:`train_run`). ``rate`` (:func:`measure_rate`) sets ``validate_every``: about 50
    validations in the run. Equal compute does not depend on the plan: the baselines get the
    training time the SGHMC run really used.
    """
    s = cfg.sghmc
    s.schedule, s.warm_start_fraction = "time", scale.warm_start_fraction
    cfg.training.max_steps = 10 ** 9  # a cap only: the plan ends the run
    cfg.training.validate_every = _validate_every(SAMPLES_BY * budget / rate["step_s"])
    cfg.training.checkpoint_every = 10 ** 9  # the checkpoint at the end
    cfg.training.time_limit = float(budget)
    return cfg.validate()


def fixed_sghmc(cfg, scale: Scale):
    """The step-count schedule of an untimed scale (``paper``)."""
    s = cfg.sghmc
    per_chain = s.num_samples // s.chains
    s.mass_freeze_step, s.burn_in, s.sample_interval = scale.mass_freeze_step, scale.burn_in, scale.sample_interval
    s.warm_start_steps = scale.warm_start_steps or 0
    cfg.training.max_steps = s.warm_start_steps + s.burn_in + (per_chain - 1) * s.sample_interval
    cfg.training.validate_every = scale.validate_every
    cfg.training.checkpoint_every = 50 * scale.validate_every
    cfg.training.time_limit = None
    return cfg.validate()


def plan_baseline(cfg, time_limit: float, rate: Optional[Dict[str, float]], scale: Scale):
    """A baseline (Adam: MC dropout, ensemble, MAP) trains for ``time_limit`` seconds (equal compute)."""
    cfg.training.max_steps = 10 ** 9
    cfg.training.time_limit = float(time_limit)
    if scale.validate_every is not None:
        cfg.training.validate_every = scale.validate_every
    else:
        cfg.training.validate_every = _validate_every(time_limit / rate["step_s"])
    cfg.training.checkpoint_every = 10 ** 9
    return cfg.validate()


def schedule_of(cfg) -> Dict[str, Any]:
    t = cfg.training
    out = {"max_steps": t.max_steps if t.max_steps < 10 ** 9 else None, "time_limit_s": t.time_limit,
           "validate_every": t.validate_every, "batch_size": t.batch_size}
    if cfg.method == "sghmc":
        s = cfg.sghmc
        out.update(warm_start_steps=s.warm_start_steps, adam_lr=cfg.adam.lr, ema_decay=cfg.adam.ema_decay,
                   mass_freeze_step=s.mass_freeze_step, burn_in=s.burn_in, sample_interval=s.sample_interval,
                   num_samples=s.num_samples, chains=s.chains, lr=s.lr, friction=s.friction)
    else:
        a = cfg.adam
        out.update(lr=cfg.adam.lr, ema_decay=a.ema_decay, early_stopping_patience=a.early_stopping_patience,
                   members=a.members if cfg.method == "ensemble" else None,
                   dropout=a.dropout if cfg.method == "mc_dropout" else None,
                   mc_samples=a.mc_samples if cfg.method == "mc_dropout" else None)
    return out


# ---- training and evaluation ----------------------------------------------------------------
def preload() -> None:
    """Import every bnnmd module a run uses, now.

    A run takes an hour and bnnmd is installed editable: a module first imported after training
    (evaluation is lazy) would come from whatever the source tree holds by then. Importing
    everything at the start pins the code of the whole run to the commit recorded in its JSON.
    """
    import bnnmd.data  # noqa: F401
    import bnnmd.nn  # noqa: F401
    import bnnmd.posterior  # noqa: F401
    import bnnmd.train  # noqa: F401  (its trainer and methods)
    import bnnmd.uq  # noqa: F401  (its evaluation)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def train_run(cfg, run_dir: Path) -> Dict[str, Any]:
    """Train ``cfg`` into a fresh ``run_dir``; timings, steps, status and samples."""
    from bnnmd.train import Trainer

    if run_dir.exists():
        shutil.rmtree(run_dir)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, run_dir, progress=False)
    setup_s = time.perf_counter() - t0
    c0 = time.process_time()
    result = trainer.run()
    cpu_s = time.process_time() - c0
    wall_s = time.perf_counter() - t0
    info = {
        "method": cfg.method, "run_dir": str(run_dir), "status": result.status, "steps": result.step,
        "samples": len(result.samples), "train_s": float(trainer.elapsed), "setup_s": setup_s, "wall_s": wall_s,
        "cpu_s": cpu_s, "cpu_share": cpu_s / max(wall_s - setup_s, 1e-9),
        "steps_per_s": result.step / max(float(trainer.elapsed), 1e-9),
        "best_val_force_mae": result.best_val_force_mae, "schedule": schedule_of(cfg),
        "n_train": len(trainer.train_set), "n_val": len(trainer.val_set),
        "num_parameters": int(sum(p.numel() for p in trainer.model.parameters()) // max(1, trainer.k)),
        "last_lr": float(trainer.optimizer.param_groups[0]["lr"]),
    }
    if cfg.method == "sghmc" and info["samples"] < cfg.sghmc.num_samples:
        info["warning"] = (f"only {info['samples']} of {cfg.sghmc.num_samples} samples were collected before "
                           f"the time limit (status {result.status}): the budget was too short for the "
                           "trainer's plan, or the machine slowed down after it")
    if cfg.method == "sghmc":  # the counts the run used (planned in the trainer with schedule: time)
        info["schedule"].update(trainer.method.schedule())
    if cfg.method != "sghmc":
        info["members_stopped_early"] = int(trainer.method.stopped.sum())
    del trainer
    return info


def eval_data(spec, run_dir: Path, max_frames: Optional[int]):
    """``spec`` (a file or ``split:test``) as something :func:`bnnmd.uq.evaluate` takes.

    With ``max_frames`` only that many evenly spaced frames are used (the smoke scale).
    """
    if max_frames is None:
        return str(spec)
    from bnnmd.uq import resolve_data

    ds, _ = resolve_data(str(spec), run_dir / "samples")
    if len(ds) > max_frames:
        ds = ds.subset(np.linspace(0, len(ds) - 1, max_frames).round().astype(int))
    return ds


def evaluate_run(run_dir: Path, data, k: Optional[int] = None, keep_predictions: bool = False,
                 nece_width: Optional[Dict[str, float]] = None):
    """``bnnmd.uq.evaluate`` of ``run_dir/samples`` (no recalibration, as in the paper), timed.

    Returns ``(metrics, eval_s, result)``; ``result`` (with the per-sample predictions) only when
    ``keep_predictions``. ``k`` larger than the samples present is reduced to what is there.
    """
    from bnnmd.posterior import SampleError, read_sample, sample_files
    from bnnmd.uq import evaluate

    try:
        samples = sample_files(run_dir / "samples")
    except SampleError:  # no samples (a failed run)
        return None, 0.0, None
    method = read_sample(samples[0])["method"]
    if k is not None and method != "mc_dropout":
        k = min(k, len(samples))
    t0 = time.perf_counter()
    res = evaluate(run_dir / "samples", data, k=k, calibration=False, nece_width=nece_width)
    eval_s = time.perf_counter() - t0
    return res.to_dict(), eval_s, (res if keep_predictions else None)


# ---- output ---------------------------------------------------------------------------------
def machine_info() -> Dict[str, Any]:
    """The ``machine`` record of every paper result (bench/_machine.py reads the facts)."""
    return _machine_info("hostname", "platform", "processor", "cpu_count", "cpus_usable=usable_cpus",
                         "load_average_at_start=load_average", "python", "torch", "torch_threads",
                         "OMP_NUM_THREADS", "cuda", "cpu_model", "bnnmd", "git_commit")


def _strict(obj):
    if isinstance(obj, dict):
        return {str(k): _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, np.ndarray):
        return _strict(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    return obj


def header(experiment: str, args, scale: Scale, budget: Optional[float], question: str, paper_source: str,
           model_config: Dict[str, Any]) -> Dict[str, Any]:
    """The fields every result JSON starts with."""
    return {
        "experiment": experiment, "question": question, "paper": PAPER, "paper_source": paper_source,
        "scale": scale.name, "scale_note": scale.note,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": machine_info(),
        "budget_per_run_s": budget,
        "equal_compute": "every baseline gets training.time_limit = the training seconds that the SGHMC run "
                         "of the same comparison actually used (measured, validation included); SGHMC plans "
                         "its schedule in the trainer (sghmc.schedule: time, training.time_limit = the budget) "
                         "from its own step rate to write every sample by about {:.0%} of the budget. train_s "
                         "is wall-clock; cpu_s (process CPU time) shows whether other load on the machine "
                         "distorted a comparison".format(SAMPLES_BY)
        if scale.timed else "every baseline gets training.time_limit = the SGHMC run's measured training time",
        "model": model_config, "dtype": scale.dtype, "batch_size": scale.batch_size,
        "training_device": scale.device,
        "paper_setup_not_given": PAPER_NOT_GIVEN,
    }


def write_json(path: Path, data: Dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_strict(data), indent=1, allow_nan=False) + "\n")
    os.replace(tmp, path)
    return path


def fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if digits <= 0:
            return f"{v:.0f}"
        if v != 0 and (abs(v) < 10 ** -(digits - 1) or abs(v) >= 10 ** 5):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: Optional[str] = None) -> str:
    align = align or ("l" + "r" * (len(headers) - 1))
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    for r in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else fmt(c) for c in r) + " |")
    return "\n".join(lines)


def pick(metrics: Optional[Dict[str, Any]], keys: Sequence[str]) -> Dict[str, Any]:
    if metrics is None:
        return {k: None for k in keys}
    return {k: metrics.get(k) for k in keys}


FORCE_KEYS = ["forces.mae", "forces.rmse", "forces.mll", "forces.nece", "forces.nece_normalised", "forces.auc",
              "forces.n_outliers", "forces.mean_std", "forces.mean_epistemic_std", "forces.mean_aleatoric_std",
              "forces.within_1sigma", "forces.within_2sigma"]
ENERGY_KEYS = ["energy.mae", "energy.rmse", "energy.mll", "energy.nece", "energy.mean_std",
               "energy.within_1sigma", "energy.within_2sigma"]


def print_plan(lines: List[str]) -> None:
    for line in lines:
        log(line)


def dry_run_dump(cfgs: Dict[str, Any]) -> None:
    for name, cfg in cfgs.items():
        print(f"# ---- {name}")
        print(cfg.dump())
