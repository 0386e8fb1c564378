"""Would a halt on the EPISTEMIC std alone run longer round by round? (issue 14)

    OMP_NUM_THREADS=1 .venv/bin/python bench/active_learning_epistemic_halt.py LOOP_DIR [--rounds 0,1,2,3]
        [--parallel 2] [--seeds 12345:8] [--halt-every 20] [--halt-window 1] [--out JSON]

``LOOP_DIR``: a finished bnn-learn run (``bench/active_learning.py`` leaves one in WORK/loop). Each
round's model runs the built-in heating recipe (the demo's ramp, 4000 steps, velocity seeds
12345-12352 as the loop's own runs; ``--seeds FIRST:COUNT`` for others, e.g. ``12353:32``, seeds no
round's runs took frames from) with the halt on the largest per-atom epistemic std instead of
the total one (``bnnmd.learn.run_md(..., epistemic_threshold=)``, what ``md.halt_on: epistemic`` runs)::

    compute emax all reduce max c_unc[2]
    variable ratio equal c_emax/THRESHOLD
    fix stop all halt 20 v_ratio > 1.0 error soft

(with ``--halt-window W``: ``fix uwin all ave/atom 1 W N c_unc[2]`` and the largest average, checked
every ``--halt-every N`` steps, what ``md.halt_window`` runs). THRESHOLD = 1.5 x the median over the validation frames of a frame's largest per-atom epistemic
std of round 0's model (``frame_max_std_epistemic`` of its calibration), kept for every round, as
``md.threshold: start`` keeps the total one. Writes bench/results/active_learning_epistemic_halt.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
LOOP_SEEDS = "12345:8"  # the loop's own runs (bench/active_learning.py: md.seed 12345, md.runs 8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("loop")
    p.add_argument("--rounds", default="0,1,2,3")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--seeds", default=LOOP_SEEDS, help="FIRST:COUNT velocity seeds (default: the loop's own)")
    p.add_argument("--halt-every", type=int, default=20, help="md.halt_every of the runs")
    p.add_argument("--halt-window", type=int, default=1, help="md.halt_window of the runs (steps averaged before a check)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "active_learning_epistemic_halt.json"))
    a = p.parse_args(argv)
    first, count = (int(x) for x in a.seeds.split(":"))
    seeds = list(range(first, first + count))

    from bnnmd.data import bundled_dataset
    from bnnmd.learn import MDSection, run_md
    from bnnmd.posterior import CALIBRATION_FILE, DEFAULT_HALT_RULE, Calibration, halt_threshold

    loop = Path(a.loop).resolve()
    halt = Calibration.load(loop / "round_00" / "run" / "samples" / CALIBRATION_FILE).halt
    thr = halt_threshold(halt, DEFAULT_HALT_RULE, part="epistemic")[0]
    work = loop.parent / "epistemic_halt"
    work.mkdir(exist_ok=True)
    # bnn-learn's built-in heating recipe, with md.halt_on epistemic's halt
    c = MDSection(nsteps=4000, halt_every=a.halt_every, halt_window=a.halt_window)
    structure = bundled_dataset("rmd17_ethanol_test").to_ase(0)
    rows = {}
    for r in [int(x) for x in a.rounds.split(",")]:
        model = loop / f"round_{r:02d}" / "model.pth"

        def one(seed: int) -> int:
            h = run_md(model, structure, work / f"r{r}_s{seed}", c, seed=seed, epistemic_threshold=thr)
            return c.nsteps if h is None else h

        with ThreadPoolExecutor(a.parallel) as pool:
            steps = list(pool.map(one, seeds))
        sem = float(np.std(steps, ddof=1) / np.sqrt(len(steps)))
        rows[str(r)] = {"halt_steps": steps, "mean": float(np.mean(steps)), "sem": sem}
        print(f"round {r}: {steps}, mean {np.mean(steps):.0f} +- {sem:.0f} (standard error)", flush=True)
    Path(a.out).write_text(json.dumps({"experiment": "active_learning_epistemic_halt", "loop": str(loop),
                                       "threshold": thr, "force_unit": halt.force_unit,
                                       "seeds": seeds, "rounds": rows, "halt_every": a.halt_every,
                                       "halt_window": a.halt_window, "command": " ".join(sys.argv)},
                                      indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
