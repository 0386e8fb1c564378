"""What makes a bnn-learn round run longer before the halt: more frames, or a fitting warm start?

    OMP_NUM_THREADS=1 .venv/bin/python bench/active_learning_ablation.py --work WORK NAME
        [--runs 8] [--per-run 5] [--warm 2000] [--seeds 8] [--parallel 1]

``WORK``: the work directory of ``bench/active_learning.py`` (its ``loop/round_00/`` MD runs, the
start run, the hot test set and the label cache). One variant of round 0 -> 1:

1. frames: ``--per-run`` frames from each of the first ``--runs`` MD runs of round 0 (bnn-learn's
   selection rule, at round 0's threshold), labelled by pyscf PBE/def2-SVP (cached in WORK/labels);
   ``--per-run 0``: none (the control: the same fine-tuning on the old frames only);
2. fine-tuning as bnn-learn does it (``finetune_config``: prior on the last sample of every chain, std 0.1), with
   ``--warm`` Adam + EMA steps at ``--adam-lr`` first (0: the sampler alone, its mass unprimed);
3. the model exported with round 0's threshold, then ``--seeds`` heating runs (velocity seeds 1..N,
   the demo's ramp): steps before the halt, and force MAE / MLL on the rMD17 test and hot test sets.

Appends the row to bench/results/active_learning_ablation.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def round0_runs(loop: Path, n: int):
    runs = [loop / "round_00" / "md"] + sorted(loop.joinpath("round_00").glob("md_[0-9][0-9]"))
    if len(runs) < n:  # the layout before md.runs: the loop's run plus the bench's seed runs
        runs += [loop.parent / "seeds" / f"r0_s{s}" for s in range(1, n)]
    runs = [r for r in runs if (r / "traj.dump").exists()][:n]
    if len(runs) < n:
        sys.exit(f"--runs {n}: {loop / 'round_00'} holds only {len(runs)} MD runs")
    return runs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name")
    p.add_argument("--work", required=True, help="bench/active_learning.py's --out directory")
    p.add_argument("--runs", type=int, default=8)
    p.add_argument("--per-run", type=int, default=5)
    p.add_argument("--warm", type=int, default=2000, help="Adam + EMA steps before the sampler")
    p.add_argument("--adam-lr", type=float, default=1e-3)
    p.add_argument("--burn-in", type=int, default=1200)
    p.add_argument("--lr", type=float, default=5e-4, help="sampler step size")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--parallel", type=int, default=1, help="pyscf and LAMMPS processes at a time")
    a = p.parse_args(argv)
    t0 = time.perf_counter()

    from bnnmd.analysis import molecule_atoms, read_trajectory
    from bnnmd.data import Split, SplitPart, bundled_dataset
    from bnnmd.deploy import export
    from bnnmd.label import LabelError, PySCFLabeller, label_frames
    from bnnmd.learn import FinetuneSection, MDSection, finetune_config, pick_frames, run_md
    from bnnmd.train import train
    from bnnmd.uq import calibrate, evaluate

    work = Path(a.work).resolve()
    loop = work / "loop"
    state = json.loads((loop / "state.json").read_text())
    thr = state["rounds"]["0"]["threshold"]
    start = Path(state["config"]["start"])
    out = work / "ablation" / a.name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    atoms = []
    for md in (round0_runs(loop, a.runs) if a.per_run else []):
        traj = read_trajectory(md / "traj.dump", data=md / "system.data", elements=["C", "H", "O"])
        atoms += [molecule_atoms(traj, f) for f in pick_frames(traj, thr, a.per_run).frame_indices]
    labels = label_frames(PySCFLabeller(cache=work / "labels"), atoms, a.parallel, timeout=None) if atoms else []
    ok = [(x, lab) for x, lab in zip(atoms, labels) if not isinstance(lab, LabelError)]

    split = Split.load(start / "split.json")
    base = split.train.load().convert_units("kcal/mol", "A")
    n_at = base.offsets[1] - base.offsets[0]
    z = base.atomic_numbers[:n_at]
    pos = np.concatenate([base.positions.reshape(len(base), -1, 3),
                          np.array([x.positions for x, _ in ok]).reshape(-1, n_at, 3)])
    energy = np.concatenate([base.energy, np.array([lab.energy for _, lab in ok]).reshape(-1)])
    forces = np.concatenate([base.forces.reshape(len(base), -1, 3),
                             np.array([lab.forces for _, lab in ok]).reshape(-1, n_at, 3)])
    data = out / "data.npz"  # out is new (emptied above): nothing reads it before it is whole
    np.savez(data, nuclear_charges=z, coords=pos, energies=energy, forces=forces)
    Split(SplitPart(str(data), np.arange(len(energy))), split.val, split.test, seed=split.seed,
          protocol="random").save(out / "split.json")
    ft = FinetuneSection(warm_start_steps=a.warm, warm_start_lr=a.adam_lr, lr=a.lr, burn_in=a.burn_in,
                         max_steps=a.burn_in + 1000)
    train(finetune_config(start, out / "split.json", loop / "round_00" / "run" / "samples", ft), out / "run",
          progress=False)
    calibrate(out / "run" / "samples", "split:val")
    model = export(out / "run" / "samples", out / "model.pth", halt_threshold=thr)
    test = evaluate(out / "run" / "samples", "bundled:rmd17_ethanol_test").metrics
    hot = evaluate(out / "run" / "samples", str(work / "hot_test.extxyz")).metrics
    structure = bundled_dataset("rmd17_ethanol_test").to_ase(0)

    def halt_of(s: int) -> int:
        h = run_md(model, structure, out / f"seed{s}", MDSection(nsteps=4000), seed=s)
        return 4000 if h is None else h

    with ThreadPoolExecutor(a.parallel) as pool:
        steps = list(pool.map(halt_of, range(1, a.seeds + 1)))
    row = {"name": a.name, "args": vars(a), "frames_labelled": len(ok), "threshold": thr,
           "test_force_mae": test["forces.mae"], "test_force_mll": test["forces.mll"],
           "hot_force_mae": hot["forces.mae"], "hot_force_mll": hot["forces.mll"],
           "seed_halt_steps": steps, "seed_halt_mean": float(np.mean(steps)),
           "seconds": time.perf_counter() - t0, "command": " ".join(sys.argv)}
    print(json.dumps(row), flush=True)
    path = REPO / "bench" / "results" / "active_learning_ablation.json"
    rows = json.loads(path.read_text())["rows"] if path.exists() else []
    rows = [r for r in rows if r["name"] != a.name] + [row]
    path.write_text(json.dumps({"experiment": "active_learning_ablation", "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
