"""Does the uncertainty halt fire before the trajectory goes bad? Ground truth from DFT (pyscf).

    OMP_NUM_THREADS=1 .venv/bin/python bench/halt_truth.py [--molecules ethanol,malonaldehyde]
        [--run ethanol=RUN_DIR] [--compare-run ethanol=RUN_DIR] [--nsteps 4000] [--stride 100]
        [--processes 2]

Per molecule (rMD17; ethanol from the bundled data, the others from ../shared/data/rmd17):

1. train with the demo's recipe (examples/demo/train.yaml with the molecule's files), or reuse
   ``--run MOLECULE=RUN_DIR``; calibrate on the validation frames (bnn-eval --calibrate-on) and
   export (the halt statistics go into the model);
2. LAMMPS heats the molecule with the demo's ramp (thermostat target 300 K -> 8000 K over 20000
   steps, i.e. 1840 K at step 4000) for ``--nsteps`` steps of 0.5 fs, with no halt, dumping
   positions and per-atom stds every 20 steps;
3. pyscf PBE/def2-SVP (rMD17's level) labels every ``--stride``-th step, then every dump frame
   between the last labelled frame under the tolerance and the first above it;
4. the true largest per-atom force error (|dF|/sqrt 3) per labelled frame against the predicted
   stds; tolerance = 3 x the model's force RMSE on the rMD17 test file;
5. for each halt rule (bnnmd.posterior.HALT_RULES, plus the old demo rule "2 x the largest std on the test
   frames"): the step where it fires on the dumped stds (checked every 20 steps, as fix halt
   does), and the steps of garbage before it (halt step - first step above the tolerance);
6. per labelled frame, ROC-AUC of detecting "error above the tolerance" from the largest total,
   epistemic and aleatoric std, and Spearman's rho between largest std and largest error; the
   same on the same trajectory for the posterior's first sample alone (k = 1) and, with
   ``--compare-run MOLECULE=RUN_DIR``, for another run's samples;
7. the geometry report (bnnmd.analysis.geometry_report) of the trajectory.

Writes bench/results/halt_truth.json, bench/results/halt_truth_<molecule>.png and prints a
Markdown table for docs/results.md. Labels are cached in the work directory: a rerun (or a
killed run) does not recompute them. About 40-60 minutes on 2 cores with training.

Liquid water (``--molecules water``, issue 26): the same report for a periodic box of 32 H2O, the
model of ``--run water=RUN_DIR`` (else examples/water/train.yaml is trained, 900 s), labels from
GFN2-xTB (tblite, the bundled set's level) in the run's cell, and two trajectories from the bundled
300 K test frame 0: ``heat`` (the thermostat target rising ``--water-ramp`` K/ps from 300 K at fixed
volume) and ``compress`` (300 K, the box shrunk linearly to ``--compress`` of its volume with
fix deform). Tolerance: 3 x the model's force RMSE on water_gfn2_test, and the 99th percentile of
the test frames' largest per-atom error (q99: a 96-atom frame's largest error passes 3 x RMSE in 14 %
of the 300 K test frames); a halt before the first labelled frame above q99 is a *false alarm*.
``--pt2``: LAMMPS runs the model compiled (.pt2), the truth is computed with the .pth (the same
stacked model). Writes bench/results/halt_truth_water.json and halt_truth_water.png. Measured:
    OMP_NUM_THREADS=1 .venv/bin/python bench/halt_truth.py --molecules water --run water=RUN --pt2
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

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "rmd17"
BIN = Path(sys.executable).parent
RULES = ("envelope:1.0", "envelope:1.25", "envelope:1.5", "median:1.15", "median:1.25", "median:1.5", "rmse:1.5",
         "rmse:2", "rmse:3")
#: md.halt_pressure's rules on the water runs: the pressure std against the validation frames'
PRESSURE_RULES = ("envelope:1.0", "median:1.25", "median:1.5", "median:2")
DUMP_EVERY = 20
# the demo's heating ramp: the thermostat's target goes from 300 K to 8000 K over 20000 steps of 0.5 fs
T0, RAMP = 300.0, (8000.0 - 300.0) / (20000 * 0.5e-3)  # K/ps


def log(msg: str) -> None:
    print(f"[halt_truth {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(cmd, cwd=None) -> None:
    log("$ " + " ".join(str(c) for c in cmd))
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def data_files(molecule: str):
    if molecule == "ethanol":
        return "bundled:rmd17_ethanol_train", "bundled:rmd17_ethanol_test"
    train, test = SHARED / f"rmd17_{molecule}_train_01.npz", SHARED / f"rmd17_{molecule}_test_01.npz"
    if not train.exists():
        sys.exit(f"halt_truth: {train} not found; the molecules other than ethanol need ../shared/data/rmd17")
    return str(train), str(test)


def train(molecule: str, work: Path, given: dict) -> Path:
    from bnnmd.posterior import sample_path

    if molecule in given:
        return Path(given[molecule]).resolve()
    run_dir = work / "run"
    if sample_path(run_dir / "samples", 7).exists():
        log(f"{molecule}: reusing {run_dir}")
        return run_dir
    import yaml

    cfg = yaml.safe_load((REPO / "examples" / "demo" / "train.yaml").read_text())
    cfg["data"]["train"], cfg["data"]["test"] = data_files(molecule)
    (work / "train.yaml").write_text(yaml.safe_dump(cfg))
    run([BIN / "bnn-train", work / "train.yaml", "--out", run_dir] + (["--resume"] if run_dir.exists() else []))
    return run_dir


def variant(samples: Path, work: Path, name: str, files) -> Path:
    """A samples directory holding only ``files`` (copies), calibrated on its own."""
    from bnnmd.posterior import sample_path

    d = work / name / "samples"
    if not d.exists():
        d.mkdir(parents=True)
        for i, f in enumerate(files):
            shutil.copy(f, sample_path(d, i))
        shutil.copy(samples.parent / "split.json", d.parent / "split.json")
        shutil.copy(samples.parent / "config.yaml", d.parent / "config.yaml")
    return d


def calibrate_and_export(samples: Path, model: Path, test: str):
    from bnnmd.uq import calibrate, evaluate

    cal = calibrate(samples, "split:val")
    ev = evaluate(samples, test)
    from bnnmd.deploy import export

    export(samples, model)
    return cal, ev.metrics


def heat(model: Path, molecule_frame, md: Path, nsteps: int) -> Path:
    """bnn-learn's built-in heating run (bnnmd.learn.run_md: the demo's ramp, velocity seed 12345),
    without the halt; reused when it finished before."""
    from bnnmd.learn import MDSection, run_md

    dump = md / "traj.dump"
    if dump.exists() and (md / "done").exists():
        return dump
    log(f"LAMMPS: {nsteps} steps of heating in {md}")
    run_md(model, molecule_frame, md, MDSection(temperature=T0, ramp=RAMP, nsteps=nsteps, dump_every=DUMP_EVERY),
           halt=False)
    (md / "done").write_text("")
    return dump


def temperatures(log_path: Path) -> dict:
    """Step -> instantaneous temperature (K) from the thermo rows of a LAMMPS log."""
    temps, on = {}, False
    for line in log_path.read_text().splitlines():
        words = line.split()
        if words[:2] == ["Step", "Temp"]:
            on = True
            continue
        if on:
            try:
                temps[int(words[0])] = float(words[1])
            except (ValueError, IndexError):
                on = False
    return temps


def std_along(traj, model: Path):
    """Largest per-atom total and epistemic std of ``model`` on every frame of ``traj`` (kcal/mol/A)."""
    from bnnmd import units
    from bnnmd.analysis import molecule_atoms
    from bnnmd.calculator import BNNCalculator

    calc = BNNCalculator(str(model))
    k = units.energy_factor("eV", "kcal/mol")
    tot, epi = [], []
    for f in range(traj.n_frames):
        a = molecule_atoms(traj, f)
        a.calc = calc
        a.get_forces()
        tot.append(float(calc.results["forces_std"].max() * k))
        epi.append(float(calc.results["forces_std_epistemic"].max() * k))
    return np.array(tot), np.array(epi)


def first_above(steps, values, threshold):
    """The first step (> 0, as fix halt checks during the run) where ``values`` exceed ``threshold``."""
    for s, v in zip(steps, values):
        if s > 0 and v > threshold:
            return int(s)
    return None


def detection(labels, scores):
    from bnnmd.uq import roc_auc

    labels = np.asarray(labels, dtype=bool)
    auc = float(roc_auc(np.asarray(scores), labels)) if 0 < labels.sum() < len(labels) else None
    return auc


def spearman(a, b):
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def test_frames(model: Path, test: str):
    """On the test frames: the largest per-atom std (the old demo rule used 2x that of the 200
    bundled frames) and each frame's largest true per-atom error (the truth's in-distribution spread)."""
    from bnnmd.analysis import frame_errors
    from bnnmd.uq import resolve_data

    ds, _ = resolve_data(test)
    fe = frame_errors(model, ds)
    return float(fe["max_std"][:200].max()), fe["max_error"]


def label_check(labeller, test: str, n: int, processes: int):
    """pyscf against the rMD17 labels on n test frames: force MAE and the energy offset."""
    from bnnmd.label import LabelError, label_frames
    from bnnmd.uq import resolve_data

    ds, _ = resolve_data(test)
    idx = list(range(0, len(ds), max(len(ds) // n, 1)))[:n]
    labels = label_frames(labeller, [ds.to_ase(i) for i in idx], processes)
    dF, dE = [], []
    for i, lab in zip(idx, labels):
        if isinstance(lab, LabelError):
            continue
        dF.append(np.abs(lab.forces - ds.forces[ds.offsets[i]:ds.offsets[i + 1]]).ravel())
        dE.append(lab.energy - float(ds.energy[i]))
    return {"frames": len(dE), "force_mae": float(np.mean(np.concatenate(dF))),
            "force_max": float(np.max(np.concatenate(dF))), "energy_offset_mean": float(np.mean(dE)),
            "energy_offset_std": float(np.std(dE))}


def molecule_bench(molecule: str, args, out_root: Path) -> dict:
    from bnnmd.analysis import dft_truth, geometry_report, read_trajectory
    from bnnmd.deploy import read_metadata
    from bnnmd.label import PySCFLabeller
    from bnnmd.posterior import DEFAULT_HALT_RULE, halt_threshold, sample_files
    from bnnmd.uq import resolve_data

    work = out_root / molecule
    work.mkdir(parents=True, exist_ok=True)
    given = dict(x.split("=", 1) for x in args.run)
    _, test = data_files(molecule)
    run_dir = train(molecule, work, given)
    samples_all = sample_files(run_dir / "samples")
    samples = variant(run_dir / "samples", work, "k8", samples_all)
    model = work / "k8" / "model.pth"
    cal, metrics = calibrate_and_export(samples, model, test)
    tolerance = 3.0 * metrics["forces.rmse"]
    log(f"{molecule}: test force MAE {metrics['forces.mae']:.3f} RMSE {metrics['forces.rmse']:.3f}; tolerance "
        f"{tolerance:.3f} kcal/mol/A")

    ds, _ = resolve_data(test)
    dump = heat(model, ds.to_ase(0), work / "md", args.nsteps)
    elements = sorted(set(ds.to_ase(0).get_chemical_symbols()))
    traj = read_trajectory(dump, data=work / "md" / "system.data", elements=elements)
    dumped_max = traj.values("total").max(axis=1)

    labeller = PySCFLabeller(cache=out_root / "labels", max_cycle=60)
    stride = max(args.stride // DUMP_EVERY, 1)
    frames = list(range(0, traj.n_frames, stride))
    truth = dft_truth(traj, model, labeller, frames, processes=args.processes)
    first = truth.first_error_above(tolerance)
    if first is not None:  # every dump frame between the last one under and the first one above
        i = truth.steps.index(first)
        lo = truth.frames[i - 1] if i > 0 else 0
        truth = dft_truth(traj, model, labeller, sorted(set(truth.frames) | set(range(lo, truth.frames[i] + 1))),
                          processes=args.processes)
        first = truth.first_error_above(tolerance)
    log(f"{molecule}: {len(truth.steps)} labelled frames ({len(truth.failed)} failed); first error above the "
        f"tolerance at step {first}")

    test_max, test_errors = test_frames(model, test)
    q99 = float(np.percentile(test_errors, 99))
    first_q99 = truth.first_error_above(q99)
    temps = temperatures(work / "md" / "log.lammps")
    thresholds = {rule: halt_threshold(cal.halt, rule)[0] for rule in RULES}
    thresholds["test-max x2 (old demo)"] = 2.0 * test_max
    rules = {}
    for rule, thr in thresholds.items():
        halt = first_above(traj.steps, dumped_max, thr)
        rules[rule] = {"threshold": thr, "halt_step": halt, "temperature": temps.get(halt),
                       "garbage_steps": (None if first is None or halt is None else max(0, halt - first)),
                       "garbage_steps_q99": (None if first_q99 is None or halt is None else max(0, halt - first_q99)),
                       "margin_steps": (None if first is None or halt is None else first - halt)}
    geo = geometry_report(traj)
    unphys = geo.first_unphysical

    labels = np.array(truth.max_error) > tolerance
    posterior = {"k8": {"auc_total": detection(labels, truth.max_std),
                        "auc_epistemic": detection(labels, truth.max_std_epistemic),
                        "auc_aleatoric": detection(labels, truth.max_std_aleatoric),
                        "spearman_total": spearman(truth.max_std, truth.max_error),
                        "spearman_epistemic": spearman(truth.max_std_epistemic, truth.max_error)}}
    compare = {"k1 (first sample)": [samples_all[0]]}
    for other in (dict(x.split("=", 1) for x in args.compare_run).get(molecule),):
        if other:
            compare[Path(other).name] = sample_files(Path(other) / "samples")
    for name, files in compare.items():
        d = variant(run_dir / "samples", work, name.split()[0], files)
        m = d.parent / "model.pth"
        vcal, vmetrics = calibrate_and_export(d, m, test)
        tot, epi = std_along(traj, m)
        lab_idx = np.array(truth.frames)
        thr = halt_threshold(vcal.halt, DEFAULT_HALT_RULE)[0]
        halt = first_above(traj.steps, tot, thr)
        posterior[name] = {
            "k": len(files), "test_force_mae": vmetrics["forces.mae"],
            "auc_total": detection(labels, tot[lab_idx]),
            "auc_epistemic": detection(labels, epi[lab_idx]) if len(files) > 1 else None,
            "spearman_total": spearman(tot[lab_idx], truth.max_error),
            "halt_step_default_rule": halt,
        }
    result = {
        "molecule": molecule, "run": str(run_dir), "test_force_mae": metrics["forces.mae"],
        "test_force_rmse": metrics["forces.rmse"], "test_force_mll": metrics["forces.mll"],
        "tolerance": tolerance, "nsteps": args.nsteps, "first_error_step": first,
        "first_error_temperature": temps.get(first),
        "test_frame_max_error_quantiles": {q: float(np.percentile(test_errors, q)) for q in (50, 90, 99)},
        "test_frames_above_tolerance": float(np.mean(test_errors > tolerance)),
        "tolerance_q99": q99, "first_error_step_q99": first_q99,
        "first_unphysical": None if unphys is None else {"step": unphys["step"],
                                                          "description": unphys["description"]},
        "first_bond_change": None if geo.first_bond_change is None else geo.first_bond_change["step"],
        "rules": rules, "posterior": posterior, "truth": truth.to_dict(),
        "exported_rule": read_metadata(model)["halt_rule"],
        "dft_vs_rmd17": label_check(labeller, test, 6, args.processes),
    }
    plot(result, traj.steps, dumped_max, out_root.parent / f"halt_truth_{molecule}.png")
    return result


def plot(result, steps, dumped_max, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = result["truth"]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    ax.plot(np.asarray(steps) * 0.5e-3, dumped_max, lw=0.8, color="tab:blue", label="largest predicted std (LAMMPS)")
    ax.plot(np.asarray(t["steps"]) * 0.5e-3, t["max_error"], "o-", ms=3, color="tab:red",
            label="largest true force error (PBE/def2-SVP)")
    from bnnmd.posterior import DEFAULT_HALT_RULE

    ax.axhline(result["tolerance"], color="tab:red", ls=":", lw=0.8, label="tolerance 3 x test RMSE")
    ax.axhline(result["tolerance_q99"], color="tab:red", ls="--", lw=0.8,
               label="tolerance q99 (largest error on 99 % of test frames)")
    for rule, colour in ((DEFAULT_HALT_RULE, "tab:green"), ("test-max x2 (old demo)", "tab:grey")):
        r = result["rules"][rule]
        ax.axhline(r["threshold"], color=colour, ls="--", lw=0.8, label=f"threshold {rule}")
        if r["halt_step"] is not None:
            ax.axvline(r["halt_step"] * 0.5e-3, color=colour, lw=0.8)
    if result["first_unphysical"]:
        ax.axvline(result["first_unphysical"]["step"] * 0.5e-3, color="k", ls="-.", lw=0.8,
                   label="first unphysical geometry")
    ax.set_yscale("log")
    ax.set_xlabel("time (ps); thermostat target 300 K + 770 K/ps")
    ax.set_ylabel("kcal/mol/A")
    ax.set_title(f"rMD17 {result['molecule']}: uncertainty vs DFT truth")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def table(results) -> str:
    lines = ["| molecule | rule | threshold | halt step (T / K) | garbage steps (3 x RMSE) | garbage steps (q99) |",
             "|---|---|---|---|---|---|"]
    for r in results:
        for rule, v in r["rules"].items():
            t = "" if v["temperature"] is None else f" ({v['temperature']:.0f})"
            lines.append(f"| {r['molecule']} | {rule} | {v['threshold']:.2f} | {v['halt_step']}{t} | "
                         f"{v['garbage_steps']} | {v['garbage_steps_q99']} |")
    lines += ["", "| molecule | tolerance 3 x RMSE | first step above (T / K) | test frames above | q99 of test frames "
              "| first step above q99 | first unphysical |", "|---|---|---|---|---|---|---|"]
    for r in results:
        t = "" if r["first_error_temperature"] is None else f" ({r['first_error_temperature']:.0f})"
        lines.append(f"| {r['molecule']} | {r['tolerance']:.2f} | {r['first_error_step']}{t} | "
                     f"{100 * r['test_frames_above_tolerance']:.1f} % | {r['tolerance_q99']:.2f} | "
                     f"{r['first_error_step_q99']} | {(r['first_unphysical'] or {}).get('step')} |")
    from bnnmd.posterior import DEFAULT_HALT_RULE

    lines += ["", f"| molecule | samples | AUC total | AUC epistemic | Spearman total | halt step ({DEFAULT_HALT_RULE}) |",
              "|---|---|---|---|---|---|"]
    for r in results:
        for name, p in r["posterior"].items():
            auc = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
            halt = r["rules"][DEFAULT_HALT_RULE]["halt_step"] if name == "k8" else p.get("halt_step_default_rule")
            lines.append(f"| {r['molecule']} | {name} | {auc(p['auc_total'])} | {auc(p.get('auc_epistemic'))} | "
                         f"{p['spearman_total']:.3f} | {halt} |")
    return "\n".join(lines)


WATER_COMPRESS = """# halt_truth: water compressed at 300 K
units real
atom_style atomic
atom_modify map yes
boundary p p p
read_data ${data}
pair_style bnn
pair_coeff * * ${model} H O
compute unc all bnn/atom
thermo_style custom step temp pe press vol c_unc[4] c_unc[5]
thermo 20
dump traj all custom 20 traj.dump id type x y z c_unc[1] c_unc[2] c_unc[3]
velocity all create 300.0 ${seed} mom yes rot no
fix nvt all nvt temp 300.0 300.0 50.0
fix squeeze all deform 1 x scale @SCALE y scale @SCALE z scale @SCALE remap x
timestep 0.5
run @NSTEPS
"""


def water_run(work: Path, given: dict) -> Path:
    """The water model: ``--run water=DIR``, else examples/water/train.yaml trained here (900 s)."""
    from bnnmd.posterior import sample_path

    if "water" in given:
        return Path(given["water"]).resolve()
    run_dir = work / "run"
    if not sample_path(run_dir / "samples", 7).exists():
        run([BIN / "bnn-train", REPO / "examples" / "water" / "train.yaml", "--out", run_dir]
            + (["--resume"] if run_dir.exists() else []))
    return run_dir


def water_bench(args, out_root: Path) -> dict:
    """The halt against GFN2-xTB truth on the periodic water box: a heating and a compression."""
    from bnnmd.analysis import dft_truth, frame_errors, read_trajectory
    from bnnmd.deploy import read_metadata
    from bnnmd.label import TBLiteLabeller
    from bnnmd.learn import MDSection, run_md
    from bnnmd.learn._loop import lammps_force_factor
    from bnnmd.posterior import DEFAULT_HALT_RULE, halt_threshold, sample_files
    from bnnmd.uq import resolve_data

    test = "bundled:water_gfn2_test"
    work = out_root / "water"
    work.mkdir(parents=True, exist_ok=True)
    run_dir = water_run(work, dict(x.split("=", 1) for x in args.run))
    samples = variant(run_dir / "samples", work, "k8", sample_files(run_dir / "samples"))
    model = work / "k8" / "model.pth"
    cal, metrics = calibrate_and_export(samples, model, test)
    tolerance = 3.0 * metrics["forces.rmse"]
    ds, _ = resolve_data(test)
    test_errors = frame_errors(model, ds)["max_error"]
    q99 = float(np.percentile(test_errors, 99))
    to_model = 1.0 / lammps_force_factor(model)  # the dump (real: kcal/mol/A) -> the model's eV/A
    thresholds = {rule: halt_threshold(cal.halt, rule)[0] for rule in RULES}
    log(f"water: test force MAE {metrics['forces.mae']:.4f} RMSE {metrics['forces.rmse']:.4f} eV/A; tolerance "
        f"{tolerance:.4f}, q99 of the test frames' largest error {q99:.4f}; threshold "
        f"({DEFAULT_HALT_RULE}) {thresholds[DEFAULT_HALT_RULE]:.4f}")
    md_model = model
    if args.pt2:  # the same stacked model compiled ahead of time: LAMMPS runs it ~4x faster on CPU
        from bnnmd.deploy import export

        md_model = model.with_suffix(".pt2")
        if not md_model.exists():
            log("water: compiling the .pt2 for LAMMPS")
            export(samples, md_model)
    labeller = TBLiteLabeller("GFN2-xTB", cache=out_root / "labels_gfn2")
    start = ds.to_ase(0)
    runs = {}
    for name in ("heat", "compress"):
        md = work / f"md_{name}"
        if not (md / "done").exists():
            if name == "heat":
                c = MDSection(temperature=T0, ramp=args.water_ramp, nsteps=args.nsteps, dump_every=DUMP_EVERY)
            else:
                tpl = work / "compress.lmp"
                tpl.write_text(WATER_COMPRESS.replace("@SCALE", f"{args.compress ** (1 / 3):.6f}")
                               .replace("@NSTEPS", str(args.nsteps)))
                c = MDSection(template=str(tpl), nsteps=args.nsteps, dump_every=DUMP_EVERY)
            log(f"water: LAMMPS {name}, {args.nsteps} steps in {md}")
            run_md(md_model, start, md, c, halt=False)
            (md / "done").write_text("")
        traj = read_trajectory(md / "traj.dump", data=md / "system.data", elements=["H", "O"])
        dumped_max = traj.values("total").max(axis=1) * to_model
        stride = max(args.stride // DUMP_EVERY, 1)
        frames = list(range(0, traj.n_frames, stride))
        truth = dft_truth(traj, model, labeller, frames, processes=args.processes, periodic=True)
        first = truth.first_error_above(tolerance)
        if first is not None:  # every dump frame between the last one under and the first one above
            i = truth.steps.index(first)
            lo = truth.frames[i - 1] if i > 0 else 0
            truth = dft_truth(traj, model, labeller, sorted(set(truth.frames) | set(range(lo, truth.frames[i] + 1))),
                              processes=args.processes, periodic=True)
            first = truth.first_error_above(tolerance)
        first_q99 = truth.first_error_above(q99)
        temps = temperatures(md / "log.lammps")
        volume = {int(s): float(np.abs(np.linalg.det(np.asarray(_cell(traj, f))))) for f, s in enumerate(traj.steps)}
        def row(thr, halt):
            return {"threshold": thr, "halt_step": halt, "temperature": temps.get(halt),
                    "volume_ratio": None if halt is None else volume[halt] / volume[0],
                    "garbage_steps": (None if first is None or halt is None else max(0, halt - first)),
                    "garbage_steps_q99": None if first_q99 is None or halt is None else max(0, halt - first_q99),
                    "margin_steps": (None if first is None or halt is None else first - halt),
                    # a halt before any labelled frame's error left the test frames' range (q99)
                    "false_alarm": (halt is not None and (first_q99 is None or halt < first_q99))}

        rules = {rule: row(thr, first_above(traj.steps, dumped_max, thr)) for rule, thr in thresholds.items()}
        # md.halt_pressure: the pressure std of every dumped frame (Python twin of c_unc[6], eV/A^3), the
        # halt of each rule alone and together with the exported force rule (the larger ratio halts)
        pstd = pressure_along(traj, model)
        force_halt = rules[DEFAULT_HALT_RULE]["halt_step"]
        for rule in PRESSURE_RULES:
            thr = halt_threshold(cal.halt, rule, part="pressure")[0]
            alone = first_above(traj.steps, pstd, thr)
            rules[f"pressure {rule}"] = row(thr, alone)
            rules[f"{DEFAULT_HALT_RULE} or pressure {rule}"] = row(
                thr, min((h for h in (alone, force_halt) if h is not None), default=None))
        at = {int(s): i for i, s in enumerate(traj.steps)}
        labelled_p = [pstd[at[int(s)]] for s in truth.steps]
        labels = np.array(truth.max_error) > tolerance
        runs[name] = {
            "pressure_std": pstd.tolist(), "auc_q99_pressure": detection(np.array(truth.max_error) > q99, labelled_p),
            "spearman_pressure": spearman(labelled_p, truth.max_error),
            "first_error_step": first, "first_error_temperature": temps.get(first),
            "first_error_volume_ratio": None if first is None else volume[first] / volume[0],
            "first_error_step_q99": first_q99, "rules": rules,
            "auc_total": detection(labels, truth.max_std), "auc_epistemic": detection(labels, truth.max_std_epistemic),
            "auc_q99_total": detection(np.array(truth.max_error) > q99, truth.max_std),
            "spearman_total": spearman(truth.max_std, truth.max_error),
            "spearman_epistemic": spearman(truth.max_std_epistemic, truth.max_error),
            "labelled_frames": len(truth.steps), "failed_labels": len(truth.failed),
            "truth": truth.to_dict(), "steps": [int(s) for s in traj.steps], "dumped_max_std": dumped_max.tolist(),
        }
        log(f"water {name}: {len(truth.steps)} labelled frames; first error above the tolerance at step {first}; "
            f"halt ({DEFAULT_HALT_RULE}) at {rules[DEFAULT_HALT_RULE]['halt_step']}")
    result = {"molecule": "water", "run": str(run_dir), "test_force_mae": metrics["forces.mae"],
              "test_force_rmse": metrics["forces.rmse"], "test_force_mll": metrics["forces.mll"],
              "unit": "eV/A", "tolerance": tolerance, "tolerance_q99": q99, "nsteps": args.nsteps,
              "water_ramp": args.water_ramp, "compress": args.compress, "md_model": md_model.name,
              "test_frames_above_tolerance": float(np.mean(test_errors > tolerance)),
              "exported_rule": read_metadata(model)["halt_rule"], "runs": runs}
    water_plot(result, out_root.parent / "halt_truth_water.png")
    return result


def pressure_along(traj, model: Path) -> np.ndarray:
    """The std of the pressure (BNNCalculator's ``pressure_std``, eV/A^3; LAMMPS' c_unc[6] in atm is this
    times 1.58e6) of ``model`` on every frame of a periodic ``traj``."""
    from bnnmd.analysis import frame_atoms
    from bnnmd.calculator import BNNCalculator

    calc = BNNCalculator(str(model))
    out = []
    for f in range(traj.n_frames):
        a = frame_atoms(traj, f, True)
        a.calc = calc
        a.get_forces()
        out.append(float(calc.results["pressure_std"]))
    return np.array(out)


def _cell(traj, frame: int):
    from MDAnalysis.lib.mdamath import triclinic_vectors

    return triclinic_vectors(traj.box(frame))


def water_plot(result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from bnnmd.posterior import DEFAULT_HALT_RULE

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (name, r) in zip(axes, result["runs"].items()):
        t = r["truth"]
        ax.plot(np.asarray(r["steps"]) * 0.5e-3, r["dumped_max_std"], lw=0.8, color="tab:blue",
                label="largest predicted std (LAMMPS)")
        ax.plot(np.asarray(t["steps"]) * 0.5e-3, t["max_error"], "o-", ms=3, color="tab:red",
                label="largest true force error (GFN2-xTB)")
        ax.axhline(result["tolerance"], color="tab:red", ls=":", lw=0.8, label="tolerance 3 x test RMSE")
        rule = r["rules"][DEFAULT_HALT_RULE]
        ax.axhline(rule["threshold"], color="tab:green", ls="--", lw=0.8, label=f"threshold {DEFAULT_HALT_RULE}")
        if rule["halt_step"] is not None:
            ax.axvline(rule["halt_step"] * 0.5e-3, color="tab:green", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("time (ps)")
        ax.set_ylabel("eV/A")
        ax.set_title(f"water, {name}" + (f" (+{result['water_ramp']:.0f} K/ps)" if name == "heat" else
                                         f" (to {result['compress']:.2f} of the volume)"))
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def water_table(result) -> str:
    lines = [f"| run | rule | threshold (eV/A; pressure: eV/A^3) | halt step (T / K, V/V0) | garbage steps (3 x RMSE) | "
             "false alarm |",
             "|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        for rule, v in r["rules"].items():
            extra = "" if v["halt_step"] is None else f" ({v['temperature']:.0f}, {v['volume_ratio']:.3f})"
            lines.append(f"| {name} | {rule} | {v['threshold']:.4g} | {v['halt_step']}{extra} | {v['garbage_steps']} | "
                         f"{'yes' if v['false_alarm'] else 'no'} |")
    lines += ["", "| run | first step above 3 x RMSE (T / K, V/V0) | first step above q99 | labelled frames | AUC total | "
              "AUC epistemic | Spearman total | AUC (q99) total | AUC (q99) pressure std | Spearman pressure std |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in result["runs"].items():
        extra = "" if r["first_error_step"] is None else (f" ({r['first_error_temperature']:.0f}, "
                                                          f"{r['first_error_volume_ratio']:.3f})")
        auc = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
        lines.append(f"| {name} | {r['first_error_step']}{extra} | {r['first_error_step_q99']} | {r['labelled_frames']} | "
                     f"{auc(r['auc_total'])} | {auc(r['auc_epistemic'])} | {r['spearman_total']:.3f} | "
                     f"{auc(r['auc_q99_total'])} | {auc(r.get('auc_q99_pressure'))} | "
                     f"{auc(r.get('spearman_pressure'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--molecules", default="ethanol,malonaldehyde")
    parser.add_argument("--run", action="append", default=[], metavar="MOLECULE=RUN_DIR",
                        help="reuse a trained run (its samples) instead of training")
    parser.add_argument("--compare-run", action="append", default=[], metavar="MOLECULE=RUN_DIR",
                        help="another run whose samples are compared on the same trajectory")
    parser.add_argument("--nsteps", type=int, default=4000)
    parser.add_argument("--stride", type=int, default=100, help="label every STRIDE-th step (multiple of 20)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--work", default=str(REPO / "bench" / "results" / "halt_truth_work"))
    parser.add_argument("--water-ramp", type=float, default=250.0,
                        help="water: K/ps of the heating's thermostat target (from 300 K)")
    parser.add_argument("--pt2", action="store_true", help="water: LAMMPS runs the model as .pt2 (compiled)")
    parser.add_argument("--compress", type=float, default=0.7, help="water: the compression's final volume ratio")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    out_root = Path(args.work)
    if args.molecules == "water":
        result = water_bench(args, out_root)
        doc = {"result": result, "seconds": time.perf_counter() - t0, "command": " ".join(sys.argv)}
        path = REPO / "bench" / "results" / "halt_truth_water.json"
        path.write_text(json.dumps(doc, indent=1) + "\n")
        print(water_table(result))
        log(f"wrote {path} in {doc['seconds']:.0f} s")
        return 0
    results = []
    for molecule in args.molecules.split(","):
        results.append(molecule_bench(molecule, args, out_root))
    doc = {"results": results, "seconds": time.perf_counter() - t0, "command": " ".join(sys.argv)}
    path = REPO / "bench" / "results" / "halt_truth.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    print(table(results))
    log(f"wrote {path} in {doc['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
