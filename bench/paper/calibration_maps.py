"""Recalibration on validation data: none vs one std factor ('scale') vs an isotonic map.

    OMP_NUM_THREADS=1 .venv/bin/python bench/paper/calibration_maps.py [RUN_DIR ...] [--k 8] [--out FILE]

The paper (section 5) finds its uncertainties overconfident and recommends recalibrating them.
For every run directory (default: the runs that rmd17_sghmc_vs_dropout.py and
ccsd_t_ensemble.py leave under /tmp/bnnmd_paper/*-cpu), with k samples:

1. predict the run's validation frames (``split:val``) and test frames (``split:test``) once
   (``bnnmd.uq.evaluate`` without calibration: its predictions, in the model's units);
2. fit a scale map and an isotonic map per quantity on the validation predictions
   (``bnnmd.uq.fit_map``, the code behind ``bnn-eval --calibrate-on split:val
   --calibration-map scale|isotonic``);
3. report test MLL, NECE (the same bins for all three), ROC-AUC and the fraction within 2 sigma
   for forces and energies, without a map and with each.

The question: does a map that depends on the predicted std (isotonic) beat one factor per
quantity on held-out data, or does it overfit the 30 validation frames?
Writes bench/results/paper/calibration_maps.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import common as C

DEFAULT_RUNS = ["rmd17_sghmc_vs_dropout-cpu/ethanol/sghmc", "rmd17_sghmc_vs_dropout-cpu/ethanol/mc_dropout",
                "rmd17_sghmc_vs_dropout-cpu/malonaldehyde/sghmc",
                "rmd17_sghmc_vs_dropout-cpu/malonaldehyde/mc_dropout",
                "rmd17_sghmc_vs_dropout-cpu/aspirin/sghmc", "rmd17_sghmc_vs_dropout-cpu/aspirin/mc_dropout",
                "ccsd_t_ensemble-cpu/sghmc", "ccsd_t_ensemble-cpu/ensemble"]
KINDS = ("none", "scale", "isotonic")
KEYS = ["mll", "nece", "within_2sigma"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="*", help="run directories (default: the cpu-scale runs under /tmp/bnnmd_paper)")
    p.add_argument("--k", type=int, default=8, help="samples per run (MC dropout: masks), default 8")
    p.add_argument("--out", type=Path, default=C.RESULTS / "calibration_maps.json")
    args = p.parse_args(argv)
    C.preload()
    runs = [Path(r) for r in args.runs] or [Path("/tmp/bnnmd_paper") / r for r in DEFAULT_RUNS]
    runs = [r for r in runs if (r / "samples").is_dir()]
    if not runs:
        print("no run directories with samples/ found; run bench/paper/rmd17_sghmc_vs_dropout.py and "
              "ccsd_t_ensemble.py first, or pass RUN_DIRs", file=sys.stderr)
        return 2

    from bnnmd.posterior import Calibration
    from bnnmd.uq import evaluate, fit_map, load_model, metrics_of

    out = {"experiment": "calibration_maps", "question": __doc__.split("The question: ")[1].split("\n\n")[0],
           "command": " ".join([Path(sys.executable).name, *sys.argv]),
           "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "machine": C.machine_info(), "k": args.k, "runs": []}
    rows = []
    for run in runs:
        t0 = time.perf_counter()
        loaded = load_model(run / "samples", k=args.k)
        pred = {}
        for part in ("val", "test"):  # the raw predictions, in the model's units (what evaluate() scores)
            pred[part] = evaluate(loaded, f"split:{part}", calibration=False).uncalibrated
        val, test = pred["val"], pred["test"]
        maps = {kind: Calibration({q: fit_map(kind, val.get(q).mu, val.get(q).sigma, val.get(q).y, q)
                                   for q in ("forces", "energy")}) for kind in ("scale", "isotonic")}
        before = metrics_of(test)
        widths = {q: before[f"{q}.nece_bin_width"] for q in ("forces", "energy")}
        rec = {"run": str(run), "method": loaded.method, "n_val_frames": val.n_frames,
               "n_test_frames": test.n_frames, "metrics": {"none": before},
               "maps": {kind: cal.to_dict() for kind, cal in maps.items()}}
        for kind, cal in maps.items():
            rec["metrics"][kind] = metrics_of(test.calibrated(cal), nece_width=widths)
        rec["eval_s"] = time.perf_counter() - t0
        out["runs"].append(rec)
        name = "/".join(run.parts[-2:])
        for kind in KINDS:
            m = rec["metrics"][kind]
            rows.append([name, kind] + [m[f"forces.{key}"] for key in KEYS] + [m["forces.auc"]]
                        + [m[f"energy.{key}"] for key in KEYS])
        C.log(f"{name}: force MLL none {C.fmt(before['forces.mll'])}, scale "
              f"{C.fmt(rec['metrics']['scale']['forces.mll'])}, isotonic "
              f"{C.fmt(rec['metrics']['isotonic']['forces.mll'])} ({rec['eval_s']:.0f} s)")
    path = C.write_json(args.out, out)
    print(f"## Recalibration on the validation frames, evaluated on the test frames (k = {args.k})\n")
    print(C.md_table(["run", "map", "F MLL", "F NECE", "F within 2 sigma", "F AUC", "E MLL", "E NECE",
                      "E within 2 sigma"], rows))
    print(f"\nresults written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
