"""bnnmd end to end on real data: train -> evaluate -> export -> LAMMPS MD with an uncertainty halt -> analyse.

Run with `make demo` (or `OMP_NUM_THREADS=1 .venv/bin/python examples/demo/demo.py --out demo_out`).
Every number printed comes from this run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(cmd, cwd=None) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="demo_out", help="output directory (replaced)")
    parser.add_argument("--config", default=str(HERE / "train.yaml"), help="training config")
    parser.add_argument("--threshold-factor", type=float, default=2.0,
                        help="halt when an atom's force std exceeds this factor x the largest seen on test data")
    parser.add_argument("--nsteps", type=int, default=20000, help="LAMMPS steps at most (0.5 fs)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    t0 = time.perf_counter()

    step("1/5 train: Adam + EMA warm start, then SGHMC, on bundled rMD17 ethanol (real PBE/def2-SVP data)")
    run([BIN / "bnn-train", args.config, "--out", out / "run"])

    step("2/5 evaluate on the bundled test frames; fit the calibration on the validation frames")
    samples = out / "run" / "samples"
    run([BIN / "bnn-eval", samples, "--data", "split:val", "--calibrate-on", "split:val",
         "--json", out / "eval_val.json"])
    run([BIN / "bnn-eval", samples, "--data", "bundled:rmd17_ethanol_test", "--json", out / "eval_test.json",
         "--plots", out / "eval_plots"])

    step("3/5 export the 8 posterior samples as ONE TorchScript file")
    model = out / "model.pth"
    run([BIN / "bnn-export", samples, model])

    # the halt threshold: the largest per-atom force std of the model on the test frames, times a factor
    from ase.io.lammpsdata import write_lammps_data

    from bnnmd.calculator import BNNCalculator
    from bnnmd.data import bundled_dataset

    test = bundled_dataset("rmd17_ethanol_test")
    calc = BNNCalculator(model)
    largest = 0.0
    kcal = 1.0 / 0.04336410390059322  # eV -> kcal/mol (bnnmd.units)
    for i in range(len(test)):
        atoms = test.to_ase(i)
        atoms.calc = calc
        atoms.get_forces()
        largest = max(largest, float(calc.results["forces_std"].max()) * kcal)
    threshold = args.threshold_factor * largest
    print(f"largest per-atom force std on the {len(test)} test frames: {largest:.3f} kcal/mol/A; "
          f"halt threshold = {args.threshold_factor:g} x that = {threshold:.3f} kcal/mol/A")

    step("4/5 LAMMPS: heat ethanol from 300 K until the uncertainty halt fires")
    md = out / "md"
    md.mkdir()
    atoms = test.to_ase(0)
    atoms.set_cell([30.0, 30.0, 30.0])
    atoms.center()
    atoms.pbc = True
    write_lammps_data(md / "ethanol.data", atoms, specorder=["C", "H", "O"], units="real", masses=True)
    shutil.copy(HERE / "in.heat", md / "in.heat")
    run([BIN / "lmp", "-in", "in.heat", "-var", "model", model, "-var", "threshold", f"{threshold:.6f}",
         "-var", "thot", "8000", "-var", "nsteps", str(args.nsteps)], cwd=md)
    log = (md / "log.lammps").read_text()
    halted = [l for l in log.splitlines() if "Fix halt condition" in l]
    print(halted[0] if halted else f"the halt did not fire within {args.nsteps} steps")

    step("5/5 analyse the trajectory and pick frames for new DFT labels")
    run([BIN / "bnn-analyze", md / "traj.dump", "--data", md / "ethanol.data", "--elements", "C", "H", "O",
         "--threshold", f"{threshold:.6f}", "--select", "5", "--out", out / "analysis",
         "--json", out / "analysis" / "analysis.json"])

    ev = json.loads((out / "eval_test.json").read_text())
    print(f"\n=== done in {time.perf_counter() - t0:.0f} s ===")
    print(f"test forces: MAE {ev['forces.mae']:.3f} kcal/mol/A, MLL {ev['forces.mll']:.3f}, "
          f"ROC-AUC {ev['forces.auc']:.3f}; energy MAE {ev['energy.mae']:.3f} kcal/mol")
    for what, path in (("training run (samples, log, checkpoint)", out / "run"),
                       ("evaluation (JSON, plots)", out / "eval_plots"), ("exported model", model),
                       ("LAMMPS run (log, traj.dump)", md), ("analysis (report, plots, frames to relabel)",
                                                             out / "analysis")):
        print(f"  {what:45s} {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
