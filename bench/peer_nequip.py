"""bnnmd against the peer code nequip: equal architecture, equal wall clock, one core each.

    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py                  # 3 x 1500 s, one after another
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --parallel       # nequip on CPU 1 beside bnnmd on CPU 0
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --smoke          # seconds: proves the script runs
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --budget 60 --out /tmp/peer60.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --rows map,sghmc --chains 4   # 4 chains x 2 samples
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --dataset water --parallel --rows nequip,map
    .venv/bin/python bench/peer_nequip.py merge --out bench/results/peer_nequip_water.json A.json B.json C.json

What it measures. rMD17 ethanol (../shared/data/rmd17/rmd17_ethanol_{train,test}_01.npz, kcal/mol
and A for both codes): 970 training and 30 validation frames of the training file, drawn once
here (bnnmd's ``protocol_split("rmd17", ...)``, seed ``--seed``) and given to both codes (bnnmd
through ``data.split``, nequip as extxyz files of the same frames); every row is evaluated on
the same 1000-frame test file. The architecture is the same for both (3 interaction blocks,
l_max 1, 32 features of both parities, cutoff 5 A, 8 Bessel functions with the p = 6 polynomial
envelope, radial MLP of 2 hidden layers x 64; float64; batch 5). Rows:

* ``nequip``: nequip's recipe (``nequip-train``): Adam lr 0.01, EMA 0.999 of the weights, MSE
  loss total energy : forces = 1 : 1000, ReduceLROnPlateau (x0.5 after 5 epochs without
  improvement, as bnnmd's ``adam.lr_factor`` / ``lr_patience``), validation every epoch, the
  best-validation (force MAE, EMA weights) checkpoint; Lightning's ``max_time`` = the budget.
* ``bnnmd map``: Adam lr 0.01 with ``adam.ema_decay`` 0.999, the same plateau rule, validation
  every epoch, best-validation parameters; ``training.time_limit`` = the budget.
* ``bnnmd sghmc``: k = 8 samples of one chain (``--chains N``: N chains through the sample
  dimension, 8 / N samples each, ``sghmc.chains``); Adam + EMA warm start first, then
  adaptive-mass SGHMC; ``sghmc.schedule: time`` with ``training.time_limit`` = the budget: the
  trainer plans the phases from its own step rate so that the 8 samples are written by 0.95 x the
  budget (``--warm-start-fraction`` of the steps in the warm start; docs/training.md).
  Each chain has its own warm start from its own initialisation; ``--warm-start-shared``
  (``sghmc.warm_start_shared``) starts every chain's sampling from chain 0's warm start.

``--dataset water``: the bundled periodic liquid water (32 H2O, GFN2-xTB energies, forces and
stresses; eV and A): 270 training and 30 validation frames of ``water_gfn2_train`` (seeded), the
100 frames of ``water_gfn2_test`` (300 K) and the 100 of ``water_gfn2_ood`` (600-1000 K and 10 %
compressed) scored apart. Model ``WATER_ARCH`` (examples/water/train.yaml's: 2 blocks, l_max 1, 16
features, cutoff 4 A), float32, batch 2, 900 s. Both codes train on stress: bnnmd with
``training.stress_weight: 1`` (its likelihood's own sigmas), nequip with ``EnergyForceStressLoss``
on per-atom energy, forces and stress (``--nequip-loss``: ``balanced``, each term weighted so that
it counts the same at 1 meV/atom, 0.05 eV/A and 0.05 GPa, or ``default``, nequip's documented
1 : 1 : 1; ``stress_loss_coeffs``). The table adds energy MAE in meV/atom, stress MAE in GPa and the
out-of-distribution columns; a target "map stress MAE <= nequip's" is added. The force ROC-AUC
outlier threshold is ``--auc-threshold`` (default '1 kcal/mol/A' for ethanol, the paper's, and
'0.25 eV/A' for water, docs/results.md's). ``merge`` joins runs made side by side on the same split
and budget (sghmc rows keyed by chain count) and recomputes the targets.

Test metrics: force MAE, RMSE and energy MAE for every row (nequip's model is evaluated here
on the test frames through its own Python API; MAE/RMSE are bnnmd.uq's functions on its
predictions), force MLL and ROC-AUC for the bnnmd rows (``bnn-eval --json``). The targets,
reported pass/fail: bnnmd map force MAE <= nequip's; bnnmd sghmc (k = 8) force MAE <= bnnmd
map with a higher force MLL and AUC.

nequip is never a project dependency: the script creates a throw-away virtual environment
(``bench/.venv-nequip``, git-ignored) with ``python3 -m venv``, installs the CPU build
``torch==2.13.0`` into it (an unpinned torch would pull a CUDA build) and then ``nequip``.
If that fails, the nequip row is written as ``skipped`` with the reason and the bnnmd rows
still run. nequip trains in a subprocess of that environment; its test predictions are made by
this same file run there (``python bench/peer_nequip.py nequip-predict ...``, internal).

Every run uses one thread (OMP_NUM_THREADS=1, torch.set_num_threads(1)). By default the runs
go one after another; with ``--parallel`` nequip runs on CPU 1 (``taskset -c 1``) while the two
bnnmd rows run on CPU 0, one after the other. Writes ``bench/results/peer_nequip.json``
(``--smoke``: /tmp/bnnmd_peer_nequip_smoke/peer_nequip.json) and prints a Markdown table.
"""

from __future__ import annotations

import os

# one thread, set before torch is imported (OpenMP reads it once)
os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "paper"))
import common as C  # noqa: E402  (machine info, training runs, strict JSON, tables)

EXPERIMENT = "peer_nequip"
DATA_DIR = REPO.parent / "shared" / "data" / "rmd17"
TRAIN_FILE = DATA_DIR / "rmd17_ethanol_train_01.npz"
TEST_FILE = DATA_DIR / "rmd17_ethanol_test_01.npz"
NEQUIP_VENV = REPO / "bench" / ".venv-nequip"
TORCH_PIN = "torch==2.13.0"  # the CPU build on local disk; keep in step with the project's torch

#: bnnmd's new recipe keys (``bnnmd.train.AdamSection``, ``SGHMCSection``): ``adam.ema_decay`` and
#: ``sghmc.schedule`` (the in-trainer plan, warm start included). "auto": use them when the
#: installed bnnmd knows them (otherwise the rows run without EMA and without a warm start, and
#: the JSON says so); True: require them
#: (error if missing); False: never use them (both set to 0 where they exist, since their
#: defaults are on).
USE_NEW_RECIPE_KEYS: Any = "auto"
EMA_DECAY = 0.999  # both codes
ADAM_LR = 0.01  # both codes
LR_FACTOR, LR_PATIENCE, MIN_LR = 0.5, 5, 1e-5  # plateau rule of both codes (bnnmd's defaults)
NEQUIP_LOSS = {"total_energy": 1.0, "forces": 1000.0}  # MSE weights, as nequip's rMD17 examples
NEQUIP_PER_ATOM_ENERGY = False  # the energy MSE on total energies (as the NequIP paper's loss)
BATCH_SIZE = 5
NUM_SAMPLES = 8  # k of the sghmc row, pooled over --chains (default one chain)
# the sghmc row plans its own schedule in the trainer (sghmc.schedule: time): the first
# WARM_START_FRACTION of the steps that fit 0.95 x the budget are the Adam + EMA warm start
WARM_START_FRACTION = float(getattr(C.Scale, "warm_start_fraction", 0.5))
NEQUIP_PREDICT_BATCH = 50
GPA_PER_EV_A3 = 160.21766208  # 1 eV/A^3 in GPa

#: The architecture, in bnnmd's ModelConfig keys; NEQUIP_KEYS maps them to NequIPGNNModel's.
ARCH = {"num_layers": 3, "l_max": 1, "num_features": 32, "cutoff": 5.0, "num_basis": 8, "cutoff_p": 6,
        "radial_hidden": 64, "radial_layers": 2, "parity": True}
SMOKE_ARCH = {"num_layers": 1, "l_max": 1, "num_features": 4, "cutoff": 4.0, "num_basis": 4, "cutoff_p": 6,
              "radial_hidden": 8, "radial_layers": 1, "parity": True}
NEQUIP_KEYS = {"num_layers": "num_layers", "l_max": "l_max", "num_features": "num_features", "cutoff": "r_max",
               "num_basis": "num_bessels", "cutoff_p": "polynomial_cutoff_p", "radial_hidden": "radial_mlp_width",
               "radial_layers": "radial_mlp_depth", "parity": "parity"}
ARCH_NOTE = ("The interaction path is the same in both codes, parameter for parameter (linear_1, radial MLP, "
             "tensor product paths and linear_2 of every block; both drop the irreps no path can reach, e.g. "
             "0o at l_max 1). Each code keeps its own defaults elsewhere: nequip's self-connection is a tensor "
             "product with a 32-feature type embedding and absent in the first block (~164k of its ~217k "
             "parameters), bnnmd's a per-species linear in every block; bnnmd adds residual updates "
             "(model.resnet) and the two small sigma heads of the aleatoric std (~75k parameters in all).")
SMOKE_SIZES = {"n_train": 20, "n_val": 5, "n_test": 10}
DEFAULT_BUDGET, SMOKE_BUDGET = 1500.0, 20.0

#: The periodic set (--dataset water): examples/water/train.yaml's model (2 blocks, l_max 1, 16
#: features, cutoff 4 A) with the same radial basis and MLP as ARCH.
WATER_ARCH = {"num_layers": 2, "l_max": 1, "num_features": 16, "cutoff": 4.0, "num_basis": 8, "cutoff_p": 6,
              "radial_hidden": 64, "radial_layers": 2, "parity": True}
#: Per dataset: the architecture, batch size, dtype, budget, the ROC-AUC outlier threshold (with
#: its unit, as ``bnn-eval --auc-threshold`` takes it) and whether the labels have stresses.
#: ethanol: rMD17 files of ../shared/data, kcal/mol and A, the paper's threshold. water: the bundled
#: GFN2-xTB liquid water (32 H2O, periodic, eV and A, stress in eV/A^3): 270/30 of water_gfn2_train,
#: test = water_gfn2_test (300 K), and the out-of-distribution water_gfn2_ood (hot and compressed).
DATASETS = {
    "ethanol": {"title": "rMD17 ethanol", "arch": ARCH, "batch_size": BATCH_SIZE, "dtype": "float64",
                "budget": DEFAULT_BUDGET, "auc_threshold": "1 kcal/mol/A", "stress": False,
                "units": "kcal/mol and A (forces kcal/mol/A) for both codes"},
    "water": {"title": "liquid water, 32 H2O, GFN2-xTB (bundled)", "arch": WATER_ARCH, "batch_size": 2,
              "dtype": "float32", "budget": 900.0, "auc_threshold": "0.25 eV/A", "stress": True,
              "n_train": 270, "n_val": 30, "train": "water_gfn2_train", "test": "water_gfn2_test",
              "ood": "water_gfn2_ood",
              "units": "eV and A for both codes (forces eV/A); the table gives energy in meV/atom and stress in GPa"},
}


def log(msg: str) -> None:
    C.log(msg)


# ---- the split and the data both codes read -------------------------------------------------
def make_split(args, workdir: Path):
    """The 970/30 split of the training file (water: 270/30; smoke: 20/5 and 10 test frames) as
    split.json."""
    from bnnmd.data import Split, SplitPart, bundled_path, protocol_split, random_split, read_dataset

    ds = DATASETS[args.dataset]
    if args.dataset == "water":
        train_f, test_f = bundled_path(ds["train"]), bundled_path(ds["test"])
        s = random_split(len(read_dataset(train_f)), ds["n_train"], ds["n_val"], 0, seed=args.seed,
                         file=str(train_f), protocol="random")
        split = Split(s.train, s.val, SplitPart(str(test_f), np.arange(len(read_dataset(test_f)))),
                      seed=args.seed, protocol="random")
    else:
        for f in (TRAIN_FILE, TEST_FILE):
            if not f.exists():
                raise SystemExit(f"error: {f} does not exist; this benchmark needs the shared rMD17 data "
                                 "(../shared/data/rmd17 beside the repository)")
        split = protocol_split("rmd17", TRAIN_FILE, TEST_FILE, seed=args.seed)
    if args.smoke:
        rng = np.random.default_rng(args.seed)
        n = SMOKE_SIZES
        tr = np.sort(rng.choice(split.train.indices, n["n_train"], replace=False))
        va = np.sort(rng.choice(split.val.indices, n["n_val"], replace=False))
        te = np.linspace(0, len(split.test) - 1, n["n_test"]).round().astype(np.int64)
        split = Split(SplitPart(split.train.file, tr), SplitPart(split.val.file, va),
                      SplitPart(split.test.file, split.test.indices[te]), seed=args.seed,
                      protocol=split.protocol)
    path = workdir / "split.json"
    split.save(path)
    return split, path


def write_extxyz(dataset, path: Path) -> None:
    """The frames of a bnnmd AtomicDataset as extxyz (energy and forces in the dataset's units)."""
    import ase
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    if dataset.energy_unit != "kcal/mol" or dataset.length_unit != "A":
        raise SystemExit(f"error: {dataset.source}: expected kcal/mol and A, got {dataset.energy_unit} and "
                         f"{dataset.length_unit}")
    frames = []
    off = np.concatenate([[0], np.cumsum(dataset.n_atoms)])
    for f in range(len(dataset)):
        sl = slice(off[f], off[f + 1])
        atoms = ase.Atoms(numbers=dataset.atomic_numbers[sl], positions=dataset.positions[sl], pbc=False)
        atoms.calc = SinglePointCalculator(atoms, energy=float(dataset.energy[f]), forces=dataset.forces[sl])
        frames.append(atoms)
    path.parent.mkdir(parents=True, exist_ok=True)
    ase.io.write(path, frames, format="extxyz")


# ---- nequip: the throw-away environment -----------------------------------------------------
def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _nequip_versions(venv: Path) -> Optional[Dict[str, str]]:
    py = _venv_python(venv)
    if not py.exists():
        return None
    code = ("import json, torch, e3nn, nequip, lightning; print(json.dumps({'nequip': nequip.__version__, "
            "'torch': torch.__version__, 'e3nn': e3nn.__version__, 'lightning': lightning.__version__}))")
    r = subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONNOUSERSITE": "1"})
    if r.returncode != 0:
        return None
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None


def ensure_nequip(venv: Path, version: Optional[str], reinstall: bool, log_path: Path) -> Dict[str, Any]:
    """Create ``venv`` and install nequip into it (once); ``{"ok": bool, "versions"/"reason": ...}``."""
    venv = venv.resolve()
    if venv.exists() and (not (venv / "pyvenv.cfg").exists() or venv == Path(sys.prefix).resolve()):
        return {"ok": False, "reason": f"{venv} exists and is not a throw-away virtual environment (no pyvenv.cfg, "
                                       "or it is the one running this script); pass another --nequip-venv"}
    if reinstall and venv.exists():
        shutil.rmtree(venv)
    have = _nequip_versions(venv)
    if have is not None and (version is None or have["nequip"] == version):
        log(f"nequip {have['nequip']} found in {venv} (torch {have['torch']})")
        return {"ok": True, "versions": have, "installed_now": False}
    if venv.exists():  # broken, or another nequip version than asked for
        shutil.rmtree(venv)
    python3 = shutil.which("python3") or sys.executable
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install"]
    steps = [("create the venv", [python3, "-m", "venv", str(venv)]),
             (f"pip install {TORCH_PIN}", pip + [TORCH_PIN]),
             # torch pinned again so that nequip cannot replace it
             ("pip install nequip", pip + [TORCH_PIN, f"nequip=={version}" if version else "nequip"])]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as fh:
        for what, cmd in steps:
            log(f"nequip environment: {what} ...")
            fh.write(f"$ {' '.join(cmd)}\n")
            fh.flush()
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=3600,
                                    env={**os.environ, "PYTHONNOUSERSITE": "1"}).returncode
            except (OSError, subprocess.TimeoutExpired) as exc:
                rc = f"{type(exc).__name__}: {exc}"
                fh.write(f"{rc}\n")
            fh.flush()
            if rc != 0:
                tail = _tail(log_path, 15)
                how = rc if isinstance(rc, str) else f"exit {rc}"
                return {"ok": False, "reason": f"{what} failed ({how}); see {log_path}. Last lines:\n{tail}"}
    have = _nequip_versions(venv)
    if have is None:
        return {"ok": False, "reason": f"nequip installed but `import nequip` fails in {venv}; see {log_path}"}
    log(f"nequip {have['nequip']} installed in {venv} (torch {have['torch']})")
    return {"ok": True, "versions": have, "installed_now": True}


def _tail(path: Path, n: int) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---- nequip: config, training, prediction ---------------------------------------------------
def stress_loss_coeffs(train_ds, kind: str) -> Dict[str, float]:
    """nequip's loss weights on the periodic set (``--nequip-loss``):

    * ``default``: nequip's documented ``EnergyForceStressLoss`` defaults, 1 : 1 : 1 on the MSE of
      the per-atom energy, the force components and the stress components (in eV and A the force
      term then dominates);
    * ``balanced`` (forces = 1): 1 / target^2 at 1 meV/atom, 0.05 eV/A and 0.05 GPa, so that each term counts
      the same at errors a user would accept here;
    * ``variance``: 1 / (label variance on the training frames), the largest = 1. Measured 2026-12-07: the per-atom
      energy varies so little between frames that the forces got 4.5e-5 of the energy's weight and
      nequip reached a force MAE of 0.147 eV/A (bench/results/peer_nequip_water_a.json); kept only
      to reproduce that run.
    """
    if kind == "default":
        return {"total_energy": 1.0, "forces": 1.0, "stress": 1.0}
    if kind == "balanced":
        target = {"total_energy": 1e-3, "forces": 0.05, "stress": 0.05 / GPA_PER_EV_A3}
        return {k: (target["forces"] / v) ** 2 for k, v in target.items()}
    n = train_ds.n_atoms.astype(np.float64)
    var = {"total_energy": float(np.var(train_ds.energy / n)),
           "forces": float(np.mean(train_ds.forces.astype(np.float64) ** 2)),
           "stress": float(np.var(train_ds.stress.reshape(len(train_ds), 9), axis=0).mean())}
    w = {k: 1.0 / max(v, 1e-30) for k, v in var.items()}
    top = max(w.values())
    return {k: v / top for k, v in w.items()}


def nequip_config(arch: Dict[str, Any], type_names: List[str], data: Dict[str, Path], out_dir: Path,
                  budget: float, dtype: str, seed: int, batch_size: int = BATCH_SIZE,
                  stress_coeffs: Optional[Dict[str, float]] = None) -> Dict[str, Any]:
    """A ``nequip-train`` config (hydra/omegaconf YAML as a dict) of the benchmark's recipe;
    ``stress_coeffs``: train on per-atom energy, forces and stress with these MSE weights."""
    monitored = "val0_epoch/weighted_sum"  # = val forces MAE (the only weighted val metric)
    seconds = max(1, int(round(budget)))
    max_time = f"{seconds // 86400:02d}:{seconds % 86400 // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
    model = {"_target_": "nequip.model.NequIPGNNModel", "seed": seed, "model_dtype": dtype,
             "type_names": type_names, **{NEQUIP_KEYS[k]: v for k, v in arch.items()},
             "avg_num_neighbors": "${training_data_stats:num_neighbors_mean}",
             "per_type_energy_scales": "${training_data_stats:per_type_forces_rms}",
             "per_type_energy_shifts": "${training_data_stats:per_atom_energy_mean}"}
    return {
        "run": ["train"],
        "data": {
            "_target_": "nequip.data.datamodule.ASEDataModule", "seed": seed,
            "train_file_path": str(data["train"]), "val_file_path": str(data["val"]),
            "transforms": [{"_target_": "nequip.data.transforms.ChemicalSpeciesToAtomTypeMapper",
                            "model_type_names": type_names},
                           {"_target_": "nequip.data.transforms.NeighborListTransform", "r_max": arch["cutoff"]}],
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": batch_size,
                                 "shuffle": True, "num_workers": 0},
            "val_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": 10, "num_workers": 0},
            "stats_manager": {"_target_": "nequip.data.CommonDataStatisticsManager",
                              "dataloader_kwargs": {"batch_size": 10}, "type_names": type_names},
        },
        "trainer": {
            "_target_": "lightning.Trainer", "accelerator": "cpu", "devices": 1, "max_epochs": -1,
            "max_time": max_time, "check_val_every_n_epoch": 1, "log_every_n_steps": 50,
            "enable_progress_bar": False, "num_sanity_val_steps": 0,
            "logger": {"_target_": "lightning.pytorch.loggers.CSVLogger", "save_dir": str(out_dir),
                       "name": "csv", "version": ""},
            "callbacks": [{"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": monitored,
                           "dirpath": str(out_dir), "filename": "best"},
                          # saves nothing while training, then last.ckpt of the final state (steps, Timer)
                          {"_target_": "lightning.pytorch.callbacks.ModelCheckpoint", "monitor": None,
                           "dirpath": str(out_dir / "final"), "save_top_k": 0, "save_last": True}],
        },
        "training_module": {
            "_target_": "nequip.train.EMALightningModule", "ema_decay": EMA_DECAY,
            "loss": ({"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": NEQUIP_PER_ATOM_ENERGY,
                      "coeffs": dict(NEQUIP_LOSS)} if stress_coeffs is None else
                     {"_target_": "nequip.train.EnergyForceStressLoss", "per_atom_energy": True,
                      "coeffs": dict(stress_coeffs)}),
            "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics" if stress_coeffs is None
                            else "nequip.train.EnergyForceStressMetrics",
                            "coeffs": {"forces_mae": 1.0, "forces_rmse": None, "total_energy_mae": None,
                                       "total_energy_rmse": None}},
            "train_metrics": "${training_module.val_metrics}",
            "optimizer": {"_target_": "torch.optim.Adam", "lr": ADAM_LR},
            "lr_scheduler": {"scheduler": {"_target_": "torch.optim.lr_scheduler.ReduceLROnPlateau",
                                           "factor": LR_FACTOR, "patience": LR_PATIENCE, "min_lr": MIN_LR},
                             "monitor": monitored, "interval": "epoch", "frequency": 1},
            "model": model,
        },
        "global_options": {"allow_tf32": False},
    }


def _pin(cpu: Optional[int]) -> List[str]:
    if cpu is None:
        return []
    if shutil.which("taskset") is None:
        raise SystemExit("error: --parallel needs `taskset` (util-linux) to pin nequip to CPU 1")
    return ["taskset", "-c", str(cpu)]


def start_nequip(venv: Path, workdir: Path, split, arch, budget: float, dtype: str, seed: int,
                 cpu: Optional[int], stress: bool = False, batch_size: int = BATCH_SIZE, ood_ds=None,
                 loss: str = "balanced"):
    """Write the data and the config, start ``nequip-train``; returns the running job. ``stress``:
    the periodic set (extxyz with cells and stresses, ASE's units; the stress term in the loss)."""
    import yaml

    from bnnmd.data import write_extxyz as write_periodic

    nq = workdir / "nequip"
    if nq.exists():
        shutil.rmtree(nq)
    train, val, test = split.datasets()
    parts = {"train": train, "val": val, "test": test, **({"ood": ood_ds} if ood_ds is not None else {})}
    data = {part: nq / "data" / f"{part}.xyz" for part in parts}
    for part, ds in parts.items():
        (write_periodic if stress else write_extxyz)(ds, data[part])
    from bnnmd.data import TypeMapper

    type_names = TypeMapper.from_atomic_numbers(train.atomic_numbers).type_names  # bnnmd's order (by Z)
    out_dir = nq / "run"
    coeffs = stress_loss_coeffs(train, loss) if stress else None
    cfg = nequip_config(arch, list(type_names), data, out_dir, budget, dtype, seed, batch_size, coeffs)
    cfg_dir = nq / "config"
    cfg_dir.mkdir(parents=True)
    (cfg_dir / "peer.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = _pin(cpu) + [str(venv / "bin" / "nequip-train"), "-cp", str(cfg_dir), "-cn", "peer",
                       f"hydra.run.dir={out_dir}"]
    log_path = nq / "train.log"
    log(f"nequip: training for {budget:.0f} s{f' on CPU {cpu}' if cpu is not None else ''} (log {log_path})")
    fh = open(log_path, "w")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=nq, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                                 "PYTHONNOUSERSITE": "1"})
    return {"proc": proc, "fh": fh, "t0": t0, "dir": nq, "out_dir": out_dir, "data": data, "log": log_path,
            "cmd": cmd, "budget": budget, "cpu": cpu, "type_names": list(type_names), "stress": stress,
            "loss_coeffs": coeffs, "loss": loss if stress else None}


def scores(energy, forces, stress, ds) -> Dict[str, Any]:
    """MAE and RMSE of one model's predictions of ``ds`` (bnnmd.uq's functions; stress: the six
    Voigt components, as ``bnn-eval``), named as ``bnn-eval --json`` names them."""
    from bnnmd.bayes.likelihood import VOIGT_COLS, VOIGT_ROWS
    from bnnmd.uq import mae, rmse

    out = {"forces.mae": mae(forces.reshape(1, -1), ds.forces.reshape(-1)),
           "forces.rmse": rmse(forces.reshape(1, -1), ds.forces.reshape(-1)),
           "energy.mae": mae(energy.reshape(1, -1), ds.energy),
           "energy.rmse": rmse(energy.reshape(1, -1), ds.energy),
           "forces.mll": None, "forces.auc": None, "energy.mll": None}
    if stress is not None and ds.stress is not None:
        rows, cols = list(VOIGT_ROWS), list(VOIGT_COLS)
        y = ds.stress[:, rows, cols].reshape(-1)
        out.update({"stress.mae": mae(stress[:, rows, cols].reshape(1, -1), y),
                    "stress.rmse": rmse(stress[:, rows, cols].reshape(1, -1), y), "stress.mll": None})
    return with_derived(out, ds)


def with_derived(metrics: Dict[str, Any], ds) -> Dict[str, Any]:
    """Add the periodic set's table units: energy MAE per atom in meV, stress MAE in GPa."""
    if ds.stress is None or metrics.get("energy.mae") is None:
        return metrics
    if ds.energy_unit != "eV" or ds.length_unit != "A":
        raise SystemExit(f"error: {ds.source}: expected eV and A, got {ds.energy_unit} and {ds.length_unit}")
    out = dict(metrics)
    out["energy.mae_mev_per_atom"] = 1000.0 * metrics["energy.mae"] / float(np.mean(ds.n_atoms))
    if metrics.get("stress.mae") is not None:
        out["stress.mae_gpa"] = GPA_PER_EV_A3 * metrics["stress.mae"]
    return out


def _nequip_predict(job, venv: Path, part: str, best: Path, last: Path):
    """Energies, forces (and stresses) of ``job``'s ``part`` frames by nequip's best checkpoint."""
    pred = job["dir"] / f"{part}_predictions.npz"
    cmd = _pin(job["cpu"]) + [str(_venv_python(venv)), str(Path(__file__).resolve()), "nequip-predict",
                              "--ckpt", str(best), "--last", str(last), "--xyz", str(job["data"][part]),
                              "--out", str(pred)] + (["--stress"] if job.get("stress") else [])
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                 "PYTHONNOUSERSITE": "1"})
    if r.returncode != 0:
        raise RuntimeError("nequip prediction failed:\n" + "\n".join((r.stdout + r.stderr).splitlines()[-12:]))
    return np.load(pred)


def finish_nequip(job, venv: Path, test_ds, ood_ds=None) -> Dict[str, Any]:
    """Wait for ``nequip-train``, predict the test (and out-of-distribution) frames with its best
    checkpoint, score them."""
    proc = job["proc"]
    try:
        rc = proc.wait(timeout=max(600.0, 2 * job["budget"] + 600))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
        job["fh"].close()
        return {"status": "failed", "reason": f"nequip-train did not finish in time; see {job['log']}"}
    wall_s = time.perf_counter() - job["t0"]
    job["fh"].close()
    best, last = job["out_dir"] / "best.ckpt", job["out_dir"] / "final" / "last.ckpt"
    if rc != 0 or not best.exists() or not last.exists():
        missing = "" if best.exists() and last.exists() else f" without {best if not best.exists() else last}"
        return {"status": "failed", "wall_s": wall_s,
                "reason": f"nequip-train exited {rc}{missing}; see {job['log']}. "
                          f"Last lines:\n{_tail(job['log'], 12)}"}
    log("nequip: predicting the test frames with best.ckpt")
    t0 = time.perf_counter()
    try:
        p = _nequip_predict(job, venv, "test", best, last)
        p_ood = _nequip_predict(job, venv, "ood", best, last) if ood_ds is not None else None
    except RuntimeError as exc:
        return {"status": "failed", "wall_s": wall_s, "reason": str(exc)}
    eval_s = time.perf_counter() - t0
    info = json.loads(str(p["info"]))
    # the frames must be the test frames bnnmd is evaluated on, in the same order
    for q, ds in ((p, test_ds), (p_ood, ood_ds)):
        if q is not None and (q["positions"].shape != ds.positions.shape
                              or not np.allclose(q["positions"], ds.positions, atol=1e-6)):
            return {"status": "failed", "reason": f"nequip's frames differ from {ds.source}'s frames"}

    def stress_of(q):
        return q["stress"] if "stress" in q.files else None

    row = {"status": "ok", "wall_s": wall_s, "train_s": info.get("train_s"), "steps": info.get("global_step"),
           "samples": 1, "eval_s": eval_s, "best_epoch": info.get("best_epoch"),
           "best_step": info.get("best_global_step"), "best_val_force_mae": info.get("best_val_force_mae"),
           "num_parameters": info.get("num_parameters"), "torch_threads": info.get("torch_threads"),
           "metrics": scores(p["energy"], p["forces"], stress_of(p), test_ds),
           "run_dir": str(job["out_dir"]), "command": " ".join(job["cmd"])}
    if job.get("loss_coeffs") is not None:
        row["loss_coeffs"], row["settings"] = job["loss_coeffs"], {"loss": job["loss"]}
    if p_ood is not None:
        row["ood_metrics"] = scores(p_ood["energy"], p_ood["forces"], stress_of(p_ood), ood_ds)
    return row


def nequip_predict_main(argv: List[str]) -> int:
    """Internal: runs in nequip's environment. Energies and forces of the frames of ``--xyz``."""
    p = argparse.ArgumentParser(prog="peer_nequip.py nequip-predict")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--last", required=True, help="the final state's checkpoint: training time and steps")
    p.add_argument("--xyz", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--stress", action="store_true", help="also the stresses (periodic frames)")
    a = p.parse_args(argv)
    import ase.io
    import torch
    from nequip.data import AtomicDataDict, from_ase
    from nequip.data.transforms import ChemicalSpeciesToAtomTypeMapper, NeighborListTransform
    from nequip.model.saved_models.load_utils import load_saved_model
    from nequip.nn import graph_model
    from nequip.utils.global_state import set_global_state

    torch.set_num_threads(1)
    set_global_state(allow_tf32=False)
    model = load_saved_model(a.ckpt, compile_mode="eager")  # the EMA weights (nequip's rule)
    model.eval()
    r_max = float(model.metadata[graph_model.R_MAX_KEY])
    names = model.metadata[graph_model.TYPE_NAMES_KEY].split(" ")
    transforms = [ChemicalSpeciesToAtomTypeMapper(model_type_names=names), NeighborListTransform(r_max=r_max)]
    frames = ase.io.read(a.xyz, index=":")
    energy, forces, stress = [], [], []
    for s in range(0, len(frames), NEQUIP_PREDICT_BATCH):
        batch = []
        for atoms in frames[s:s + NEQUIP_PREDICT_BATCH]:
            d = from_ase(atoms)
            for t in transforms:
                d = t(d)
            batch.append(d)
        out = model(AtomicDataDict.batched_from_list(batch))
        energy.append(out[AtomicDataDict.TOTAL_ENERGY_KEY].detach().reshape(-1).double().numpy())
        forces.append(out[AtomicDataDict.FORCE_KEY].detach().double().numpy())
        if a.stress:
            stress.append(out[AtomicDataDict.STRESS_KEY].detach().double().reshape(-1, 3, 3).numpy())
    info: Dict[str, Any] = {"torch_threads": torch.get_num_threads(),
                            "num_parameters": int(sum(q.numel() for q in model.parameters()))}
    for key, path in (("best", a.ckpt), ("last", a.last)):
        ck = torch.load(path, map_location="cpu", weights_only=False)
        if key == "last":
            timer = ck.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
            info.update(train_s=timer.get("train"), global_step=int(ck["global_step"]))
        else:
            info.update(best_global_step=int(ck["global_step"]), best_epoch=int(ck["epoch"]))
            for name, cb in ck.get("callbacks", {}).items():
                if name.startswith("ModelCheckpoint") and cb.get("best_model_score") is not None:
                    info["best_val_force_mae"] = float(cb["best_model_score"])
    extra = {"stress": np.concatenate(stress)} if a.stress else {}
    np.savez(a.out, energy=np.concatenate(energy), forces=np.concatenate(forces),
             positions=np.concatenate([f.get_positions() for f in frames]), info=json.dumps(info), **extra)
    return 0


# ---- bnnmd ---------------------------------------------------------------------------------
def new_recipe_keys() -> Dict[str, bool]:
    from dataclasses import fields

    from bnnmd.train import AdamSection, SGHMCSection

    have = {"adam.ema_decay": "ema_decay" in {f.name for f in fields(AdamSection)},
            "sghmc.schedule": "schedule" in {f.name for f in fields(SGHMCSection)}}
    if USE_NEW_RECIPE_KEYS is True and not all(have.values()):
        missing = ", ".join(k for k, v in have.items() if not v)
        raise SystemExit(f"error: USE_NEW_RECIPE_KEYS is True but this bnnmd's TrainConfig has no {missing} "
                         "(bnnmd.train.AdamSection, SGHMCSection)")
    return have


def bnnmd_config(method: str, arch, split, split_path: Path, args, keys: Dict[str, bool], steps_per_epoch: int):
    from bnnmd.train import TrainConfig

    use = USE_NEW_RECIPE_KEYS is not False
    adam = {"lr": ADAM_LR, "lr_factor": LR_FACTOR, "lr_patience": LR_PATIENCE, "min_lr": MIN_LR,
            "early_stopping_patience": 10 ** 6}  # no early stop: the whole budget is used
    if keys["adam.ema_decay"]:
        adam["ema_decay"] = EMA_DECAY if use else 0.0
    sghmc = {"num_samples": NUM_SAMPLES, "chains": args.chains, "schedule": "time",
             "warm_start_fraction": args.warm_start_fraction if use else 0.0}
    if args.warm_start_shared:
        sghmc["warm_start_shared"] = True
    data = {"train": split.train.file, "test": split.test.file, "protocol": split.protocol, "split": str(split_path)}
    if split.protocol == "random":  # the config asks for the counts; the split file gives the frames
        data.update(n_train=len(split.train.indices), n_val=len(split.val.indices))
    training = {"batch_size": args.batch_size, "device": "cpu", "max_steps": 10 ** 9,
                "time_limit": float(args.budget),  # sghmc: planned to end by 0.95 x this
                "validate_every": steps_per_epoch, "checkpoint_every": 10 ** 9}
    if DATASETS[args.dataset]["stress"]:
        training["stress_weight"] = 1.0
    d = {"method": method, "seed": args.seed, "dtype": args.dtype, "data": data, "model": dict(arch),
         "training": training, "sghmc": sghmc, "adam": adam}
    return TrainConfig.from_dict(d)


def train_bnnmd(cfg, run_dir: Path) -> Dict[str, Any]:
    """bench/paper/common.py's ``train_run``, its ``status`` renamed ``train_status`` (a row's
    ``status`` says whether the row ran)."""
    info = C.train_run(cfg, run_dir)
    info["train_status"] = info.pop("status")
    return info


def eval_bnnmd(run_dir: Path, data: str, auc_threshold: str, name: str = "eval") -> Dict[str, Any]:
    """``bnn-eval RUN/samples --data DATA --json RUN/NAME.json --auc-threshold T`` (no recalibration)."""
    exe = Path(sys.executable).parent / "bnn-eval"
    out = run_dir / f"{name}.json"
    cmd = [str(exe), str(run_dir / "samples"), "--data", data, "--json", str(out), "--no-calibration",
           "--auc-threshold", auc_threshold]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    eval_s = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"bnn-eval failed (exit {r.returncode}): {(r.stdout + r.stderr).strip()[-2000:]}")
    return {"metrics": json.loads(out.read_text()), "eval_s": eval_s, "eval_json": str(out),
            "eval_command": " ".join(cmd)}


# ---- report --------------------------------------------------------------------------------
ROW_LABELS = {"nequip": "nequip", "map": "bnnmd map (Adam + EMA)", "sghmc": f"bnnmd sghmc (k = {NUM_SAMPLES})"}
METRIC_KEYS = ["forces.mae", "forces.rmse", "forces.mll", "forces.auc", "energy.mae", "energy.rmse", "energy.mll",
               "forces.nece", "forces.mean_std", "forces.within_1sigma", "forces.within_2sigma", "forces.n_outliers",
               "stress.mae", "stress.rmse", "stress.mll", "stress.nece"]


def row_label(name: str, row: Dict[str, Any]) -> str:
    """A row's name in the table: sghmc rows say their chain count (``merge`` keys them sghmc@N)."""
    if name.startswith("sghmc"):
        chains = (row.get("settings") or {}).get("chains", 1)
        return f"bnnmd sghmc (k = {NUM_SAMPLES}, {chains} chain{'s' if chains != 1 else ''})"
    if name.startswith("nequip") and (row.get("settings") or {}).get("loss"):
        return f"nequip ({row['settings']['loss']} loss weights)"
    return ROW_LABELS[name]


def _metric(rows, name, key):
    r = rows.get(name, {})
    return (r.get("metrics") or {}).get(key) if r.get("status") == "ok" else None


def targets(rows: Dict[str, Dict[str, Any]], stress: bool = False) -> Dict[str, Dict[str, Any]]:
    """The issue's targets: map <= nequip on force (and stress) MAE; every sghmc row: force MAE
    <= map with a higher force MLL and ROC-AUC (on the test frames)."""
    out = {}
    pairs = [(nq, key, what) for nq in [n for n in rows if n.startswith("nequip")] or ["nequip"]
             for key, what in (("forces.mae", "force"), ("stress.mae", "stress")) if stress or key == "forces.mae"]
    for nq, key, what in pairs:
        a, b = _metric(rows, "map", key), _metric(rows, nq, key)
        out[f"map_{what}_mae_le_{nq}"] = {
            "target": f"bnnmd map {what} MAE <= {row_label(nq, rows.get(nq, {}))} {what} MAE",
            "pass": None if a is None or b is None else bool(a <= b),
            "detail": f"map {C.fmt(a)} vs nequip {C.fmt(b)}" if a is not None and b is not None
            else "not evaluated: " + ", ".join(n for n, v in (("map", a), ("nequip", b)) if v is None) + " missing"}
    checks = [("force MAE <=", "forces.mae", lambda s, mp: s <= mp),
              ("force MLL >", "forces.mll", lambda s, mp: s > mp),
              ("force ROC-AUC >", "forces.auc", lambda s, mp: s > mp)]
    for name in [n for n in rows if n.startswith("sghmc")] or ["sghmc"]:
        parts, ok = [], True
        for label, key, fn in checks:
            s, mp = _metric(rows, name, key), _metric(rows, "map", key)
            if s is None or mp is None:
                ok = None
                parts.append(f"{label}: missing")
                continue
            good = bool(fn(s, mp))
            ok = ok and good if ok is not None else None
            parts.append(f"{label} map: {C.fmt(s)} vs {C.fmt(mp)} ({'yes' if good else 'no'})")
        k = rows.get(name, {}).get("samples")
        if ok is not None and k is not None and k < NUM_SAMPLES:
            parts.append(f"only {k} of {NUM_SAMPLES} samples")
            ok = False
        label = row_label(name, rows.get(name, {}))
        out[f"{name}_beats_map"] = {"target": f"{label}: force MAE <= bnnmd map, higher force MLL and higher force "
                                              "ROC-AUC", "pass": ok, "detail": "; ".join(parts)}
    return out


def table(rows: Dict[str, Dict[str, Any]], stress: bool = False) -> str:
    if not stress:
        headers = ["row", "status", "steps", "train s", "samples", "force MAE", "force RMSE", "force MLL",
                   "force ROC-AUC", "energy MAE"]
    else:
        headers = ["row", "status", "steps", "train s", "samples", "force MAE", "force MLL", "force ROC-AUC",
                   "energy MAE (meV/atom)", "stress MAE (GPa)", "OOD force MAE", "OOD force MLL", "OOD ROC-AUC",
                   "OOD stress MAE (GPa)"]
    body = []
    order = (sorted(n for n in rows if n.startswith("nequip")) + [n for n in ("map",) if n in rows]
             + sorted(n for n in rows if n.startswith("sghmc")))
    for name in order:
        r = rows[name]
        mt, od = r.get("metrics") or {}, r.get("ood_metrics") or {}
        train_s = "-" if r.get("train_s") is None else f"{r['train_s']:.0f}"
        head = [row_label(name, r), r.get("status", "-"), r.get("steps"), train_s, r.get("samples")]
        if not stress:
            body.append(head + [mt.get("forces.mae"), mt.get("forces.rmse"), mt.get("forces.mll"),
                                mt.get("forces.auc"), mt.get("energy.mae")])
        else:
            body.append(head + [mt.get("forces.mae"), mt.get("forces.mll"), mt.get("forces.auc"),
                                mt.get("energy.mae_mev_per_atom"), mt.get("stress.mae_gpa"), od.get("forces.mae"),
                                od.get("forces.mll"), od.get("forces.auc"), od.get("stress.mae_gpa")])
    return C.md_table(headers, body)


# ---- main ----------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=tuple(DATASETS), default="ethanol",
                   help="ethanol: rMD17 ethanol of ../shared/data (default); water: the bundled periodic GFN2-xTB "
                        "liquid water with stresses, scored on its 300 K test set and its out-of-distribution set")
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds of training per run (default ethanol {DEFAULT_BUDGET:.0f}, water "
                        f"{DATASETS['water']['budget']:.0f}; --smoke: {SMOKE_BUDGET:.0f})")
    p.add_argument("--auc-threshold", default=None,
                   help="outlier threshold of the force ROC-AUC with its unit, as bnn-eval takes it (default "
                        + ", ".join(f"{k} '{v['auc_threshold']}'" for k, v in DATASETS.items()) + ")")
    p.add_argument("--smoke", action="store_true",
                   help=f"a tiny model ({SMOKE_ARCH['num_layers']} layer, {SMOKE_ARCH['num_features']} features) on "
                        f"{SMOKE_SIZES['n_train']}/{SMOKE_SIZES['n_val']} frames, {SMOKE_SIZES['n_test']} test "
                        "frames: proves the script runs; its numbers mean nothing")
    p.add_argument("--parallel", action="store_true",
                   help="run nequip on CPU 1 (taskset) while the bnnmd rows run on CPU 0")
    p.add_argument("--rows", default="nequip,map,sghmc", help="comma-separated subset of nequip,map,sghmc")
    p.add_argument("--dtype", choices=("float64", "float32"), default=None,
                   help="both codes (default ethanol float64, water float32)")
    p.add_argument("--seed", type=int, default=0, help="split, initialisation and minibatch seed (both codes)")
    p.add_argument("--warm-start-fraction", type=float, default=WARM_START_FRACTION,
                   help=f"share of the sghmc row's steps spent in the Adam + EMA warm start (default "
                        f"{WARM_START_FRACTION}; needs bnnmd's sghmc.schedule)")
    p.add_argument("--chains", type=int, default=1,
                   help=f"sghmc row: chains through the sample dimension (sghmc.chains; default 1), "
                        f"{NUM_SAMPLES} samples in all, so it must divide {NUM_SAMPLES}")
    p.add_argument("--warm-start-shared", action="store_true",
                   help="sghmc row: every chain starts sampling from chain 0's warm start "
                        "(sghmc.warm_start_shared; default: each chain its own)")
    p.add_argument("--nequip-venv", default=str(NEQUIP_VENV), help="throw-away environment for nequip "
                   "(created when missing; default bench/.venv-nequip)")
    p.add_argument("--nequip-loss", choices=("balanced", "default", "variance"), default="balanced",
                   help="water: nequip's loss weights (stress_loss_coeffs: balanced = each term counts the same at "
                        "1 meV/atom, 0.05 eV/A, 0.05 GPa; default = nequip's documented 1:1:1; variance = 1/label "
                        "variance, the first attempt)")
    p.add_argument("--nequip-version", default=None, help="pin nequip (default: what pip resolves)")
    p.add_argument("--reinstall-nequip", action="store_true", help="delete and recreate the nequip environment")
    p.add_argument("--workdir", default=None,
                   help="run directories (default /tmp/bnnmd_peer_nequip, --smoke: /tmp/bnnmd_peer_nequip_smoke)")
    p.add_argument("--out", default=None, help="JSON output (default bench/results/peer_nequip.json; --smoke: "
                   "WORKDIR/peer_nequip.json)")
    a = p.parse_args(argv)
    rows = [r.strip() for r in a.rows.split(",") if r.strip()]
    bad = sorted(set(rows) - set(ROW_LABELS))
    if bad or not rows:
        p.error(f"--rows: unknown {', '.join(bad) or '(none given)'}; use a subset of {','.join(ROW_LABELS)}")
    a.rows = rows
    ds = DATASETS[a.dataset]
    a.batch_size = ds["batch_size"]
    a.dtype = a.dtype or ds["dtype"]
    a.auc_threshold = a.auc_threshold or ds["auc_threshold"]
    if a.budget is None:
        a.budget = SMOKE_BUDGET if a.smoke else ds["budget"]
    if not a.budget > 0:
        p.error("--budget must be > 0 seconds")
    if not 0 <= a.warm_start_fraction < 1:
        p.error("--warm-start-fraction must be in [0, 1)")
    if a.chains < 1 or NUM_SAMPLES % a.chains:
        p.error(f"--chains must be a positive divisor of {NUM_SAMPLES} (the samples are pooled over chains)")
    if a.parallel and (not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2):
        p.error("--parallel needs two usable CPUs")
    name = EXPERIMENT if a.dataset == "ethanol" else f"{EXPERIMENT}_{a.dataset}"
    a.workdir = Path(a.workdir or (f"/tmp/bnnmd_{name}_smoke" if a.smoke else f"/tmp/bnnmd_{name}"))
    a.out = Path(a.out) if a.out else (a.workdir / f"{name}.json" if a.smoke
                                       else REPO / "bench" / "results" / f"{name}.json")
    return a


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "nequip-predict":
        return nequip_predict_main(argv[1:])
    if argv and argv[0] == "merge":
        return merge_main(argv[1:])
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    C.preload()  # every bnnmd module now: the tree may change during an hour-long run
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    dset = DATASETS[args.dataset]
    arch = dict(SMOKE_ARCH if args.smoke else dset["arch"])
    keys = new_recipe_keys()
    machine, started = C.machine_info(), time.strftime("%Y-%m-%d %H:%M:%S %Z")  # load average before the runs
    use_keys = USE_NEW_RECIPE_KEYS is not False
    if not all(keys.values()):
        log("NOTE: this bnnmd has no " + ", ".join(k for k, v in keys.items() if not v) +
            ": the bnnmd rows run without them (switch: USE_NEW_RECIPE_KEYS in bench/peer_nequip.py)")
    split, split_path = make_split(args, workdir)
    train_ds, val_ds, test_ds = split.datasets()
    ood_ds, ood_spec = None, None
    if dset.get("ood"):
        from bnnmd.data import bundled_dataset

        ood_ds, ood_spec = bundled_dataset(dset["ood"]), f"bundled:{dset['ood']}"
        if args.smoke:
            ood_ds = ood_ds.subset(np.linspace(0, len(ood_ds) - 1, SMOKE_SIZES["n_test"]).round().astype(np.int64))
            ood_spec = str(write_smoke_ood(ood_ds, workdir))
    steps_per_epoch = max(1, math.ceil(len(train_ds) / args.batch_size))
    test_spec = "split:test" if args.smoke else split.test.file  # every frame of the test file
    log(f"{dset['title']}: {len(train_ds)} train / {len(val_ds)} val of {Path(split.train.file).name}, "
        f"{len(test_ds)} test frames of {Path(split.test.file).name}"
        + (f", {len(ood_ds)} out-of-distribution frames" if ood_ds is not None else "")
        + f"; budget {args.budget:.0f} s per run; {'parallel' if args.parallel else 'sequential'}")

    rows: Dict[str, Dict[str, Any]] = {}
    nequip_env: Dict[str, Any] = {}
    job = None
    if "nequip" in args.rows:
        venv = Path(args.nequip_venv)
        nequip_env = ensure_nequip(venv, args.nequip_version, args.reinstall_nequip, workdir / "nequip_install.log")
        if not nequip_env["ok"]:
            print(f"\nnequip is SKIPPED: could not set up {venv}:\n{nequip_env['reason']}\n", file=sys.stderr)
            rows["nequip"] = {"status": "skipped", "reason": nequip_env["reason"]}
        else:
            try:
                job = start_nequip(venv, workdir, split, arch, args.budget, args.dtype, args.seed,
                                   1 if args.parallel else None, stress=dset["stress"], batch_size=args.batch_size,
                                   ood_ds=ood_ds, loss=args.nequip_loss)
                if not args.parallel:
                    rows["nequip"] = finish_nequip(job, venv, test_ds, ood_ds)
                    job = None
            except Exception as exc:  # reported as a failed row; the bnnmd rows still run
                rows["nequip"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
                job = None
    if args.parallel:
        os.sched_setaffinity(0, {0})
        log("bnnmd rows pinned to CPU 0")

    plans: Dict[str, Any] = {}
    for method in ("map", "sghmc"):
        if method not in args.rows:
            continue
        try:
            cfg = bnnmd_config(method, arch, split, split_path, args, keys, steps_per_epoch)
            log(f"bnnmd {method}: training for {args.budget:.0f} s")
            info = train_bnnmd(cfg, workdir / f"bnnmd_{method}")
            if method == "sghmc":
                plans["sghmc"] = info["schedule"]
                log(f"sghmc plan: {plans['sghmc']['planned_steps']} steps (warm start "
                    f"{plans['sghmc']['warm_start_steps']}, mass frozen at +{plans['sghmc']['mass_freeze_step']}, "
                    f"burn-in +{plans['sghmc']['burn_in']}, a sample every {plans['sghmc']['sample_interval']})")
            log(f"bnnmd {method}: {info['train_status']} after {info['steps']} steps, {info['train_s']:.0f} s, "
                f"{info['samples']} sample(s); evaluating")
            ev = eval_bnnmd(workdir / f"bnnmd_{method}", test_spec, args.auc_threshold)
            row = {"status": "ok", **info, "eval_s": ev["eval_s"], "eval_json": ev["eval_json"],
                   "eval_command": ev["eval_command"],
                   "metrics": with_derived({k: ev["metrics"].get(k) for k in METRIC_KEYS}, test_ds),
                   "config": cfg.to_dict()}
            if method == "sghmc":
                row["settings"] = {"chains": args.chains, "warm_start_shared": args.warm_start_shared,
                                   "warm_start_fraction": args.warm_start_fraction}
            if ood_spec is not None:
                od = eval_bnnmd(workdir / f"bnnmd_{method}", ood_spec, args.auc_threshold, name="eval_ood")
                row["ood_metrics"] = with_derived({k: od["metrics"].get(k) for k in METRIC_KEYS}, ood_ds)
            rows[method] = row
        except Exception as exc:  # a failed row is reported; the others still run
            log(f"bnnmd {method} FAILED: {type(exc).__name__}: {exc}")
            rows[method] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    if job is not None:
        log("waiting for nequip")
        try:
            rows["nequip"] = finish_nequip(job, Path(args.nequip_venv), test_ds, ood_ds)
        except Exception as exc:
            rows["nequip"] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    nq = rows.get("nequip", {})
    if nq.get("status") == "ok" and nq.get("train_s") is not None and nq["train_s"] < 0.9 * args.budget:
        nq["warning"] = f"nequip trained {nq['train_s']:.0f} s of the {args.budget:.0f} s budget"
    for r in rows.values():
        if r.get("steps") is not None:
            r["epochs"] = r["steps"] / steps_per_epoch
    if rows.get("nequip", {}).get("status") == "failed":
        log("nequip FAILED: " + rows["nequip"]["reason"])

    result = {
        "experiment": EXPERIMENT,
        "dataset": args.dataset,
        "question": "bnnmd (MAP and SGHMC) against nequip at equal architecture and equal wall clock, one core each, "
                    f"on the same split and test frames of {dset['title']}",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": started, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine,
        "versions": {"bnnmd_torch": torch.__version__, "e3nn": _version("e3nn"),
                     "nequip_env": nequip_env.get("versions"), "nequip_installed_now": nequip_env.get("installed_now")},
        "settings": {
            "smoke": args.smoke, "budget_per_run_s": args.budget, "parallel": args.parallel,
            "threads_per_run": 1, "dtype": args.dtype, "batch_size": args.batch_size, "seed": args.seed,
            "auc_threshold": args.auc_threshold,
            "architecture_bnnmd_keys": arch, "architecture_nequip_keys": {NEQUIP_KEYS[k]: v for k, v in arch.items()},
            "architecture_note": ARCH_NOTE,
            "split": {"file": str(split_path), "train": len(train_ds), "val": len(val_ds), "test": len(test_ds),
                      "train_file": split.train.file, "test_file": split.test.file, "bnn_eval_data": test_spec,
                      "ood_file": ood_spec, "ood": None if ood_ds is None else len(ood_ds)},
            "units": dset["units"],
            "new_recipe_keys": {"USE_NEW_RECIPE_KEYS": USE_NEW_RECIPE_KEYS, "available": keys,
                                "used": {k: bool(v and use_keys) for k, v in keys.items()}},
            "recipes": {
                "nequip": {"optimizer": f"Adam lr {ADAM_LR}", "ema_decay": EMA_DECAY, "loss": "MSE",
                           "loss_coeffs": NEQUIP_LOSS if not dset["stress"] else
                           f"--nequip-loss {args.nequip_loss} (stress_loss_coeffs; the values are in the nequip "
                           "row)",
                           "per_atom_energy": NEQUIP_PER_ATOM_ENERGY if not dset["stress"] else True,
                           "lr_scheduler": f"ReduceLROnPlateau factor {LR_FACTOR} patience {LR_PATIENCE} epochs "
                                           f"min_lr {MIN_LR} on val force MAE",
                           "validation": "every epoch", "model_kept": "best.ckpt (val force MAE, EMA weights)",
                           "time_limit": "Lightning max_time = budget (whole seconds)"},
                "map": {"optimizer": f"Adam lr {ADAM_LR}", "ema_decay": EMA_DECAY if keys["adam.ema_decay"] and use_keys
                        else "not available" if not keys["adam.ema_decay"] else 0.0,
                        "lr_plateau": f"x{LR_FACTOR} after {LR_PATIENCE} validations, min {MIN_LR}",
                        "validation": f"every {steps_per_epoch} steps (one epoch)",
                        "model_kept": "best validation force MAE", "time_limit": "training.time_limit = budget"},
                "sghmc": {"num_samples": NUM_SAMPLES, "chains": args.chains,
                          "warm_start_shared": args.warm_start_shared,
                          "plan": "in the trainer: sghmc.schedule time, training.time_limit = budget, every sample "
                                  "by 0.95 x budget (bnnmd.train._schedule)",
                          "warm_start_fraction": args.warm_start_fraction, **plans.get("sghmc", {})},
            },
        },
        "rows": rows,
        "targets": None,
    }
    result["targets"] = targets(rows, dset["stress"])
    C.write_json(args.out, result)
    return report(result, args.out)


def report(result: Dict[str, Any], out: Path) -> int:
    """Print the table and the targets of ``result``; 0 when every row ran (or was skipped)."""
    rows, st = result["rows"], result["settings"]
    stress = DATASETS[result.get("dataset", "ethanol")]["stress"]
    sp = st["split"]
    print()
    print(f"{result.get('dataset', 'ethanol')}: {sp['train']}/{sp['val']} frames, {sp['test']} test frames"
          + (f", {sp['ood']} out-of-distribution frames" if sp.get("ood") else "")
          + f", budget {st['budget_per_run_s']:.0f} s per run, one thread each, {st['dtype']}, ROC-AUC outliers > "
          + f"{st.get('auc_threshold', '1 kcal/mol/A')}{' (SMOKE: the numbers mean nothing)' if st['smoke'] else ''}")
    print(table(rows, stress))
    print()
    for t in result["targets"].values():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        print(f"- {verdict}: {t['target']} ({t['detail']})")
    for name, r in rows.items():
        if r.get("status") != "ok":
            first = (r.get("reason") or "").splitlines()[:1]
            print(f"- {row_label(name, r)}: {r.get('status')}: {first[0] if first else ''}")
        if r.get("warning"):
            print(f"- {row_label(name, r)}: WARNING: {r['warning']}")
    print(f"\nwritten: {out}")
    return 0 if all(r.get("status") in ("ok", "skipped") for r in rows.values()) else 1


def write_smoke_ood(ds, workdir: Path) -> Path:
    """--smoke: the out-of-distribution frames it scores, as a file bnn-eval reads."""
    from bnnmd.data import write_extxyz as write_periodic

    return write_periodic(ds, workdir / "ood_smoke.xyz")


def _split_frames(split: Dict[str, Any]):
    """What a result's split selects: its counts and files and, while its split.json exists, the
    frame indices (None for a missing file, which compares unequal to a present one)."""
    path = Path(split["file"])
    idx = None
    if path.exists():
        d = json.loads(path.read_text())
        idx = {k: v for k, v in d.items() if k in ("train", "val", "test")}
    return ({k: v for k, v in split.items() if k != "file"}, idx)


def merge_main(argv: List[str]) -> int:
    """``peer_nequip.py merge --out OUT A.json B.json ...``: one result of runs made side by side
    (e.g. nequip + map in one, sghmc with 1 and with 4 chains in two others, on the same split and
    budget): the rows of all, the sghmc rows keyed ``sghmc@<chains>``, the targets recomputed."""
    p = argparse.ArgumentParser(prog="peer_nequip.py merge")
    p.add_argument("--out", required=True)
    p.add_argument("inputs", nargs="+")
    a = p.parse_args(argv)
    results = [json.loads(Path(f).read_text()) for f in a.inputs]
    first = results[0]
    for f, r in zip(a.inputs[1:], results[1:]):
        for key in ("dataset",):
            if r.get(key) != first.get(key):
                raise SystemExit(f"error: {f}: {key} {r.get(key)!r} differs from {a.inputs[0]}'s {first.get(key)!r}")
        for key in ("budget_per_run_s", "dtype", "batch_size", "seed", "split", "architecture_bnnmd_keys"):
            if key == "budget_per_run_s" and r["settings"][key] != first["settings"][key]:
                raise SystemExit(f"error: {f}: budget {r['settings'][key]:.0f} s differs from {a.inputs[0]}'s "
                                 f"{first['settings'][key]:.0f} s; merge only runs made with the same budget")
            if key == "split":  # the same frames; the split file itself lives in each run's workdir
                if _split_frames(r["settings"]["split"]) != _split_frames(first["settings"]["split"]):
                    raise SystemExit(f"error: {f}: its split differs from {a.inputs[0]}'s (or its split.json is "
                                     "gone); merge only runs made on the same split")
            elif r["settings"].get(key) != first["settings"].get(key):
                raise SystemExit(f"error: {f}: settings.{key} differs from {a.inputs[0]}'s; merge only runs made "
                                 "with the same split, budget and model")
    rows: Dict[str, Dict[str, Any]] = {}
    for f, r in zip(a.inputs, results):
        for name, row in r["rows"].items():
            if name.startswith("sghmc"):
                chains = (row.get("settings") or {}).get("chains", r["settings"]["recipes"]["sghmc"]["chains"])
                row.setdefault("settings", {})["chains"] = chains
                name = f"sghmc@{chains}"
            elif name == "nequip" and row.get("loss_coeffs") is not None:
                loss = (row.get("settings") or {}).get("loss", "variance")  # the first run did not record it
                row.setdefault("settings", {})["loss"] = loss
                name = f"nequip@{loss}"
            if name in rows:
                raise SystemExit(f"error: {f}: row {name} is in two inputs")
            rows[name] = {**row, "from": f}
    merged = {**first, "command": " ".join([Path(sys.executable).name, *sys.argv]), "merged_from": a.inputs,
              "runs": [{"file": f, "command": r.get("command"), "started": r.get("started"), "date": r.get("date"),
                        "machine": r.get("machine"), "recipes": r["settings"].get("recipes")}
                       for f, r in zip(a.inputs, results)], "rows": rows}
    merged["targets"] = targets(rows, DATASETS[first.get("dataset", "ethanol")]["stress"])
    C.write_json(Path(a.out), merged)
    return report(merged, Path(a.out))


def _version(module: str) -> Optional[str]:
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:  # pragma: no cover
        return None


if __name__ == "__main__":
    sys.exit(main())
