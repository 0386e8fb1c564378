"""Liquid water with stresses: train on the bundled GFN2-xTB set -> evaluate (300 K test and
out-of-distribution frames) -> export .pt2 -> LAMMPS NPT at 300 K / 1 atm with per-atom uncertainty ->
density and the O-O radial distribution function against the reference frames.

    OMP_NUM_THREADS=1 .venv/bin/python examples/water/water.py --out water_out
    OMP_NUM_THREADS=1 .venv/bin/python examples/water/water.py --out water_out --skip-training  # reuse the run

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
GPA_PER_EV_A3 = 160.21766208  # ase.units.GPa = 1 / 160.21766208 eV/A^3


def step(title: str) -> None:
    print(f"\n=== {title} ===", flush=True)


def run(cmd, cwd=None) -> None:
    print("$ " + " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=cwd, check=True)


def thermo_rows(log: str, columns):
    """The thermo lines of a LAMMPS log whose header is ``columns``: float array [rows, len(columns)]."""
    rows, on = [], False
    for line in log.splitlines():
        words = line.split()
        if words == list(columns):
            on = True
            continue
        if on:
            try:
                rows.append([float(w) for w in words])
            except ValueError:
                on = False
            if rows and len(rows[-1]) != len(columns):
                rows.pop()
                on = False
    return np.array(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="water_out", help="output directory")
    parser.add_argument("--config", default=str(HERE / "train.yaml"), help="training config")
    parser.add_argument("--skip-training", action="store_true", help="reuse OUT/run (trained before)")
    parser.add_argument("--nsteps", type=int, default=20000, help="NPT steps of 0.5 fs (default 20000 = 10 ps)")
    parser.add_argument("--seed", type=int, default=4928, help="velocity seed")
    parser.add_argument("--auc-threshold", default="0.25 eV/A",
                        help="force error that counts as an outlier for the ROC-AUC (default 0.25 eV/A)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    samples = out / "run" / "samples"

    if not args.skip_training:
        step("1/5 train: SGHMC (4 chains) on energies, forces and stresses of 270 water frames")
        if (out / "run").exists():
            shutil.rmtree(out / "run")
        run([BIN / "bnn-train", args.config, "--out", out / "run"])

    step("2/5 evaluate: 300 K test frames, and out-of-distribution frames (hot, compressed)")
    run([BIN / "bnn-eval", samples, "--data", "split:val", "--calibrate-on", "split:val",
         "--json", out / "eval_val.json", "--auc-threshold", args.auc_threshold])
    for name in ("test", "ood"):
        run([BIN / "bnn-eval", samples, "--data", f"bundled:water_gfn2_{name}", "--json", out / f"eval_{name}.json",
             "--auc-threshold", args.auc_threshold] + (["--plots", out / "eval_plots"] if name == "test" else []))

    step("3/5 export the 8 posterior samples as ONE AOTInductor package, with the halt threshold")
    model = out / "model.pt2"
    run([BIN / "bnn-export", samples, model])

    step(f"4/5 LAMMPS: NPT at 300 K and 1 atm for {args.nsteps} steps ({args.nsteps * 0.0005:g} ps)")
    from ase.io.lammpsdata import write_lammps_data

    from bnnmd.analysis import radial_distribution, read_trajectory
    from bnnmd.data import bundled_dataset

    test = bundled_dataset("water_gfn2_test")
    md = out / "md"
    if md.exists():
        shutil.rmtree(md)
    md.mkdir()
    write_lammps_data(md / "water.data", test.to_ase(0), specorder=["H", "O"], units="metal", masses=True)
    shutil.copy(HERE / "in.npt", md / "in.npt")
    run([BIN / "lmp", "-in", "in.npt", "-var", "model", model, "-var", "nsteps", str(args.nsteps),
         "-var", "seed", str(args.seed)], cwd=md)
    log = (md / "log.lammps").read_text()
    columns = ["Step", "Temp", "Press", "PotEng", "Volume", "v_density", "c_unc[4]", "c_unc[5]", "c_unc[6]"]
    thermo = thermo_rows(log, columns)
    halted = [line for line in log.splitlines() if "Fix halt condition" in line]
    second = thermo[len(thermo) // 2:]
    density, dstd = second[:, 5].mean(), second[:, 5].std()
    quarter = max(len(second) // 2, 1)
    drift = second[-quarter:, 5].mean() - second[:quarter, 5].mean()  # last quarter - third quarter
    settled = abs(drift) < 0.02
    labels_density = float(np.mean(1.66053906660 * np.array(
        [a.get_masses().sum() / a.get_volume() for a in (test.to_ase(i) for i in range(len(test)))])))

    step("5/5 structure: the O-O radial distribution function of the NPT run against the 300 K reference frames")
    traj = read_trajectory(md / "traj.dump", data=md / "water.data", elements=["H", "O"])
    start = traj.n_frames // 2
    ref_path = out / "reference_300K.extxyz"
    import ase.io

    frames = [test.to_ase(i) for i in range(len(test))]
    for a in frames:
        a.arrays["forces_std"] = np.zeros(len(a))  # read_trajectory reads uncertainty columns; none here
    ase.io.write(ref_path, frames, format="extxyz")
    ref = read_trajectory(ref_path)
    r_max = 4.5
    r, g_md = radial_distribution(traj, "O", "O", r_max=r_max, bins=90, start=start)
    _, g_ref = radial_distribution(ref, "O", "O", r_max=r_max, bins=90)
    peak_md, peak_ref = r[np.argmax(g_md)], r[np.argmax(g_ref)]
    np.savetxt(out / "rdf_oo.txt", np.column_stack([r, g_md, g_ref]), header="r_A g_OO_npt g_OO_reference")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(r, g_ref, label=f"reference frames ({len(test)}, 300 K)", color="k")
    ax.plot(r, g_md, label=f"bnnmd NPT, last {traj.n_frames - start} frames", color="C1")
    ax.set_xlabel("r (A)")
    ax.set_ylabel("g_OO(r)")
    ax.legend(frameon=False)
    fig.tight_layout()
    fig.savefig(out / "rdf_oo.png", dpi=120)

    ev = {name: json.loads((out / f"eval_{name}.json").read_text()) for name in ("test", "ood")}
    result = {
        "test": {k: ev["test"].get(k) for k in ("forces.mae", "forces.mll", "forces.auc", "energy.mae", "stress.mae",
                                                "stress.mll", "forces.mean_std")},
        "ood": {k: ev["ood"].get(k) for k in ("forces.mae", "forces.mll", "forces.auc", "energy.mae", "stress.mae",
                                              "forces.mean_std")},
        "npt": {"steps": int(thermo[-1, 0]), "halted": bool(halted), "density_g_cm3": float(density),
                "density_drift_last_quarter": float(drift), "density_settled": bool(settled),
                "density_std": float(dstd), "reference_density_g_cm3": labels_density,
                "pressure_std_bar_mean": float(second[:, 8].mean()),
                "max_force_std_mean": float(second[:, 6].mean()), "halt_threshold": float(thermo[0, 7])},
        "rdf_oo": {"first_peak_npt_A": float(peak_md), "first_peak_reference_A": float(peak_ref),
                   "g_max_npt": float(g_md.max()), "g_max_reference": float(g_ref.max())},
        "seconds": time.perf_counter() - t0,
    }
    (out / "result.json").write_text(json.dumps(result, indent=1) + "\n")

    print(f"\n=== done in {result['seconds']:.0f} s ===")
    t, o = ev["test"], ev["ood"]
    print(f"test (300 K): forces MAE {t['forces.mae']:.4f} eV/A, MLL {t['forces.mll']:.3f}, ROC-AUC "
          f"{t['forces.auc'] if t['forces.auc'] is None else round(t['forces.auc'], 3)}; energy MAE "
          f"{t['energy.mae']:.4f} eV; stress MAE {t['stress.mae'] * GPA_PER_EV_A3:.3f} GPa; mean force std "
          f"{t['forces.mean_std']:.4f} eV/A")
    print(f"out of distribution (hot, compressed): forces MAE {o['forces.mae']:.4f} eV/A, mean force std "
          f"{o['forces.mean_std']:.4f} eV/A ({o['forces.mean_std'] / t['forces.mean_std']:.2f} x the test frames')")
    print(f"NPT: {result['npt']['steps']} steps" + (f", halted: {halted[0]}" if halted else "")
          + f"; density over the second half {density:.3f} +- {dstd:.3f} g/cm^3 (reference frames: "
          f"{labels_density:.3f}); mean pressure std (model) {result['npt']['pressure_std_bar_mean']:.0f} bar")
    if not settled:
        print(f"  the density has NOT settled: it moved by {drift:+.3f} g/cm^3 between the third and last quarter of "
              "the run; do not read it as the model's density (docs/results.md: this model's box expands)")
    print(f"g_OO first peak at {peak_md:.2f} A (height {g_md.max():.2f}) vs {peak_ref:.2f} A "
          f"({g_ref.max():.2f}) in the reference frames; plot {out / 'rdf_oo.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
