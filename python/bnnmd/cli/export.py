"""``bnn-export SAMPLES_DIR OUT.pth|OUT.pt2 [--k K | --select I,J,...] [--dtype float32] [--freeze]
[--format torchscript|pt2] [--device cpu|cuda] [--halt-rule NAME:F | --halt-threshold STD]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bnnmd.cli._errors import guarded
from bnnmd.deploy import ExportError, export, read_metadata
from bnnmd.posterior import CALIBRATION_FILE, DEFAULT_HALT_RULE, Calibration, halt_threshold, parse_rule
from bnnmd.units import lammps_pressure_factor


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bnn-export",
        description="Stack posterior samples (RUN_DIR/samples) into ONE model file for LAMMPS "
                    "(pair_style bnn), the ASE calculator and bnnmd._core.Evaluator: TorchScript (OUT.pth), "
                    "or an AOTInductor package compiled ahead of time (OUT.pt2: faster per call; runs only "
                    "with this torch version on the device it was compiled for).")
    parser.add_argument("samples", help="directory of sample_XXX.pt files written by bnn-train")
    parser.add_argument("out", help="output file, e.g. model.pth (TorchScript) or model.pt2 (AOTInductor)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--k", type=int, help="export K evenly spaced samples (MC dropout: K masks)")
    group.add_argument("--select", help="comma-separated sample indices, e.g. 0,2,5")
    parser.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    parser.add_argument("--freeze", action="store_true",
                        help="TorchScript: torch.jit.freeze the module (inlines parameters)")
    parser.add_argument("--format", choices=["torchscript", "pt2"], default=None,
                        help="default: pt2 for an OUT ending in .pt2, torchscript otherwise")
    parser.add_argument("--device", default="cpu",
                        help=".pt2: the device to compile for (cpu, cuda, cuda:N); default cpu")
    parser.add_argument("--halt-rule", default=None, metavar="NAME:FACTOR",
                        help="the halt threshold stored in the model (LAMMPS: c_unc[5] of compute bnn/atom), from "
                             "the validation statistics of bnn-eval --calibrate-on: median:F (F x the median over "
                             "validation frames of a frame's largest per-atom force std; default median:1.5), "
                             "envelope:F (F x the largest on any validation frame) or rmse:F (F x the validation "
                             "force RMSE)")
    parser.add_argument("--halt-threshold", type=float, default=None, metavar="STD",
                        help="store this halt threshold (a per-atom force std in the model's force unit, e.g. "
                             "kcal/mol/A) instead of a rule's; needs no validation statistics")
    args = parser.parse_args(argv)

    def run() -> int:
        select = None
        if args.select:
            try:
                select = [int(x) for x in args.select.split(",")]
            except ValueError:
                raise ExportError(f"--select {args.select!r}: give comma-separated integers, e.g. 0,2,5") from None
        path = export(args.samples, args.out, k=args.k, select=select, dtype=args.dtype, freeze=args.freeze,
                      halt_rule=args.halt_rule, fmt=args.format, device=args.device,
                      halt_threshold=args.halt_threshold)
        meta = read_metadata(path)
        print(f"bnn-export: wrote {path}: k={meta['num_samples']} samples ({meta['method']}), types "
              f"{' '.join(meta['type_names'])}, cutoff {meta['cutoff']} {meta['length_unit']}, "
              f"{meta['num_layers']} layers (LAMMPS ghost cutoff {meta['cutoff'] * meta['num_layers']} "
              f"{meta['length_unit']}), {meta['dtype']}")
        if "halt_threshold" in meta:
            print(f"bnn-export: halt threshold {meta['halt_threshold']:.6g} {meta['energy_unit']}/"
                  f"{meta['length_unit']} per-atom force std (LAMMPS: c_unc[5] of compute bnn/atom); "
                  f"rule {meta['halt_rule']}")
        else:
            print("bnn-export: no halt threshold stored (no validation statistics); run bnn-eval SAMPLES "
                  "--data split:val --calibrate-on split:val before exporting to get one")
        line = _pressure_halt(args.samples, args.halt_rule, meta)
        if line:
            print(line)
        return 0

    return guarded("bnn-export", run)


def _pressure_halt(samples, rule, meta) -> str:
    """The pressure-std halt threshold of a periodic model's validation statistics (a line to print),
    by ``rule`` (median/envelope; the default rule otherwise), in the model's unit and LAMMPS' (c_unc[6]);
    "" when the calibration has no pressure statistics."""
    path = Path(samples) / CALIBRATION_FILE
    stats = Calibration.load(path).halt if path.exists() else None
    if stats is None or not stats.frame_pressure_std:
        return ""
    if rule is None or parse_rule(rule)[0] == "rmse":
        rule = DEFAULT_HALT_RULE
    value = halt_threshold(stats, rule, part="pressure")[0]
    e, length = meta["energy_unit"], meta["length_unit"]
    real, metal = (lammps_pressure_factor(style, e, length) * value for style in ("real", "metal"))
    return (f"bnn-export: pressure-std halt threshold {value:.6g} {e}/{length}^3 = {real:.6g} atm (units real) = "
            f"{metal:.6g} bar (units metal), rule {rule} (LAMMPS: against c_unc[6] of compute bnn/atom; not stored "
            "in the model, docs/lammps.md)")


if __name__ == "__main__":
    sys.exit(main())
