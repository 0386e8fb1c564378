"""bnn-learn on rMD17 ethanol, heated: does each round run longer before the halt and err less on hot MD?

    OMP_NUM_THREADS=1 .venv/bin/python bench/active_learning.py --start RUN_DIR [--rounds 3] [--out DIR]
        [--threshold start|round] [--halt-on total|epistemic] [--halt-every 20] [--halt-window 1] [--runs 8] [--select 40] [--overshoot 0]
        [--json bench/results/active_learning.json]

``--start``: a bnn-train run of the demo's recipe (``make demo`` leaves one in demo_out/run).

1. A hot test set that no round trains on: LAMMPS heats ethanol with the start model (another
   velocity seed than the loop's, no halt, 4000 steps with the demo's ramp), and pyscf PBE/def2-SVP
   labels 24 frames between steps 800 and 3200 (about 600-1500 K); the frames where the molecule
   is no longer intact (an atom left it: its bond graph is not connected) are dropped.
2. ``bnn-learn`` (bnnmd.learn) for ``--rounds`` rounds: ``--runs`` heating MD runs per round with
   the halt (velocity seeds 12345, 12346, ...; two at a time; the demo's ramp, 4000 steps at most;
   the threshold of ``--threshold``, bnn-learn's ``md.threshold``), ``--select`` frames picked from
   all runs (select.n / runs from each) and labelled by pyscf PBE/def2-SVP, then fine-tuning of all
   chains from where they ended (prior std 0.1): 2000 Adam + EMA steps at lr 1e-3, then SGHMC with
   the mass primed from Adam (1200 sampler steps, then 2 samples per chain) on the old 970 + new
   frames.
3. Per round: steps before the halt (the mean over the round's runs: one chaotic trajectory is a
   noisy measure),
   DFT calls, force MAE and MLL on the rMD17 test frames and on the hot test set. Writes
   bench/results/active_learning.json (and the loop's plot as active_learning.png) and prints the
   Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


#: ``intact``'s bond rule: ``d_ij < INTACT_FACTOR (R_i + R_j)``, looser than bnn-analyze's bond graph
#: (``bnnmd.analysis.BOND_FACTOR`` = 1.2, which a hot C-H passes for a frame): a hot bond still
#: holds the molecule together, only an atom that has left it does not.
INTACT_FACTOR = 1.5


def intact(atoms, factor: float = INTACT_FACTOR) -> bool:
    """One molecule: the graph of bonds (distance < factor x the sum of covalent radii,
    ``bnnmd.analysis.covalent_radii``) is connected."""
    from bnnmd.analysis import covalent_radii

    d = atoms.get_all_distances()
    r = covalent_radii(atoms.get_chemical_symbols())
    bonded = d < factor * (r[:, None] + r[None, :])
    seen, todo = {0}, [0]
    while todo:
        i = todo.pop()
        for j in np.nonzero(bonded[i])[0]:
            if int(j) not in seen:
                seen.add(int(j))
                todo.append(int(j))
    return len(seen) == len(atoms)


def hot_test_set(start: Path, work: Path, processes: int) -> Path:
    """The pyscf-labelled frames of 24 of an independent heated trajectory (extxyz, eV and eV/A) in
    which the molecule is intact (a frame where an atom has left it is a radical no round can learn
    from a few labels; it would set the hot errors alone)."""
    import ase.io
    from ase.calculators.singlepoint import SinglePointCalculator

    from bnnmd import units
    from bnnmd.analysis import molecule_atoms, read_trajectory
    from bnnmd.data import bundled_dataset
    from bnnmd.deploy import export
    from bnnmd.label import LabelError, PySCFLabeller, label_frames
    from bnnmd.learn import MDSection, run_md
    from bnnmd.uq import calibrate

    out = work / "hot_test.extxyz"
    if out.exists():
        return out
    md = work / "hot_md"
    md.mkdir(parents=True, exist_ok=True)
    model = md / "model.pth"
    if not model.exists():
        import shutil

        shutil.copytree(start, md / "run", dirs_exist_ok=True)
        calibrate(md / "run" / "samples", "split:val")
        export(md / "run" / "samples", model)
    lmp = md / "lammps"  # bnn-learn's heating run (the demo's ramp), another seed, no halt
    run_md(model, bundled_dataset("rmd17_ethanol_test").to_ase(0), lmp, MDSection(nsteps=4000), seed=777, halt=False)
    traj = read_trajectory(lmp / "traj.dump", data=lmp / "system.data", elements=["C", "H", "O"])
    frames = [int(f) for f in np.linspace(40, 160, 24)]  # steps 800 .. 3200
    mols = [molecule_atoms(traj, f) for f in frames]
    labels = label_frames(PySCFLabeller(cache=work / "labels"), mols, processes)
    kept = []
    ev = units.energy_factor("kcal/mol", "eV")
    for f, a, lab in zip(frames, mols, labels):
        if isinstance(lab, LabelError) or not intact(a):
            continue
        a.calc = SinglePointCalculator(a, energy=lab.energy * ev, forces=lab.forces * ev)
        a.info["step"] = int(traj.steps[f])
        kept.append(a)
    ase.io.write(out, kept, format="extxyz")
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", required=True, help="a bnn-train run of the demo's recipe (e.g. demo_out/run)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--select", type=int, default=40, help="frames labelled per round, from all runs")
    parser.add_argument("--finetune-steps", type=int, default=2000)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "active_learning_work"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--runs", type=int, default=8, help="MD runs per round (bnn-learn's md.runs)")
    parser.add_argument("--halt-on", choices=("total", "epistemic"), default="total", help="bnn-learn's md.halt_on")
    parser.add_argument("--halt-every", type=int, default=20, help="bnn-learn's md.halt_every (steps between checks)")
    parser.add_argument("--halt-window", type=int, default=1, help="bnn-learn's md.halt_window (steps averaged before a check)")
    parser.add_argument("--threshold", default="start", help="bnn-learn's md.threshold: start, round or a number")
    parser.add_argument("--overshoot", type=int, default=0,
                        help="bnn-learn's md.overshoot: steps a halted run goes on, its frames picked too")
    parser.add_argument("--json", default=str(REPO / "bench" / "results" / "active_learning.json"),
                        help="where the results go (the plot beside it, .png)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    hot = hot_test_set(Path(args.start).resolve(), work, args.processes)
    t_hot = time.perf_counter() - t0

    from bnnmd.learn import ActiveLearning, LearnConfig

    cfg = LearnConfig.from_dict({
        "start": str(Path(args.start).resolve()), "rounds": args.rounds, "max_dft_calls": args.select * args.rounds,
        "test": "bundled:rmd17_ethanol_test", "hot_test": str(hot),
        "md": {"nsteps": 4000, "runs": args.runs, "processes": 2, "halt_on": args.halt_on,
               "halt_every": args.halt_every, "halt_window": args.halt_window, "overshoot": args.overshoot, "threshold": args.threshold if args.threshold in ("start", "round")
               else float(args.threshold)}, "select": {"n": args.select, "min_gap": 100},
        "label": {"processes": args.processes},
        "finetune": {"max_steps": args.finetune_steps},
    })
    loop_dir = work / "loop"
    loop = ActiveLearning(cfg, loop_dir, resume=args.resume and (loop_dir / "state.json").exists())
    rep = loop.run()
    for row in rep["rounds"]:
        print(f"round {row['round']}: steps before the halt over {args.runs} runs {row['halt_steps']}, "
              f"mean {row['steps_run']:.0f}", flush=True)
    doc = {"report": rep, "seconds": time.perf_counter() - t0, "seconds_hot_test_set": t_hot,
           "threshold": args.threshold, "halt_on": args.halt_on, "halt_every": args.halt_every,
           "halt_window": args.halt_window, "overshoot": args.overshoot, "command": " ".join(sys.argv), "hot_test_frames": sum(1 for _ in open(hot) if _.strip().isdigit())}
    path = Path(args.json)
    path.write_text(json.dumps(doc, indent=1) + "\n")
    import shutil

    shutil.copy(loop_dir / "report.png", path.with_suffix(".png"))
    print((loop_dir / "report.md").read_text())
    print(f"wrote {path} in {doc['seconds']:.0f} s (hot test set {t_hot:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
