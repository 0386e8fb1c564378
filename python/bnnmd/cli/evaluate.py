"""``bnn-eval RUN_DIR/samples --data FILE [--k K] [--json OUT] [--plots DIR] [--calibrate-on DATA]``.

``--data`` (and ``--calibrate-on``) take a dataset file, ``bundled:NAME``, or
``split:test`` / ``split:val`` / ``split:train``: the frames of that part of
``RUN_DIR/split.json`` (RUN_DIR = the parent of the samples directory).
Exit status 2 for a request that cannot be served, with a message naming the fix.
"""

from __future__ import annotations

import argparse
import sys

import torch

from bnnmd.cli._errors import fail as _fail
from bnnmd.cli._errors import guarded
from bnnmd.uq import auc_threshold_kcal_mol_a, calibrate, evaluate, load_model


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bnn-eval",
        description="Evaluate the posterior samples of a bnn-train run: MAE, RMSE, mean log-likelihood (MLL), "
                    "NECE and ROC-AUC of outlier detection for forces and energies; optional recalibration "
                    "of the predicted std on validation data, JSON output and plots. See docs/evaluation.md.")
    parser.add_argument("samples", help="RUN_DIR/samples written by bnn-train")
    parser.add_argument("--data", required=True,
                        help="evaluation data: a file (npz, extxyz, ...), bundled:NAME, or split:test / split:val "
                             "(frames of RUN_DIR/split.json)")
    parser.add_argument("--k", type=int, default=None,
                        help="use K evenly spaced samples (MC dropout: K masks); default all")
    parser.add_argument("--json", metavar="OUT", help="write the metrics as JSON to OUT")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots into DIR")
    parser.add_argument("--calibrate-on", metavar="DATA",
                        help="fit a calibration map of the predicted std on DATA (e.g. split:val), store it as "
                             "SAMPLES/calibration.json and apply it")
    parser.add_argument("--calibration-map", choices=("scale", "isotonic"), default="scale",
                        help="with --calibrate-on: 'scale' (one std factor per quantity, default) or 'isotonic' "
                             "(a factor that depends on the predicted std); see docs/evaluation.md")
    parser.add_argument("--no-calibration", action="store_true",
                        help="ignore SAMPLES/calibration.json (report uncalibrated metrics)")
    parser.add_argument("--batch-size", type=int, default=16, help="frames per model call (default 16)")
    parser.add_argument("--auc-threshold", default="1 kcal/mol/A", metavar="'VALUE [UNIT]'",
                        help="force error threshold of the ROC-AUC, a value and a force unit, e.g. '0.05 eV/A' "
                             "(a bare number is kcal/mol/A; default 1 kcal/mol/A, the paper's for rMD17: pick one "
                             "near the error that matters for your system)")
    parser.add_argument("--nece-width", type=float, nargs=2, metavar=("FORCES", "ENERGY"),
                        help="NECE bin widths in the data's force and energy units (default: MAE/10 of "
                             "each; fix them to compare models on identical bins)")
    parser.add_argument("--float32", action="store_true", help="evaluate in float32 (default float64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the MC-dropout masks (default 0)")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        return _fail("bnn-eval", message)

    if args.calibrate_on and args.no_calibration:
        return fail("--calibrate-on and --no-calibration contradict each other; give one of them")
    if args.nece_width is not None and min(args.nece_width) <= 0:
        return fail(f"--nece-width {args.nece_width[0]} {args.nece_width[1]}: bin widths must be positive")
    if args.batch_size < 1:
        return fail(f"--batch-size {args.batch_size}: use a positive number of frames")
    try:
        args.auc_threshold = auc_threshold_kcal_mol_a(args.auc_threshold)
    except ValueError as exc:
        return fail(f"--auc-threshold {args.auc_threshold!r}: {exc}")
    dtype = torch.float32 if args.float32 else torch.float64

    def run() -> int:
        loaded = load_model(args.samples, args.k, dtype)
        if args.calibrate_on:
            cal = calibrate(loaded, args.calibrate_on, batch_size=args.batch_size, dtype=dtype,
                            auc_threshold=args.auc_threshold, seed=args.seed, kind=args.calibration_map)
            b, a = cal.metrics_before, cal.metrics_after
            print(f"calibration fitted on {cal.fitted_on['data']}: {cal.describe()}; validation MLL forces {_fmt(b['forces.mll'])} -> "
                  f"{_fmt(a['forces.mll'])}, energy {_fmt(b['energy.mll'])} -> {_fmt(a['energy.mll'])}; "
                  f"written to {cal.path}")
        result = evaluate(loaded, args.data, batch_size=args.batch_size, dtype=dtype,
                          calibration=not args.no_calibration, auc_threshold=args.auc_threshold,
                          seed=args.seed,
                          nece_width=None if args.nece_width is None else dict(zip(("forces", "energy"),
                                                                                   args.nece_width)))
        print(result.table())
        if args.json:
            result.to_json(args.json)
            print(f"metrics written to {args.json}")
        if args.plots:
            files = result.plots(args.plots)
            print(f"plots written to {args.plots}: {', '.join(f.name for f in files)}")
        return 0

    return guarded("bnn-eval", run)


if __name__ == "__main__":
    sys.exit(main())
