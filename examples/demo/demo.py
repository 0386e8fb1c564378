"""bnnmd end to end on real data: train -> evaluate -> export -> LAMMPS MD with an uncertainty halt -> analyse
-> check the halt against DFT (pyscf).

Run with `make demo` (or `OMP_NUM_THREADS=1 .venv/bin/python examples/demo/demo.py --out demo_out`).
Every number printed comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(cmd, cwd=None) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def dft_frames(halt_index: int, n: int):
    """``n`` frames to label up to the halt: evenly spread, plus the 4 just before and at it."""
    even = [int(round(x)) for x in [halt_index * i / max(n - 5, 1) for i in range(max(n - 4, 1))]]
    return sorted(set([i for i in even if i <= halt_index] + list(range(max(halt_index - 4, 0), halt_index + 1))))


def halt_step_of(halted):
    return int(re.search(r"met on step (\d+)", halted[0]).group(1)) if halted else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output directory (replaced)")
    parser.add_argument("--config", default=str(HERE / "train.yaml"), help="training config")
    parser.add_argument("--halt-rule", default=None,
                        help="bnn-export --halt-rule (default: bnn-export's, median:1.5 = 1.5 x the median over the "
                             "validation frames of a frame's largest per-atom force std)")
    parser.add_argument("--nsteps", type=int, default=20000, help="LAMMPS steps at most (0.5 fs)")
    parser.add_argument("--dft-frames", type=int, default=16,
                        help="frames up to the halt to label with pyscf PBE/def2-SVP (0: skip the DFT check)")
    parser.add_argument("--processes", type=int, default=2, help="pyscf worker processes (one thread each)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()

    step("1/6 train: Adam + EMA warm start, then SGHMC, on bundled rMD17 ethanol (real PBE/def2-SVP data)")
    run([BIN / "bnn-train", args.config, "--out", out / "run"])

    step("2/6 evaluate on the bundled test frames; fit the calibration (and the halt statistics) on the "
         "validation frames")
    samples = out / "run" / "samples"
    run([BIN / "bnn-eval", samples, "--data", "split:val", "--calibrate-on", "split:val",
         "--json", out / "eval_val.json"])
    run([BIN / "bnn-eval", samples, "--data", "bundled:rmd17_ethanol_test", "--json", out / "eval_test.json",
         "--plots", out / "eval_plots"])

    step("3/6 export the 8 posterior samples as ONE TorchScript file, with the halt threshold")
    model = out / "model.pth"
    run([BIN / "bnn-export", samples, model] + (["--halt-rule", args.halt_rule] if args.halt_rule else []))
    from ase.io.lammpsdata import write_lammps_data

    from bnnmd.data import bundled_dataset
    from bnnmd.deploy import read_metadata

    threshold = read_metadata(model)["halt_threshold"]

    step("4/6 LAMMPS: heat ethanol from 300 K until the uncertainty halt fires")
    md = out / "md"
    md.mkdir()
    test = bundled_dataset("rmd17_ethanol_test")
    atoms = test.to_ase(0)
    atoms.set_cell([30.0, 30.0, 30.0])
    atoms.center()
    atoms.pbc = True
    write_lammps_data(md / "ethanol.data", atoms, specorder=["C", "H", "O"], units="real", masses=True)
    shutil.copy(HERE / "in.heat", md / "in.heat")
    run([BIN / "lmp", "-in", "in.heat", "-var", "model", model, "-var", "thot", "8000",
         "-var", "nsteps", str(args.nsteps)], cwd=md)
    log = (md / "log.lammps").read_text()
    halted = [l for l in log.splitlines() if "Fix halt condition" in l]
    print(halted[0] if halted else f"the halt did not fire within {args.nsteps} steps")

    step("5/6 analyse the trajectory (uncertainty, geometry) and pick frames for new DFT labels")
    run([BIN / "bnn-analyze", md / "traj.dump", "--data", md / "ethanol.data", "--elements", "C", "H", "O",
         "--threshold", f"{threshold:.6f}", "--select", "5", "--out", out / "analysis",
         "--json", out / "analysis" / "analysis.json"])
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    ev = json.loads((out / "eval_test.json").read_text())

    truth_line = "DFT check skipped (--dft-frames 0)"
    if args.dft_frames > 0:
        step(f"6/6 the truth: label {args.dft_frames} frames up to the halt with pyscf PBE/def2-SVP "
             "(rMD17's level) and compare the model's forces")
        from bnnmd.analysis import dft_truth, frame_errors, read_trajectory
        from bnnmd.label import PySCFLabeller

        traj = read_trajectory(md / "traj.dump", data=md / "ethanol.data", elements=["C", "H", "O"])
        frames = dft_frames(traj.n_frames - 1, args.dft_frames)
        truth = dft_truth(traj, model, PySCFLabeller(cache=out / "dft_labels"), frames, processes=args.processes)
        # the tolerance: the largest per-atom error on 99 % of the test frames (in-distribution, rMD17 labels)
        test_errors = frame_errors(model, test)["max_error"]
        tolerance = float(np.percentile(test_errors, 99))
        first = truth.first_error_above(tolerance)
        worst = int(np.argmax(truth.max_error))
        (out / "truth.json").write_text(json.dumps(dict(truth.to_dict(), tolerance=tolerance), indent=1) + "\n")
        for s_, e_, u_ in zip(truth.steps, truth.max_error, truth.max_std):
            print(f"  step {s_:6d}: largest true per-atom force error {e_:7.3f}, largest predicted std {u_:7.3f} "
                  f"kcal/mol/A")
        what = (f"tolerance {tolerance:.2f} kcal/mol/A = the largest per-atom error on 99 % of the "
                f"{len(test_errors)} test frames")
        if first is None:
            truth_line = (f"true force error (PBE/def2-SVP, {len(truth.steps)} frames up to the halt): below the "
                          f"{what} on every frame; largest {truth.max_error[worst]:.2f} at step {truth.steps[worst]}")
        else:
            halt_at = halt_step_of(halted)
            when = ("" if halt_at is None else ": the halt fired on that same check (0 steps of bad forces)"
                    if first == halt_at else f", {halt_at - first} steps before the halt")
            truth_line = (f"true force error (PBE/def2-SVP, {len(truth.steps)} frames): first above the {what} at "
                          f"step {first}{when}")

    print(f"\n=== done in {time.perf_counter() - t0:.0f} s ===")
    print(f"test forces: MAE {ev['forces.mae']:.3f} kcal/mol/A, MLL {ev['forces.mll']:.3f}, "
          f"ROC-AUC {ev['forces.auc']:.3f}; energy MAE {ev['energy.mae']:.3f} kcal/mol")
    halt_step = halt_step_of(halted)
    print(f"halt: threshold {threshold:.3f} kcal/mol/A ({read_metadata(model)['halt_rule']}); "
          + (f"fired at step {halt_step} ({halt_step * 0.5:.0f} fs)" if halted else "did not fire"))
    geo = analysis.get("geometry", {}).get("first_unphysical")
    print("geometry: " + (f"first unphysical at step {geo['step']}: {geo['description']}" if geo
                          else "no unphysical geometry up to the end of the run (no pair closer than 0.6 x the "
                               "covalent-radius sum, no H2, no lasting bond change)"))
    print(truth_line)
    for what, path in (("training run (samples, log, checkpoint)", out / "run"),
                       ("evaluation (JSON, plots)", out / "eval_plots"), ("exported model", model),
                       ("LAMMPS run (log, traj.dump)", md), ("analysis (report, plots, frames to relabel)",
                                                             out / "analysis"),
                       ("DFT check (labels, truth.json)", out)):
        print(f"  {what:45s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
