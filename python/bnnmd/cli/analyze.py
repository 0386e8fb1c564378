"""``bnn-analyze TRAJ --threshold T [--data FILE --elements C H O] [--select N] [--out DIR] [--json OUT]``.

TRAJ is a LAMMPS dump with the per-atom columns of ``compute bnn/atom``
(``c_unc[1]`` total, ``c_unc[2]`` epistemic, ``c_unc[3]`` aleatoric force std) or an
extxyz with the per-atom array ``forces_std``. Writes ``report.md`` and PNG plots
into ``--out`` (and ``selected.extxyz`` with ``--select N``), prints a summary with one
line that puts the first unphysical geometry next to the first threshold crossing.
Exit status 2 for input that cannot be analysed, with a message naming the fix.
See docs/analysis.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bnnmd.analysis import analyze, read_trajectory, select_frames, write_report, write_selection
from bnnmd.cli._errors import fail as _fail
from bnnmd.cli._errors import guarded

SELECTION_FILE = "selected.extxyz"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="bnn-analyze",
        description="Analyse the per-atom force uncertainty along an MD trajectory (LAMMPS dump with the "
                    "columns of compute bnn/atom, or extxyz with forces_std): time series, threshold crossings, "
                    "the atoms responsible and their neighbours, the geometry sanity of every frame (atoms too "
                    "close, H2 formed, bond-graph changes) next to the first crossing; pick diverse uncertain "
                    "frames for labelling. See docs/analysis.md.")
    parser.add_argument("trajectory", help="LAMMPS dump (dump custom ... id type x y z c_unc[1] c_unc[2] c_unc[3]) "
                                           "or extxyz (.xyz/.extxyz) with the per-atom array forces_std")
    parser.add_argument("--threshold", type=float, required=True,
                        help="per-atom force std above which an atom/frame counts as uncertain, in the "
                             "trajectory's units (LAMMPS force units; eV/A for extxyz)")
    parser.add_argument("--data", metavar="FILE", help="LAMMPS data file of the run (topology); default: the "
                                                       "dump's own type/element columns")
    parser.add_argument("--elements", nargs="+", metavar="EL",
                        help="element of each LAMMPS atom type in type order, as in pair_coeff (e.g. C H O); "
                             "default: the dump's element column, else the masses in --data")
    parser.add_argument("--column", default="1",
                        help="1/total (default), 2/epistemic or 3/aleatoric: which c_unc[N] column to analyse")
    parser.add_argument("--compute", metavar="ID", help="ID of compute bnn/atom in the dump columns "
                                                        "(default unc, or the only one dumped)")
    parser.add_argument("--units", choices=["real", "metal"],
                        help="LAMMPS units style of the run: labels the numbers kcal/mol/A or eV/A")
    parser.add_argument("--format", default="auto", choices=["auto", "lammpsdump", "extxyz"],
                        help="input format (default: extxyz for .xyz/.extxyz, else LAMMPS dump)")
    parser.add_argument("--select", type=int, default=0, metavar="N",
                        help="pick at most N diverse frames above the threshold and write them to "
                             f"OUT/{SELECTION_FILE}")
    parser.add_argument("--min-gap", type=int, default=None, metavar="STEPS",
                        help="minimum MD-step distance between picked frames (default 5 dump intervals)")
    parser.add_argument("--descriptor-cutoff", type=float, default=5.0, metavar="A",
                        help="cutoff of the structural descriptor used for diversity (default 5 A)")
    parser.add_argument("--top", type=int, default=10, help="how many atoms and frames to list (default 10)")
    parser.add_argument("--radius", type=float, default=3.0,
                        help="neighbour radius of the structural context, A (default 3.0)")
    parser.add_argument("--close-factor", type=float, default=0.6, metavar="F",
                        help="atoms i, j count as too close when d_ij < F (R_i + R_j), R the covalent radii "
                             "(default 0.6)")
    parser.add_argument("--bond-factor", type=float, default=1.2, metavar="F",
                        help="atoms i, j count as bonded when d_ij < F (R_i + R_j); the bond graph of each frame "
                             "is compared with frame 0's (default 1.2)")
    parser.add_argument("--lasting-frames", type=int, default=3, metavar="N",
                        help="a bond-graph change counts as unphysical once it holds N consecutive frames or to "
                             "the last frame; shorter ones are reported as bond vibrations (default 3; 1: any "
                             "change)")
    parser.add_argument("--out", default="bnn-analysis", metavar="DIR",
                        help="directory of report.md, the plots and the selection (default ./bnn-analysis)")
    parser.add_argument("--json", metavar="OUT", help="write all numbers as JSON to OUT ('-' for stdout)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    args = parser.parse_args(argv)

    def fail(message: str) -> int:
        return _fail("bnn-analyze", message)

    if args.min_gap is not None and args.min_gap < 0:
        return fail(f"--min-gap {args.min_gap}: a step gap must be 0 or more")
    if args.select < 0:
        return fail(f"--select {args.select}: give the largest number of frames to pick, 1 or more")
    text_out = sys.stderr if args.json == "-" else sys.stdout

    def run() -> int:
        traj = read_trajectory(args.trajectory, data=args.data, elements=args.elements, format=args.format,
                               compute=args.compute, units=args.units)
        result = analyze(traj, args.threshold, column=args.column, top=args.top, radius=args.radius,
                         close_factor=args.close_factor, bond_factor=args.bond_factor,
                         lasting_frames=args.lasting_frames)
        out = Path(args.out)
        sel_file = None
        if args.select:
            result.selection = select_frames(traj, args.threshold, args.select, column=args.column,
                                             min_gap=args.min_gap, cutoff=args.descriptor_cutoff)
            if result.selection.frames:
                sel_file = write_selection(traj, result.selection, out / SELECTION_FILE)
                result.files["selection"] = str(sel_file)
            elif (out / SELECTION_FILE).is_file():  # nothing above the threshold: no stale file from a last run
                (out / SELECTION_FILE).unlink()
        write_report(result, traj, out, plots=not args.no_plots, selection_file=sel_file)
        print(result.text(), file=text_out)
        print(f"report written to {result.files['report']}", file=text_out)
        if args.json == "-":
            print(json.dumps(result.to_dict(), indent=1))
        elif args.json:
            result.to_json(args.json)
            print(f"JSON written to {args.json}", file=text_out)
        return 0

    return guarded("bnn-analyze", run)


if __name__ == "__main__":
    sys.exit(main())
