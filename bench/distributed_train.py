"""One process against two (``torchrun --nproc_per_node 2``): time per SGHMC step and per written sample.

    taskset -c 0,1 .venv/bin/python bench/distributed_train.py [--steps-per-sample 10] [--samples 4]

For the bundled rMD17 ethanol (the model of examples/train/ethanol_sghmc.yaml, float32) and the
bundled periodic GFN2-xTB water with stresses (the model of examples/water/train.yaml), runs
``bnn-train`` the way a user does, once in one process and once under torchrun with two processes:

- ``chains``: SGHMC with 2 chains (ethanol) or 4 chains (water, as its example), one chain block per
  process against all chains stacked in one process;
- ``data``: one SGHMC chain, each minibatch split over the two processes, at several batch sizes.

Every process has ``OMP_NUM_THREADS=1``. No warm start, no validation but the final one and no
checkpoint but the last: the training time is ``elapsed_s`` of the last ``log.csv`` row (rank 0's
clock from the first step, the samples' writing included), divided by the steps and by the written
samples. Writes bench/results/distributed_train.json; the table in docs/benchmarks.md comes from it.
The cores may be shared: the load average is recorded before and after.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _machine import machine_info  # noqa: E402  (bench/_machine.py)

BIN = Path(sys.executable).parent
DATASETS = {
    "ethanol": {"config": REPO / "examples" / "train" / "ethanol_sghmc.yaml", "chains": 2,
                "data_batches": [2, 5, 10, 20, 40]},
    "water": {"config": REPO / "examples" / "water" / "train.yaml", "chains": 4, "data_batches": [2, 4, 8]},
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(dataset: str, mode: str, batch: int, samples_per_chain: int, interval: int):
    from bnnmd.train import TrainConfig

    cfg = TrainConfig.load(DATASETS[dataset]["config"])
    chains = DATASETS[dataset]["chains"] if mode == "chains" else 1
    s = cfg.sghmc
    s.schedule, s.warm_start_steps, s.chains = "steps", 0, chains
    s.mass_freeze_step = s.burn_in = s.sample_interval = interval
    s.num_samples = chains * samples_per_chain
    steps = s.burn_in + (samples_per_chain - 1) * interval
    t = cfg.training
    t.batch_size, t.max_steps, t.time_limit, t.distributed = batch, steps, None, mode
    t.validate_every = t.checkpoint_every = steps
    if dataset == "ethanol":  # the 970/30 rMD17 split of the example
        cfg.data.n_train, cfg.data.n_val = None, None
    return cfg.validate(), steps


def run(cfg, nproc: int, workdir: Path) -> dict:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "config.yaml"
    path.write_text(cfg.dump())
    out = workdir / "run"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    train = ["-m", "bnnmd.cli.train", str(path), "--out", str(out), "--quiet"]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [str(BIN / "torchrun"), "--nnodes", "1", "--nproc_per_node", str(nproc), "--rdzv-backend", "c10d",
               "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", *train]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    rows = list(csv.DictReader(open(out / "log.csv")))
    last = rows[-1]
    n_samples = len(list((out / "samples").glob("sample_*.pt")))
    elapsed = float(last["elapsed_s"])
    steps = int(last["step"])
    return {"nproc": nproc, "steps": steps, "samples": n_samples, "train_s": elapsed, "wall_s": round(wall, 2),
            "ms_per_step": 1000 * elapsed / steps, "s_per_sample": elapsed / n_samples}


def loadavg():
    return [round(x, 2) for x in os.getloadavg()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=4, help="samples per chain")
    p.add_argument("--steps-per-sample", type=int, default=10, help="sampler steps between samples (and burn-in)")
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--work", default=str(REPO / "bench" / "results" / "distributed_train_work"))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "distributed_train.json"))
    args = p.parse_args(argv)
    work = Path(args.work)
    result = {"machine": machine_info("platform", "cpu_model", "cpus=cpu_count", "usable_cpus", "torch", "git_commit", "date_utc",
                                      OMP_NUM_THREADS="1"),
              "load_before": loadavg(), "protocol": {"samples_per_chain": args.samples,
                                                     "steps_per_sample": args.steps_per_sample}, "rows": []}
    for dataset in args.datasets:
        cases = [("chains", None)] + [("data", b) for b in DATASETS[dataset]["data_batches"]]
        for mode, batch in cases:
            cfg, steps = make_config(dataset, mode, batch or 5 if dataset == "ethanol" else batch or 2,
                                     args.samples, args.steps_per_sample)
            timings = {}
            for nproc in (1, 2):
                timings[nproc] = run(cfg, nproc, work / f"{dataset}_{mode}_{batch}_{nproc}")
            row = {"dataset": dataset, "mode": mode, "chains": cfg.sghmc.chains, "batch_size": cfg.training.batch_size,
                   "one": timings[1], "two": timings[2],
                   "speedup_step": timings[1]["ms_per_step"] / timings[2]["ms_per_step"],
                   "speedup_sample": timings[1]["s_per_sample"] / timings[2]["s_per_sample"],
                   "load": loadavg()}
            result["rows"].append(row)
            print(f"{dataset:8s} {mode:6s} k={row['chains']} B={row['batch_size']:3d}: "
                  f"{timings[1]['ms_per_step']:8.1f} -> {timings[2]['ms_per_step']:8.1f} ms/step, "
                  f"{timings[1]['s_per_sample']:7.2f} -> {timings[2]['s_per_sample']:7.2f} s/sample, "
                  f"x{row['speedup_step']:.2f} (load {row['load'][0]})", flush=True)
    result["load_after"] = loadavg()
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
