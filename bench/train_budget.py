"""Equal wall-clock budgets for MAP (Adam) and SGHMC on rMD17 ethanol, and the cost of one step.

    OMP_NUM_THREADS=1 .venv/bin/python bench/train_budget.py [--budget 240]

Trains the CPU-sized model of examples/train/ethanol_sghmc.yaml with both methods for the same
number of seconds (970/30 split of the training file; SGHMC first, its 8-sample schedule planned
by the trainer from its own step rate to fill the budget, then MAP for the seconds SGHMC used),
evaluates each on the rMD17 ethanol test
file (the 1000-frame file of ../shared/data when present, else the 200 bundled frames), and times
single SGHMC and Adam steps alternately in one process. Writes bench/results/train_budget.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench" / "paper"))
import common as C  # noqa: E402  (the equal-compute protocol of bench/paper)
from _machine import machine_info  # noqa: E402  (bench/_machine.py)

SHARED_TEST = REPO.parent / "shared" / "data" / "rmd17" / "rmd17_ethanol_test_01.npz"


def config(method: str):
    from bnnmd.train import TrainConfig

    cfg = TrainConfig.load(REPO / "examples" / "train" / "ethanol_sghmc.yaml")
    cfg.method = method
    cfg.adam.early_stopping_patience = 10 ** 6  # use the whole budget
    return cfg.validate()


def step_cost(workdir: Path, repeats: int = 60):
    """Median ms per training step, SGHMC and Adam alternating in one process."""
    from bnnmd.train import Trainer

    trainers = {}
    for method in ("map", "sghmc"):
        d = workdir / f"cost_{method}"
        shutil.rmtree(d, ignore_errors=True)
        cfg = config(method)
        cfg.sghmc.warm_start_steps = 0  # time the sampler's steps, not its Adam warm start
        trainers[method] = Trainer(cfg.validate(), d, progress=False)
        for _ in range(5):
            trainers[method].train_step()
    times = {m: [] for m in trainers}
    for _ in range(repeats):
        for m, t in trainers.items():
            t0 = time.perf_counter()
            t.train_step()
            times[m].append(1000 * (time.perf_counter() - t0))
    return {m: statistics.median(v) for m, v in times.items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=float, default=240.0, help="seconds of training per method")
    parser.add_argument("--workdir", default="/tmp/bnnmd_bench_budget")
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "train_budget.json"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    from bnnmd.uq import evaluate

    test = SHARED_TEST if SHARED_TEST.exists() else "bundled:rmd17_ethanol_test"
    cost = step_cost(workdir)
    # Equal compute as in bench/paper (one implementation: bench/paper/common.py): the trainer plans
    # SGHMC's schedule (bnnmd's sghmc.schedule: time; the cpu scale's warm_start_fraction of the steps
    # an Adam + EMA warm start, then the sampler) from its own step rate so that the 8 samples are
    # written by 0.95 x the budget; MAP then trains for exactly the seconds SGHMC used.
    scale = C.SCALES["cpu"]
    cfgs = {"sghmc": config("sghmc"), "map": config("map")}
    rate = C.measure_rate(cfgs["sghmc"], workdir)
    C.plan_sghmc(cfgs["sghmc"], args.budget, rate, scale)
    results = {}
    for method in ("sghmc", "map"):
        if method == "map":
            C.plan_baseline(cfgs["map"], results["sghmc"]["train_s"], rate, scale)
        run = workdir / method
        info = C.train_run(cfgs[method], run)
        ev = evaluate(run / "samples", str(test)).metrics
        results[method] = {"steps": info["steps"], "status": info["status"], "samples": info["samples"],
                           "train_s": info["train_s"], "wall_s": info["wall_s"], "cpu_share": info["cpu_share"],
                           "schedule": info["schedule"],
                           **{k: ev[k] for k in ("forces.mae", "forces.rmse", "forces.mll", "forces.auc",
                                                 "energy.mae", "energy.mll")}}
        print(method, json.dumps(results[method]), flush=True)
    out = {
        "machine": machine_info("platform", "cpus=cpu_count", "python", "torch", "OMP_NUM_THREADS"),
        "date": time.strftime("%Y-%m-%d %H:%M"), "budget_s": args.budget, "test_data": str(test),
        "model": config("map").model, "step_ms": cost, "rate_measurement": rate,
        "equal_compute": f"SGHMC planned in the trainer to end by {C.SAMPLES_BY:.0%} of the "
                          "budget; MAP trains for the training seconds SGHMC used",
        "sghmc_over_adam_step": cost["sghmc"] / cost["map"], "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nstep cost: Adam {cost['map']:.2f} ms, SGHMC {cost['sghmc']:.2f} ms "
          f"(ratio {cost['sghmc'] / cost['map']:.3f})")
    print("| method | steps | train s | samples | force MAE | force RMSE | force MLL | force AUC | energy MAE |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for m, r in results.items():
        print(f"| {m} | {r['steps']} | {r['train_s']:.0f} | {r['samples']} | {r['forces.mae']:.3f} | {r['forces.rmse']:.3f} | "
              f"{r['forces.mll']:.3f} | {r['forces.auc']:.3f} | {r['energy.mae']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
