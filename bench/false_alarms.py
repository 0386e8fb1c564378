"""False alarms of the uncertainty halt on heated ethanol, checked with DFT labels (issue 26, item 0).

    OMP_NUM_THREADS=1 .venv/bin/python bench/false_alarms.py --model round0=MODEL.pth [--model NAME=MODEL.pth ...]
        --calibration START_RUN/samples/calibration.json [--seeds 50001:32] [--nsteps 2400] [--parallel 2]
        [--label] [--out bench/results/false_alarms.json]

Every model heats rMD17 ethanol with bnn-learn's built-in recipe (``bnnmd.learn.run_md``: 300 K, the
thermostat target rising 770 K/ps, 0.5 fs, ``fix nvt``) from each velocity seed (held out: no loop
run uses them) WITHOUT a halt, dumping the per-atom stds every step. The halt rules are then applied
to the same trajectories (a halted run is the same trajectory up to its halt), so every rule sees
the same runs:

- ``check``: what ``md.halt_on: epistemic`` runs today: every 20 steps (``fix halt 20``), the
  largest per-atom epistemic std against the threshold;
- ``twice``: the same check above the threshold on two consecutive checks (20 steps apart);
- ``mean20``: each atom's epistemic std averaged over the 20 steps up to the check (``fix ave/atom
  1 20 20``), the largest of them against the threshold;
- ``mean40``: the same over 40 steps, checked every 40 (``md.halt_every: 40``, ``md.halt_window: 40``).

Thresholds: ``F x`` the median over the validation frames of a frame's largest per-atom epistemic
std of ``--calibration`` (the start model's; ``md.threshold: start``), for ``--factors``.

A halt's temperature is the mean instantaneous temperature over the 200 steps (0.1 ps) up to it.
With ``--label`` the frame at every rule's halt is labelled with pyscf PBE/def2-SVP (rMD17's level;
cached in WORK/labels) and its largest per-atom force error ``|dF| / sqrt 3`` compared with q99, the
99th percentile of that error over the 200 bundled rMD17 test frames: a halt with the error still
under q99 is a *false alarm* by the labels; one above it a *true alarm*. Writes the JSON and prints
the Markdown tables of docs/results.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
from _machine import machine_info  # noqa: E402  (bench/_machine.py)
from halt_truth import temperatures  # noqa: E402  (a LAMMPS log's step -> temperature)
HALT_EVERY = 20
RULES = ("check", "twice", "mean20", "mean40")
T_WINDOW = 200  # steps: the halt's temperature is the mean over them
GAP_EVERY = 40  # steps between the labelled frames of --gaps


def log(msg: str) -> None:
    print(f"[false_alarms {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def heat(model: Path, md: Path, seed: int, nsteps: int) -> Path:
    """bnn-learn's built-in heating run without the halt, per-atom stds dumped every step; reused
    when it finished before. Returns the npz of ``epistemic``/``total [steps + 1, atoms]`` and ``temp``."""
    from bnnmd.analysis import read_trajectory
    from bnnmd.data import bundled_dataset
    from bnnmd.learn import MDSection, run_md

    out = md / "stds.npz"
    if out.exists():
        return out
    structure = bundled_dataset("rmd17_ethanol_test").to_ase(0)
    run_md(model, structure, md, MDSection(nsteps=nsteps, dump_every=1), seed=seed, halt=False)
    traj = read_trajectory(md / "traj.dump", data=md / "system.data", elements=["C", "H", "O"])
    t = temperatures(md / "log.lammps")
    steps = np.asarray(traj.steps)
    np.savez(out, steps=steps, epistemic=np.asarray(traj.uncertainty["epistemic"]),
             total=np.asarray(traj.uncertainty["total"]), temp=np.array([t[int(s)] for s in steps]))
    return out


def halt_step(rule: str, ep: np.ndarray, threshold: float):
    """The step ``rule`` halts on (None: never), from per-step per-atom stds ``ep [steps + 1, atoms]``
    (row i = step i): ``check``, ``mean20`` and ``mean40`` are bnn-learn's built-in recipe with
    ``md.halt_window`` 1, 20 (checks every 20 steps) and 40 (every 40), computed by its Python twin
    ``bnnmd.posterior.halt_step``; ``twice`` is two checks in a row above the threshold."""
    from bnnmd.posterior import halt_step as windowed

    if rule in ("check", "mean20"):
        return windowed(ep, threshold, HALT_EVERY, 1 if rule == "check" else HALT_EVERY)
    if rule == "mean40":  # md.halt_every 40, md.halt_window 40
        return windowed(ep, threshold, 2 * HALT_EVERY, 2 * HALT_EVERY)
    if rule != "twice":
        raise ValueError(rule)
    top = ep.max(axis=1)
    hits = [s for s in range(HALT_EVERY, ep.shape[0], HALT_EVERY)
            if top[s] > threshold and top[s - HALT_EVERY] > threshold]
    return int(hits[0]) if hits else None


def halt_temperature(temp: np.ndarray, step) -> float:
    if step is None:
        return float("nan")
    return float(np.mean(temp[max(0, step - T_WINDOW + 1):step + 1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", action="append", required=True, help="NAME=MODEL.pth (exported), repeatable")
    p.add_argument("--calibration", required=True, help="the start model's samples/calibration.json")
    p.add_argument("--seeds", default="50001:32", help="FIRST:COUNT velocity seeds")
    p.add_argument("--nsteps", type=int, default=2400)
    p.add_argument("--factors", default="1.5,1.75,2.0", help="threshold factors on the validation median")
    p.add_argument("--parallel", type=int, default=2)
    p.add_argument("--label", action="store_true", help="label every rule's halt frame with pyscf")
    p.add_argument("--gaps", default="", help="RULE@FACTOR: label the frames between an earlier frame above q99 "
                   "and this row's halt")
    p.add_argument("--label-only", default="", help="RULE@FACTOR,... : label these rows' halts only (default: all)")
    p.add_argument("--work", default=str(REPO / "bench" / "results" / "false_alarms_work"))
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "false_alarms.json"))
    a = p.parse_args(argv)

    from bnnmd import units
    from bnnmd.posterior import Calibration
    first, count = (int(x) for x in a.seeds.split(":"))
    seeds = list(range(first, first + count))
    models = dict(m.split("=", 1) for m in a.model)
    work = Path(a.work).resolve()
    halt = Calibration.load(a.calibration).halt
    to_real = units.force_factor(halt.force_unit, "kcal/mol/A")  # LAMMPS real's, the dump's unit
    median = float(np.median(halt.frame_max_std_epistemic)) * to_real
    factors = [float(f) for f in a.factors.split(",")]

    runs = {}
    for name, model in models.items():
        with ThreadPoolExecutor(a.parallel) as pool:
            files = list(pool.map(lambda s: heat(Path(model).resolve(), work / name / f"s{s}", s, a.nsteps), seeds))
        runs[name] = {s: dict(np.load(f)) for s, f in zip(seeds, files)}
        log(f"{name}: {len(seeds)} runs of {a.nsteps} steps")

    result = {"experiment": "false_alarms", "machine": machine_info(), "command": " ".join(sys.argv),
              "seeds": seeds, "nsteps": a.nsteps, "validation_median_epistemic": median, "unit": "kcal/mol/A",
              "models": {n: str(m) for n, m in models.items()}, "rows": []}
    for name in models:
        for f in factors:
            for rule in RULES:
                halts = [halt_step(rule, runs[name][s]["epistemic"], f * median) for s in seeds]
                temps = [halt_temperature(runs[name][s]["temp"], h) for s, h in zip(seeds, halts)]
                result["rows"].append({"model": name, "factor": f, "threshold": f * median, "rule": rule,
                                       "halts": halts, "temperatures": temps})

    if a.label:
        only = {(r.split("@")[0], float(r.split("@")[1])) for r in a.label_only.split(",") if r}
        gaps = (a.gaps.split("@")[0], float(a.gaps.split("@")[1])) if a.gaps else None
        label_halts(result, models, work, a.parallel, only, gaps)
    Path(a.out).write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))
    return 0


def label_halts(result, models, work: Path, processes: int, only=frozenset(), gaps=None) -> None:
    """pyscf labels of every distinct halt frame (of the rows ``(rule, factor)`` in ``only``, all when
    empty); each row gets the halt frames' largest per-atom errors (None: not labelled) and q99 of the
    test frames."""
    from bnnmd.analysis import dft_truth, frame_errors, read_trajectory
    from bnnmd.data import bundled_dataset
    from bnnmd.label import PySCFLabeller

    labeller = PySCFLabeller(cache=work / "labels", max_cycle=60)
    test = bundled_dataset("rmd17_ethanol_test")
    result["q99"] = {}
    for name, model in models.items():
        q99 = float(np.percentile(frame_errors(model, test)["max_error"], 99))
        result["q99"][name] = q99
        wanted = {}
        for row in result["rows"]:
            if row["model"] == name and (not only or (row["rule"], row["factor"]) in only):
                for s, h in zip(result["seeds"], row["halts"]):
                    if h is not None:
                        wanted.setdefault(s, set()).add(h)
        errors = {}
        for s, steps in sorted(wanted.items()):
            md = work / name / f"s{s}"
            traj = read_trajectory(md / "traj.dump", data=md / "system.data", elements=["C", "H", "O"])
            index = {int(st): i for i, st in enumerate(traj.steps)}
            truth = dft_truth(traj, model, labeller, [index[h] for h in steps], processes=processes)
            for st, e in zip(truth.steps, truth.max_error):
                errors[(s, st)] = e
        log(f"{name}: {len(errors)} halt frames labelled, q99 {q99:.3f}")
        for row in result["rows"]:
            if row["model"] == name:
                row["errors"] = [None if h is None else errors.get((s, h)) for s, h in zip(result["seeds"], row["halts"])]
        if gaps:
            label_gaps(result, name, model, work, labeller, processes, errors, gaps)


def label_gaps(result, name, model, work: Path, labeller, processes: int, errors: dict, gaps) -> None:
    """For the row ``gaps = (rule, factor)``: on every seed where a labelled frame (another rule's
    halt) above q99 comes before the row's halt, label every ``GAP_EVERY`` steps from that frame to
    the halt: do the errors stay above q99 (garbage piling up) or was it a spike?"""
    from bnnmd.analysis import dft_truth, read_trajectory

    q99 = result["q99"][name]
    row = next(r for r in result["rows"] if r["model"] == name and (r["rule"], r["factor"]) == gaps)
    out = {}
    for s, h in zip(result["seeds"], row["halts"]):
        bad = sorted(st for (seed, st), e in errors.items() if seed == s and e > q99 and h is not None and st < h)
        if not bad:
            continue
        md = work / name / f"s{s}"
        traj = read_trajectory(md / "traj.dump", data=md / "system.data", elements=["C", "H", "O"])
        steps = list(range(bad[0], h, GAP_EVERY))
        truth = dft_truth(traj, model, labeller, steps, processes=processes)  # frame i = step i
        out[str(s)] = {"first_above_q99": bad[0], "halt": h, "steps": truth.steps, "errors": truth.max_error,
                       "above_q99": int(sum(e > q99 for e in truth.max_error))}
    result.setdefault("gaps", {})[name] = {"rule": gaps[0], "factor": gaps[1], "every": GAP_EVERY, "seeds": out}
    n = sum(len(v["steps"]) for v in out.values())
    log(f"{name}: {gaps[0]}@{gaps[1]:g} halts after a frame above q99 on {len(out)} seeds; between them "
        f"{sum(v['above_q99'] for v in out.values())} of {n} frames (every {GAP_EVERY} steps) above q99")


def summary(row, q99=None) -> dict:
    """Mean and standard error over the runs that halted (a run without a halt is left out)."""
    reached = np.array([h for h in row["halts"] if h is not None], dtype=float)
    t = np.array(row["temperatures"], dtype=float)
    out = {"halted": len(reached), "mean": float(reached.mean()) if len(reached) else None,
           "sem": float(reached.std(ddof=1) / np.sqrt(len(reached))) if len(reached) > 1 else None,
           "below_400K": int(np.sum(t < 400)), "below_500K": int(np.sum(t < 500))}
    if q99 is not None and "errors" in row:
        e = [x for x in row["errors"] if x is not None]
        out["false_by_labels"] = int(sum(x <= q99 for x in e))
        out["labelled"] = len(e)
    return out


def table(result) -> str:
    lines = ["| model | factor (threshold) | rule | halted | steps before the halt, mean +- s.e. | halts below 400 K | "
             "below 500 K | false alarms by labels (error <= q99) |", "|---|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        q = result.get("q99", {}).get(row["model"])
        s = summary(row, q)
        fl = f"{s['false_by_labels']} of {s['labelled']}" if s.get("labelled") else "-"
        mean = "-" if s["mean"] is None else f"{s['mean']:.0f} +- {s['sem'] or 0:.0f}"
        lines.append(f"| {row['model']} | {row['factor']:g} ({row['threshold']:.3f}) | {row['rule']} | "
                     f"{s['halted']}/{len(row['halts'])} | {mean} | {s['below_400K']} | {s['below_500K']} | {fl} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
