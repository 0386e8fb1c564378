"""ASE molecular dynamics with the bnnmd calculator, stopping when the model stops being trusted.

    bnn-export runs/eth/samples model.pth
    OMP_NUM_THREADS=1 python examples/ase/md_with_uncertainty.py model.pth --threshold 0.5

Prints the largest per-atom force std (eV/A) every 10 steps and writes the trajectory, with the
per-atom uncertainty as arrays, to md.extxyz (readable by `bnn-analyze md.extxyz`).
"""

import argparse

import numpy as np
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import thermalize_momenta
from ase.units import fs

from bnnmd.calculator import BNNCalculator
from bnnmd.data import bundled_dataset

parser = argparse.ArgumentParser()
parser.add_argument("model", help="exported model (bnn-export)")
parser.add_argument("--threshold", type=float, default=0.5, help="largest per-atom force std, eV/A")
parser.add_argument("--temperature", type=float, default=1500.0, help="K")
parser.add_argument("--steps", type=int, default=2000)
parser.add_argument("--out", default="md.extxyz")
args = parser.parse_args()

atoms = bundled_dataset("rmd17_ethanol_test").to_ase(0)
atoms.calc = BNNCalculator(args.model)
thermalize_momenta(atoms, temperature_K=args.temperature, rng=np.random.default_rng(0))
dyn = Langevin(atoms, timestep=0.5 * fs, temperature_K=args.temperature, friction=0.01 / fs,
               rng=np.random.default_rng(1))
for step in range(0, args.steps + 1, 10):
    if step:
        dyn.run(10)
    r = atoms.calc.results
    frame = atoms.copy()
    frame.arrays["forces_std"] = r["forces_std"].copy()
    frame.arrays["forces_std_epistemic"] = r["forces_std_epistemic"].copy()
    frame.arrays["forces_std_aleatoric"] = r["forces_std_aleatoric"].copy()
    frame.info["step"] = step
    write(args.out, frame, append=step > 0)
    worst = int(np.argmax(r["forces_std"]))
    print(f"step {step:5d}  T {atoms.get_temperature():7.1f} K  max force std {r['forces_std'][worst]:.3f} eV/A "
          f"(atom {worst}, {atoms[worst].symbol})  energy std {r['energy_std']:.3f} eV")
    if r["forces_std"][worst] > args.threshold:
        print(f"stopping: atom {worst} passed the threshold {args.threshold} eV/A at step {step}")
        break
