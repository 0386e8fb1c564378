"""bnnmd against the peer code nequip: equal architecture, equal wall clock, one core each.

    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py                  # 3 x 1500 s, one after another
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --parallel       # nequip on CPU 1 beside bnnmd on CPU 0
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --smoke          # seconds: proves the script runs
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --budget 60 --out /tmp/peer60.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/peer_nequip.py --rows map,sghmc --chains 4   # 4 chains x 2 samples

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


def log(msg: str) -> None:
    C.log(msg)


# ---- the split and the data both codes read -------------------------------------------------
def make_split(args, workdir: Path):
    """The 970/30 split of the training file (smoke: 20/5 and 10 test frames) as split.json."""
    from bnnmd.data import Split, SplitPart, protocol_split

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
                      SplitPart(split.test.file, split.test.indices[te]), seed=args.seed, protocol="rmd17")
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
def nequip_config(arch: Dict[str, Any], type_names: List[str], data: Dict[str, Path], out_dir: Path,
                  budget: float, dtype: str, seed: int) -> Dict[str, Any]:
    """A ``nequip-train`` config (hydra/omegaconf YAML as a dict) of the benchmark's recipe."""
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
            "train_dataloader": {"_target_": "torch.utils.data.DataLoader", "batch_size": BATCH_SIZE,
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
            "loss": {"_target_": "nequip.train.EnergyForceLoss", "per_atom_energy": NEQUIP_PER_ATOM_ENERGY,
                     "coeffs": dict(NEQUIP_LOSS)},
            "val_metrics": {"_target_": "nequip.train.EnergyForceMetrics",
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
                 cpu: Optional[int]):
    """Write the data and the config, start ``nequip-train``; returns the running job."""
    import yaml

    nq = workdir / "nequip"
    if nq.exists():
        shutil.rmtree(nq)
    train, val, test = split.datasets()
    data = {"train": nq / "data" / "train.xyz", "val": nq / "data" / "val.xyz", "test": nq / "data" / "test.xyz"}
    for part, ds in zip(("train", "val", "test"), (train, val, test)):
        write_extxyz(ds, data[part])
    from bnnmd.data import TypeMapper

    type_names = TypeMapper.from_atomic_numbers(train.atomic_numbers).type_names  # bnnmd's order (by Z)
    out_dir = nq / "run"
    cfg = nequip_config(arch, list(type_names), data, out_dir, budget, dtype, seed)
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
            "cmd": cmd, "budget": budget, "cpu": cpu, "type_names": list(type_names)}


def finish_nequip(job, venv: Path, test_ds) -> Dict[str, Any]:
    """Wait for ``nequip-train``, predict the test frames with its best checkpoint, score them."""
    from bnnmd.uq import mae, rmse

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
    pred = job["dir"] / "test_predictions.npz"
    cmd = _pin(job["cpu"]) + [str(_venv_python(venv)), str(Path(__file__).resolve()), "nequip-predict",
                              "--ckpt", str(best), "--last", str(last), "--xyz", str(job["data"]["test"]),
                              "--out", str(pred)]
    log("nequip: predicting the test frames with best.ckpt")
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                 "PYTHONNOUSERSITE": "1"})
    eval_s = time.perf_counter() - t0
    if r.returncode != 0:
        return {"status": "failed", "wall_s": wall_s,
                "reason": "nequip prediction failed:\n" + "\n".join((r.stdout + r.stderr).splitlines()[-12:])}
    p = np.load(pred)
    info = json.loads(str(p["info"]))
    # the frames must be the test frames bnnmd is evaluated on, in the same order
    if p["positions"].shape != test_ds.positions.shape or not np.allclose(p["positions"], test_ds.positions, atol=1e-6):
        return {"status": "failed", "reason": "nequip's test frames differ from the split's test frames"}
    metrics = {"forces.mae": mae(p["forces"].reshape(1, -1), test_ds.forces.reshape(-1)),
               "forces.rmse": rmse(p["forces"].reshape(1, -1), test_ds.forces.reshape(-1)),
               "energy.mae": mae(p["energy"].reshape(1, -1), test_ds.energy),
               "energy.rmse": rmse(p["energy"].reshape(1, -1), test_ds.energy),
               "forces.mll": None, "forces.auc": None, "energy.mll": None}
    return {"status": "ok", "wall_s": wall_s, "train_s": info.get("train_s"), "steps": info.get("global_step"),
            "samples": 1, "eval_s": eval_s, "best_epoch": info.get("best_epoch"),
            "best_step": info.get("best_global_step"), "best_val_force_mae": info.get("best_val_force_mae"),
            "num_parameters": info.get("num_parameters"), "torch_threads": info.get("torch_threads"),
            "metrics": metrics, "run_dir": str(job["out_dir"]), "command": " ".join(job["cmd"])}


def nequip_predict_main(argv: List[str]) -> int:
    """Internal: runs in nequip's environment. Energies and forces of the frames of ``--xyz``."""
    p = argparse.ArgumentParser(prog="peer_nequip.py nequip-predict")
    p.add_argument("--ckpt", required=True)
    p.add_argument("--last", required=True, help="the final state's checkpoint: training time and steps")
    p.add_argument("--xyz", required=True)
    p.add_argument("--out", required=True)
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
    energy, forces = [], []
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
    np.savez(a.out, energy=np.concatenate(energy), forces=np.concatenate(forces),
             positions=np.concatenate([f.get_positions() for f in frames]), info=json.dumps(info))
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


def bnnmd_config(method: str, arch, split_path: Path, args, keys: Dict[str, bool], steps_per_epoch: int):
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
    d = {"method": method, "seed": args.seed, "dtype": args.dtype,
         "data": {"train": str(TRAIN_FILE), "test": str(TEST_FILE), "protocol": "rmd17", "split": str(split_path)},
         "model": dict(arch),
         "training": {"batch_size": BATCH_SIZE, "device": "cpu", "max_steps": 10 ** 9,
                      "time_limit": float(args.budget),  # sghmc: planned to end by 0.95 x this
                      "validate_every": steps_per_epoch, "checkpoint_every": 10 ** 9},
         "sghmc": sghmc, "adam": adam}
    return TrainConfig.from_dict(d)


def train_bnnmd(cfg, run_dir: Path) -> Dict[str, Any]:
    """bench/paper/common.py's ``train_run``, its ``status`` renamed ``train_status`` (a row's
    ``status`` says whether the row ran)."""
    info = C.train_run(cfg, run_dir)
    info["train_status"] = info.pop("status")
    return info


def eval_bnnmd(run_dir: Path, data: str) -> Dict[str, Any]:
    """``bnn-eval RUN/samples --data DATA --json RUN/eval.json`` (no recalibration)."""
    exe = Path(sys.executable).parent / "bnn-eval"
    out = run_dir / "eval.json"
    cmd = [str(exe), str(run_dir / "samples"), "--data", data, "--json", str(out), "--no-calibration"]
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
               "forces.nece", "forces.mean_std", "forces.within_1sigma", "forces.within_2sigma", "forces.n_outliers"]


def targets(rows: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    def m(name, key):
        r = rows.get(name, {})
        return (r.get("metrics") or {}).get(key) if r.get("status") == "ok" else None

    out = {}
    a, b = m("map", "forces.mae"), m("nequip", "forces.mae")
    out["map_force_mae_le_nequip"] = {
        "target": "bnnmd map force MAE <= nequip force MAE",
        "pass": None if a is None or b is None else bool(a <= b),
        "detail": f"map {C.fmt(a)} vs nequip {C.fmt(b)}" if a is not None and b is not None
        else "not evaluated: " + ", ".join(n for n, v in (("map", a), ("nequip", b)) if v is None) + " missing"}
    checks = [("force MAE <=", "forces.mae", lambda s, mp: s <= mp),
              ("force MLL >", "forces.mll", lambda s, mp: s > mp),
              ("force ROC-AUC >", "forces.auc", lambda s, mp: s > mp)]
    parts, ok = [], True
    for label, key, fn in checks:
        s, mp = m("sghmc", key), m("map", key)
        if s is None or mp is None:
            ok = None
            parts.append(f"{label}: missing")
            continue
        good = bool(fn(s, mp))
        ok = ok and good if ok is not None else None
        parts.append(f"{label} map: {C.fmt(s)} vs {C.fmt(mp)} ({'yes' if good else 'no'})")
    k = rows.get("sghmc", {}).get("samples")
    if ok is not None and k is not None and k < NUM_SAMPLES:
        parts.append(f"only {k} of {NUM_SAMPLES} samples")
        ok = False
    out["sghmc_beats_map"] = {"target": f"bnnmd sghmc (k = {NUM_SAMPLES}) force MAE <= bnnmd map, higher force MLL "
                                        "and higher force ROC-AUC", "pass": ok, "detail": "; ".join(parts)}
    return out


def table(rows: Dict[str, Dict[str, Any]]) -> str:
    headers = ["row", "status", "steps", "train s", "samples", "force MAE", "force RMSE", "force MLL",
               "force ROC-AUC", "energy MAE"]
    body = []
    for name in ("nequip", "map", "sghmc"):
        r = rows.get(name)
        if r is None:
            continue
        mt = r.get("metrics") or {}
        train_s = "-" if r.get("train_s") is None else f"{r['train_s']:.0f}"
        body.append([ROW_LABELS[name], r.get("status", "-"), r.get("steps"), train_s, r.get("samples"),
                     mt.get("forces.mae"), mt.get("forces.rmse"), mt.get("forces.mll"), mt.get("forces.auc"),
                     mt.get("energy.mae")])
    return C.md_table(headers, body)


# ---- main ----------------------------------------------------------------------------------
def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", type=float, default=None,
                   help=f"seconds of training per run (default {DEFAULT_BUDGET:.0f}; --smoke: {SMOKE_BUDGET:.0f})")
    p.add_argument("--smoke", action="store_true",
                   help=f"a tiny model ({SMOKE_ARCH['num_layers']} layer, {SMOKE_ARCH['num_features']} features) on "
                        f"{SMOKE_SIZES['n_train']}/{SMOKE_SIZES['n_val']} frames, {SMOKE_SIZES['n_test']} test "
                        "frames: proves the script runs; its numbers mean nothing")
    p.add_argument("--parallel", action="store_true",
                   help="run nequip on CPU 1 (taskset) while the bnnmd rows run on CPU 0")
    p.add_argument("--rows", default="nequip,map,sghmc", help="comma-separated subset of nequip,map,sghmc")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="both codes (default float64)")
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
    if a.budget is None:
        a.budget = SMOKE_BUDGET if a.smoke else DEFAULT_BUDGET
    if not a.budget > 0:
        p.error("--budget must be > 0 seconds")
    if not 0 <= a.warm_start_fraction < 1:
        p.error("--warm-start-fraction must be in [0, 1)")
    if a.chains < 1 or NUM_SAMPLES % a.chains:
        p.error(f"--chains must be a positive divisor of {NUM_SAMPLES} (the samples are pooled over chains)")
    if a.parallel and (not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2):
        p.error("--parallel needs two usable CPUs")
    a.workdir = Path(a.workdir or ("/tmp/bnnmd_peer_nequip_smoke" if a.smoke else "/tmp/bnnmd_peer_nequip"))
    a.out = Path(a.out) if a.out else (a.workdir / f"{EXPERIMENT}.json" if a.smoke
                                       else REPO / "bench" / "results" / f"{EXPERIMENT}.json")
    return a


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "nequip-predict":
        return nequip_predict_main(argv[1:])
    args = parse_args(argv)
    import torch

    torch.set_num_threads(1)
    C.preload()  # every bnnmd module now: the tree may change during an hour-long run
    workdir = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    arch = dict(SMOKE_ARCH if args.smoke else ARCH)
    keys = new_recipe_keys()
    machine, started = C.machine_info(), time.strftime("%Y-%m-%d %H:%M:%S %Z")  # load average before the runs
    use_keys = USE_NEW_RECIPE_KEYS is not False
    if not all(keys.values()):
        log("NOTE: this bnnmd has no " + ", ".join(k for k, v in keys.items() if not v) +
            ": the bnnmd rows run without them (switch: USE_NEW_RECIPE_KEYS in bench/peer_nequip.py)")
    split, split_path = make_split(args, workdir)
    train_ds, val_ds, test_ds = split.datasets()
    steps_per_epoch = max(1, math.ceil(len(train_ds) / BATCH_SIZE))
    test_spec = "split:test" if args.smoke else str(TEST_FILE)  # the rmd17 protocol tests on every frame
    log(f"split: {len(train_ds)} train / {len(val_ds)} val of {TRAIN_FILE.name}, {len(test_ds)} test frames of "
        f"{TEST_FILE.name}; budget {args.budget:.0f} s per run; {'parallel' if args.parallel else 'sequential'}")

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
                                   1 if args.parallel else None)
                if not args.parallel:
                    rows["nequip"] = finish_nequip(job, venv, test_ds)
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
            cfg = bnnmd_config(method, arch, split_path, args, keys, steps_per_epoch)
            log(f"bnnmd {method}: training for {args.budget:.0f} s")
            info = train_bnnmd(cfg, workdir / f"bnnmd_{method}")
            if method == "sghmc":
                plans["sghmc"] = info["schedule"]
                log(f"sghmc plan: {plans['sghmc']['planned_steps']} steps (warm start "
                    f"{plans['sghmc']['warm_start_steps']}, mass frozen at +{plans['sghmc']['mass_freeze_step']}, "
                    f"burn-in +{plans['sghmc']['burn_in']}, a sample every {plans['sghmc']['sample_interval']})")
            log(f"bnnmd {method}: {info['train_status']} after {info['steps']} steps, {info['train_s']:.0f} s, "
                f"{info['samples']} sample(s); evaluating")
            ev = eval_bnnmd(workdir / f"bnnmd_{method}", test_spec)
            row = {"status": "ok", **info, "eval_s": ev["eval_s"], "eval_json": ev["eval_json"],
                   "eval_command": ev["eval_command"], "metrics": {k: ev["metrics"].get(k) for k in METRIC_KEYS},
                   "config": cfg.to_dict()}
            rows[method] = row
        except Exception as exc:  # a failed row is reported; the others still run
            log(f"bnnmd {method} FAILED: {type(exc).__name__}: {exc}")
            rows[method] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
    if job is not None:
        log("waiting for nequip")
        try:
            rows["nequip"] = finish_nequip(job, Path(args.nequip_venv), test_ds)
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
        "question": "bnnmd (MAP and SGHMC) against nequip at equal architecture and equal wall clock, one core each, "
                    "on the same split and test frames of rMD17 ethanol",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": started, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine,
        "versions": {"bnnmd_torch": torch.__version__, "e3nn": _version("e3nn"),
                     "nequip_env": nequip_env.get("versions"), "nequip_installed_now": nequip_env.get("installed_now")},
        "settings": {
            "smoke": args.smoke, "budget_per_run_s": args.budget, "parallel": args.parallel,
            "threads_per_run": 1, "dtype": args.dtype, "batch_size": BATCH_SIZE, "seed": args.seed,
            "architecture_bnnmd_keys": arch, "architecture_nequip_keys": {NEQUIP_KEYS[k]: v for k, v in arch.items()},
            "architecture_note": ARCH_NOTE,
            "split": {"file": str(split_path), "train": len(train_ds), "val": len(val_ds), "test": len(test_ds),
                      "train_file": str(TRAIN_FILE), "test_file": str(TEST_FILE), "bnn_eval_data": test_spec},
            "units": "kcal/mol and A (forces kcal/mol/A) for both codes",
            "new_recipe_keys": {"USE_NEW_RECIPE_KEYS": USE_NEW_RECIPE_KEYS, "available": keys,
                                "used": {k: bool(v and use_keys) for k, v in keys.items()}},
            "recipes": {
                "nequip": {"optimizer": f"Adam lr {ADAM_LR}", "ema_decay": EMA_DECAY, "loss": "MSE",
                           "loss_coeffs": NEQUIP_LOSS, "per_atom_energy": NEQUIP_PER_ATOM_ENERGY,
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
    result["targets"] = targets(rows)
    C.write_json(args.out, result)
    md = table(rows)
    print()
    print(f"rMD17 ethanol, {len(train_ds)}/{len(val_ds)} frames, {len(test_ds)} test frames, budget "
          f"{args.budget:.0f} s per run, one thread each{' (SMOKE: the numbers mean nothing)' if args.smoke else ''}")
    print(md)
    print()
    for t in result["targets"].values():
        verdict = {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        print(f"- {verdict}: {t['target']} ({t['detail']})")
    for name, r in rows.items():
        if r.get("status") != "ok":
            first = (r.get("reason") or "").splitlines()[:1]
            print(f"- {ROW_LABELS[name]}: {r.get('status')}: {first[0] if first else ''}")
        if r.get("warning"):
            print(f"- {ROW_LABELS[name]}: WARNING: {r['warning']}")
    print(f"\nwritten: {args.out}")
    return 0 if all(r.get("status") in ("ok", "skipped") for r in rows.values()) else 1


def _version(module: str) -> Optional[str]:
    try:
        return getattr(__import__(module), "__version__", None)
    except Exception:  # pragma: no cover
        return None


if __name__ == "__main__":
    sys.exit(main())
