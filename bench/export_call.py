"""Time per call: the exported model (TorchScript and .pt2) through the C++ evaluator vs eager Python.

    OMP_NUM_THREADS=1 .venv/bin/python bench/export_call.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/export_call.py --systems ethanol --model peer   # nequip's size

Systems: ethanol (9 atoms), aspirin (21 atoms, from ../shared/data when present) and a random
200-atom periodic H/C/O box; k = 1 and 8 (one model per k, for every system); model of bench/model_forward.py (3 layers, l_max 2,
16 features, cutoff 5 A; ``--model peer``: bench/peer_nequip.py's 3 layers, l_max 1, 32 features,
cutoff 5 A, radial MLP 2 x 64), float64. Four ways of running the same samples: eager
`DeployedModel` in Python, the exported TorchScript file through `bnnmd._core.Evaluator` (C++),
the same exported with `--freeze`, and the AOTInductor package (`bnn-export ... model.pt2`) through
the same evaluator. Median of 100 calls (3 for the box) after a tenth as many warm-up calls (at
least 3); the .pt2 compile time is recorded too. Writes bench/results/export_call.json (``--out`` to change).

``--nequip`` (k = 1 only) adds the peer code at the same architecture: nequip's AOTInductor
package (``nequip-compile --mode aotinductor --device cpu --target pair_nequip``) timed on the same frames.
nequip is never a project dependency: bench/peer_nequip.py's machinery creates its throw-away
environment (bench/.venv-nequip, CPU torch pinned) and trains nequip for NEQUIP_TRAIN_S seconds on
a few rMD17 ethanol frames (its ``--smoke`` split, the full ``--model peer`` architecture), only to
get a checkpoint to compile; the weights do not matter for the call time. The call is timed inside
that environment (``python bench/export_call.py nequip-time ...``, internal): nequip's loader for
compiled models (``load_compiled_model``) inside its ASE calculator, ``calc.call_model(data)`` on the
data dict of ``calc.atoms_to_data`` (the neighbour list is built before the timed part, as bnnmd's
is; a second column includes it). Then, in this process, nequip's package runs again through
``torch._inductor.aoti_load_package`` (the same torch version; its raw runner on the input tensors
nequip's calculator built, without nequip's Python wrapper) taking turns with bnnmd's ``.pt2``
evaluator, 5 rounds of 100 calls each (columns "taking turns"): the two numbers then share the
machine's state, which separate processes do not. The ``pair_nequip`` target (LAMMPS') returns
per-atom energies, forces and the virial (nequip's integrations always ask for the strain derivative); bnnmd's call
returns the same plus sigma_E and sigma_F (its two extra heads) and the aggregation of the C++
evaluator. (The ``ase`` target, which adds the stress, fails nequip-compile's own
check on cell-less ethanol frames: the stress is NaN there.)
If the environment cannot be set up, the nequip columns are written as skipped with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _machine import machine_info  # bench/_machine.py (bench/ is sys.path[0])

REPO = Path(__file__).resolve().parents[1]
ASPIRIN = REPO.parent / "shared" / "data" / "rmd17" / "rmd17_aspirin_train_01.npz"


def systems():
    from bnnmd.data import AtomicDataset, bundled_dataset, read_dataset
    from bnnmd.nn.testing import random_periodic_atoms

    out = {"ethanol": bundled_dataset("rmd17_ethanol_train").subset(range(20))}
    if ASPIRIN.exists():
        out["aspirin"] = read_dataset(ASPIRIN).subset(range(20))
    box = random_periodic_atoms(200, (200 / 0.1) ** (1 / 3), min_distance=1.0, seed=0)
    out["box200"] = AtomicDataset(box.numbers, box.positions, [200], energy=[0.0], forces=np.zeros((200, 3)),
                                  cell=box.cell.array, pbc=[[True] * 3])
    return out


#: nequip-compile's target: ``pair_nequip`` (LAMMPS: per-atom energies, forces, virial). Its ``ase``
#: target adds the stress, which is NaN on the cell-less ethanol frames nequip-compile checks the
#: package against, so that compile fails its own eager-vs-compiled check.
NEQUIP_TARGET = "pair_nequip"
NEQUIP_TRAIN_S = 30.0  # nequip-train's max_time: enough for a best.ckpt; the weights are not what is timed


def nequip_aoti(chosen, workdir: Path, repeats) -> dict:
    """nequip's .pt2 of the ``--model peer`` architecture, timed on ``chosen`` (k = 1).

    Returns ``{"status": "ok"|"skipped"|"failed", ...}`` with ``systems``: name -> ms and checks.
    """
    import subprocess
    from argparse import Namespace

    sys.path.insert(0, str(REPO / "bench"))
    import peer_nequip as PN  # its venv, config and training machinery (never a project dependency)

    workdir.mkdir(parents=True, exist_ok=True)
    venv = PN.NEQUIP_VENV
    env = PN.ensure_nequip(venv, None, False, workdir / "nequip_install.log")
    if not env["ok"]:
        return {"status": "skipped", "reason": env["reason"]}
    info = {"versions": env["versions"], "venv": str(venv), "train_budget_s": NEQUIP_TRAIN_S,
            "architecture_nequip_keys": {PN.NEQUIP_KEYS[k]: v for k, v in PN.ARCH.items()}}
    try:
        split, _ = PN.make_split(Namespace(seed=0, smoke=True), workdir)
        job = PN.start_nequip(venv, workdir, split, dict(PN.ARCH), NEQUIP_TRAIN_S, "float64", 0, None)
        trained = PN.finish_nequip(job, venv, split.datasets()[2])
    except (Exception, SystemExit) as exc:
        return {"status": "failed", "reason": f"nequip training: {type(exc).__name__}: {exc}", **info}
    if trained.get("status") != "ok":
        return {"status": "failed", "reason": "nequip training: " + str(trained.get("reason")), **info}
    info.update(num_parameters=trained.get("num_parameters"), train_steps=trained.get("steps"))
    ckpt = Path(trained["run_dir"]) / "best.ckpt"
    pt2 = workdir / "nequip_peer.nequip.pt2"
    cenv = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"}
    cmd = [str(venv / "bin" / "nequip-compile"), str(ckpt), str(pt2), "--mode", "aotinductor", "--device", "cpu",
           "--target", NEQUIP_TARGET]
    PN.log("nequip: " + " ".join(cmd))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=cenv, cwd=workdir)
    info.update(compile_s=time.perf_counter() - t0, compile_command=" ".join(cmd))
    (workdir / "nequip_compile.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0 or not pt2.exists():
        return {"status": "failed", "reason": f"nequip-compile exited {r.returncode}:\n" +
                "\n".join((r.stdout + r.stderr).splitlines()[-15:]), **info}
    frames = {}
    for name, ds in chosen.items():
        f = ds.frame(0)
        frames[name] = workdir / f"frame_{name}.npz"
        np.savez(frames[name], numbers=f["atomic_numbers"], positions=f["positions"],
                 cell=np.zeros((3, 3)) if f["cell"] is None else np.asarray(f["cell"]).reshape(3, 3),
                 pbc=np.zeros(3, bool) if f["pbc"] is None else np.asarray(f["pbc"]).reshape(3))
    out = workdir / "nequip_time.json"
    cmd = [str(venv / "bin" / "python"), str(Path(__file__).resolve()), "nequip-time", "--pt2", str(pt2),
           "--out", str(out)] + [f"{n}={frames[n]}:{repeats(n)}" for n in frames]
    PN.log("nequip: timing the .pt2 calls")
    r = subprocess.run(cmd, capture_output=True, text=True, env=cenv)
    if r.returncode != 0:
        return {"status": "failed", "reason": "nequip-time failed:\n" +
                "\n".join((r.stdout + r.stderr).splitlines()[-15:]), **info}
    return {"status": "ok", "pt2": str(pt2), **info, **json.loads(out.read_text())}


def interleaved_ms(calls: dict, repeats: int, rounds: int = 5) -> dict:
    """Median over ``rounds`` of each call's median of ``repeats`` calls, the calls taking turns round by
    round (one process: the machine's drift hits all of them alike)."""
    per = {k: [] for k in calls}
    for _ in range(rounds):
        for k, fn in calls.items():
            per[k].append(median_ms(fn, repeats))
    return {k: statistics.median(v) for k, v in per.items()}


def nequip_time_main(argv) -> int:
    """Internal: runs in nequip's environment. Times nequip's AOTI package as its ASE calculator calls it."""
    p = argparse.ArgumentParser(prog="export_call.py nequip-time")
    p.add_argument("--pt2", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("systems", nargs="+", help="NAME=FRAME.npz:REPEATS")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    import ase
    import nequip
    from nequip.data import AtomicDataDict
    from nequip.integrations.ase import NequIPCalculator
    from nequip.integrations.utils import basic_transforms, handle_chemical_species_map
    from nequip.model.inference_models import load_compiled_model
    from nequip.nn import graph_model
    from nequip.scripts._compile_utils import COMPILE_TARGET_DICT

    # nequip's loader for compiled models with the keys of the target (what LAMMPS' pair_nequip loads),
    # in nequip's ASE calculator for its data transforms (type mapping, neighbour list)
    target = COMPILE_TARGET_DICT[NEQUIP_TARGET]
    model, md = load_compiled_model(a.pt2, "cpu", list(target["input"]), list(target["output"]))
    names = md[graph_model.TYPE_NAMES_KEY]
    calc = NequIPCalculator(model=model, device="cpu", transforms=basic_transforms(
        md, md[graph_model.R_MAX_KEY], names, handle_chemical_species_map(None, names)))
    res = {"torch_threads": torch.get_num_threads(), "nequip_env_torch": torch.__version__,
           "nequip_version": nequip.__version__, "compiled_for": md.get("AOTI_DEVICE_KEY"),
           "input_keys": list(target["input"]), "output_keys": list(target["output"]), "systems": {}}
    for spec in a.systems:
        name, rest = spec.split("=", 1)
        path, reps = rest.rsplit(":", 1)
        z = np.load(path)
        atoms = ase.Atoms(numbers=z["numbers"], positions=z["positions"], cell=z["cell"], pbc=z["pbc"])
        data = calc.atoms_to_data(atoms)  # type mapping and neighbour list: not timed
        # the package's own inputs, for the interleaved timing in bnnmd's process (same torch)
        torch.save([data[k] for k in target["input"]], Path(a.out).parent / f"inputs_{name}.pt")
        out = calc.call_model(data)
        forces = out[AtomicDataDict.FORCE_KEY]
        energy = out[AtomicDataDict.PER_ATOM_ENERGY_KEY].sum()
        res["systems"][name] = {
            "atoms": len(atoms), "edges": int(data[AtomicDataDict.EDGE_INDEX_KEY].shape[1]),
            "forces_finite": bool(torch.isfinite(forces).all()) and bool(torch.isfinite(energy)),
            "device": str(forces.device), "outputs": sorted(out.keys()), "energy": float(energy),
            "nequip_aoti_ms": median_ms(lambda: calc.call_model(data), int(reps)),
            # the same call with nequip's data transforms (neighbour list included) in the timed part
            "nequip_aoti_with_nl_ms": median_ms(lambda: calc.call_model(calc.atoms_to_data(atoms)), int(reps))}
    Path(a.out).write_text(json.dumps(res, indent=1))
    return 0


def median_ms(fn, repeats):
    for _ in range(max(3, repeats // 10)):  # TorchScript's profiling executor optimises after the first calls
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t0))
    return statistics.median(times)


MODELS = {"bench": dict(num_layers=3, l_max=2, num_features=16, cutoff=5.0),
          "peer": dict(num_layers=3, l_max=1, num_features=32, cutoff=5.0, num_basis=8, radial_hidden=64,
                       radial_layers=2)}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "nequip-time":
        return nequip_time_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=None, help="comma-separated subset of ethanol,aspirin,box200")
    p.add_argument("--k", default="1,8", help="comma-separated sample counts (default 1,8)")
    p.add_argument("--model", choices=sorted(MODELS), default="bench")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "export_call.json"))
    p.add_argument("--nequip", action="store_true",
                   help="k = 1 rows: add nequip's AOTInductor package of the same architecture (--model peer; "
                        "bench/peer_nequip.py's throw-away environment)")
    p.add_argument("--nequip-workdir", default="/tmp/bnnmd_export_call_nequip",
                   help="nequip's training run, package and logs (default /tmp/bnnmd_export_call_nequip)")
    a = p.parse_args(argv)
    if a.nequip and a.model != "peer":
        p.error("--nequip needs --model peer (the architecture bench/peer_nequip.py gives nequip)")
    torch.set_num_threads(1)
    from bnnmd import _core
    from bnnmd.data import TypeMapper, neighbour_list
    from bnnmd.deploy import DeployedModel, export
    from bnnmd.nn import ModelConfig, build_model
    from bnnmd.posterior import sample_path, save_sample

    rows = []
    nq = None
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chosen = systems()
        if a.systems:
            chosen = {n: chosen[n] for n in a.systems.split(",") if n in chosen}
        if a.nequip:  # first: its failure shows in minutes, not after the bnnmd .pt2 compile
            try:
                nq = nequip_aoti(chosen, Path(a.nequip_workdir), lambda n: 3 if n == "box200" else 100)
            except Exception as exc:  # reported, the bnnmd rows still run
                nq = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"}
            print(json.dumps({k: v for k, v in nq.items() if k != "systems"}), flush=True)
            print(json.dumps(nq.get("systems")), flush=True)
        # nequip's package run by the same torch in this process, taking turns with bnnmd's: the raw
        # AOTInductor runner on its own inputs, without nequip's Python wrapper
        nq_runner = None
        if nq is not None and nq["status"] == "ok" and nq["versions"]["torch"] == torch.__version__:
            nq_runner = torch._inductor.aoti_load_package(nq["pt2"])
        # one model (and one .pt2 compile, minutes) per k, from ethanol's statistics, for every system
        for k in (int(x) for x in a.k.split(",")):
            cfg = ModelConfig(type_names=["H", "C", "O"], num_samples=k, **MODELS[a.model])
            model = build_model(cfg, systems()["ethanol"], seed=0).eval()
            d = tmp / f"k{k}"
            for s in range(k):
                save_sample(sample_path(d / "samples", s), model, s, "sghmc")
            plain = _core.Evaluator(str(export(d / "samples", d / "model.pth")))
            frozen = _core.Evaluator(str(export(d / "samples", d / "frozen.pth", freeze=True)))
            t0 = time.perf_counter()
            pt2 = _core.Evaluator(str(export(d / "samples", d / "model.pt2")))
            compile_s = time.perf_counter() - t0
            eager = DeployedModel(model)
            for name, ds in chosen.items():
                f = ds.frame(0)
                g = neighbour_list(f["positions"], cfg.cutoff, f["cell"], f["pbc"])
                types = TypeMapper(["H", "C", "O"]).types_of(f["atomic_numbers"])
                n = len(types)
                args = (torch.tensor(f["positions"]), torch.tensor(types), torch.tensor(g.edge_index),
                        torch.tensor(g.shift_vector))
                cpp_args = (f["positions"], types, g.edge_index, g.shift_vector, n)
                ref = eager(*args, n)["forces"].detach().numpy()
                got = plain.compute(*cpp_args)["samples"]["forces"]
                assert np.abs(got - ref).max() < 1e-9, "the exported module differs from the eager model"
                got = pt2.compute(*cpp_args)["samples"]["forces"]
                assert np.abs(got - ref).max() < 1e-9, "the .pt2 package differs from the eager model"
                repeats = 3 if name == "box200" else 100
                row = {"system": name, "model": a.model, "atoms": n, "edges": g.num_edges, "k": k,
                       "pt2_compile_s": compile_s,
                       "eager_python_ms": median_ms(lambda: eager(*args, n), repeats),
                       "cpp_ms": median_ms(lambda: plain.compute(*cpp_args), repeats),
                       "cpp_frozen_ms": median_ms(lambda: frozen.compute(*cpp_args), repeats),
                       "cpp_pt2_ms": median_ms(lambda: pt2.compute(*cpp_args), repeats)}
                if nq_runner is not None and k == 1:
                    nq_args = torch.load(Path(nq["pt2"]).parent / f"inputs_{name}.pt")
                    both = interleaved_ms({"bnnmd": lambda: pt2.compute(*cpp_args),
                                           "nequip": lambda: nq_runner(*nq_args)}, repeats)
                    row.update(pt2_interleaved_ms=both["bnnmd"], nequip_runner_interleaved_ms=both["nequip"])
                if nq is not None and k == 1:
                    got = (nq.get("systems") or {}).get(name)
                    row["nequip_status"] = nq["status"] if got or nq["status"] != "ok" else "failed"
                    if got:
                        row.update(nequip_aoti_ms=got["nequip_aoti_ms"],
                                   nequip_aoti_with_nl_ms=got["nequip_aoti_with_nl_ms"],
                                   nequip_edges=got["edges"], nequip_forces_finite=got["forces_finite"],
                                   nequip_device=got["device"], nequip_compile_s=nq.get("compile_s"))
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"machine": machine_info("platform", "cpus=cpu_count", "torch", "OMP_NUM_THREADS"),
           "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    if nq is not None:
        out["command"] = " ".join(["python", *sys.argv])
        out["nequip"] = {**nq, "note": f"nequip's .pt2 (nequip-compile --target {NEQUIP_TARGET}) loaded with "
                                       "nequip's load_compiled_model, called as NequIPCalculator.call_model on the "
                                       "data dict of atoms_to_data (neighbour list built before the timed part; "
                                       "nequip_aoti_with_nl_ms includes it); it returns per-atom energies, forces "
                                       "and virial, bnnmd's .pt2 energy and forces. Weights from a short "
                                       "nequip-train run (NEQUIP_TRAIN_S)."}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    nqcol = nq is not None
    print("| system | atoms | k | eager Python (ms) | TorchScript (ms) | TorchScript, frozen (ms) | .pt2 (ms) | "
          "TorchScript / .pt2 | .pt2 k / .pt2 k=1 | .pt2 compile (s) |" +
          (" nequip .pt2 (ms) | nequip / bnnmd .pt2 | nequip compile (s) | taking turns: bnnmd .pt2 (ms) | "
           "nequip runner (ms) | nequip / bnnmd |" if nqcol else ""))
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|---:|---:|---:|---:|---:|" if nqcol else ""))
    k1 = {r["system"]: r["cpp_pt2_ms"] for r in rows if r["k"] == 1}
    for r in rows:
        per_k = f"{r['cpp_pt2_ms'] / k1[r['system']]:.2f}" if r["system"] in k1 else "-"
        print(f"| {r['system']} | {r['atoms']} | {r['k']} | {r['eager_python_ms']:.1f} | {r['cpp_ms']:.2f} | "
              f"{r['cpp_frozen_ms']:.2f} | {r['cpp_pt2_ms']:.2f} | {r['cpp_ms'] / r['cpp_pt2_ms']:.1f} | {per_k} | "
              f"{r['pt2_compile_s']:.0f} |" + (_nequip_cells(r) if nqcol else ""))
    if nq is not None and nq["status"] != "ok":
        print(f"\nnequip {nq['status']}: {nq.get('reason')}")
    elif nq is not None:
        print(f"\nnequip {nq['versions']['nequip']} (torch {nq['versions']['torch']} in {nq['venv']}); "
              f"nequip .pt2 = nequip-compile --target {NEQUIP_TARGET}, called as NequIPCalculator.call_model "
              f"(per-atom energies, forces, virial), neighbour list prebuilt; bnnmd .pt2: energy and forces")
    return 0


def _nequip_cells(r) -> str:
    if "nequip_aoti_ms" not in r:
        return f" {r.get('nequip_status', '-')} | - | - | - | - | - |"
    if "pt2_interleaved_ms" in r:
        turns = (f" {r['pt2_interleaved_ms']:.2f} | {r['nequip_runner_interleaved_ms']:.2f} | "
                 f"{r['nequip_runner_interleaved_ms'] / r['pt2_interleaved_ms']:.2f} |")
    else:
        turns = " - | - | - |"
    return (f" {r['nequip_aoti_ms']:.2f} | {r['nequip_aoti_ms'] / r['cpp_pt2_ms']:.2f} | "
            f"{r['nequip_compile_s']:.0f} |" + turns)


if __name__ == "__main__":
    sys.exit(main())
