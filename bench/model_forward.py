"""Benchmark: one stacked k-sample model call against a Python loop over k single-sample models.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/model_forward.py

Times forward + forces (one ``StochasticNequIP`` call in eval mode; the call
computes the forces by autograd) for one frame of ethanol (9 atoms, bundled
rMD17), one frame of aspirin (21 atoms, ``/work/shared/data/rmd17``) and a
random 200-atom periodic H/C/O box (density 0.1 atoms/A^3, atoms >= 1 A apart),
for k = 1, 2, 4, 8 samples, in float32 and float64:

* "stacked": ``StochasticNequIP.stack(models[:k])``, all k samples in one call;
* "loop": the same k samples taken out with ``select([i])`` (built once, outside
  the timing) and called one after the other, outputs concatenated along k.

Model: ``ModelConfig(num_layers=3, l_max=2, num_features=16, cutoff=5.0)`` and the
other defaults (8 Bessel functions, radial MLP 8 -> 32 -> 32 -> weights, parity
on, SiLU); ``avg_num_neighbours``, shift and scales from the system's frames.
Each model is called once untimed (warm-up); then stacked and loop calls
alternate ``--repeats`` times (fewer for the box) and the median is reported.
The script fails unless stacked and loop outputs agree (float64: forces to
1e-8 absolute; float32: 1e-4 relative), so both sides do the same work.

Then it profiles the stacked call (torch.profiler) for the box and for
ethanol at k = 8, float64, and splits the time by model component, forward and
backward (backward ops are attributed to the component whose forward op
created them), by aten op and by backward node. Unless ``--no-allocator-check``,
it re-runs the float64 box in a child process with glibc's allocator told to
keep freed memory (``GLIBC_TUNABLES=glibc.malloc.mmap_max=0:...``), to separate
the cost of page-faulting fresh memory from compute. Default repeats: 15 for the
molecules, 2 for the box, 4 for the allocator check (4-8 minutes in all on a
2-core AMD EPYC VM, depending on its load).

Writes ``bench/results/model_forward.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from bnnmd.data import AtomicDataset, GraphDataset, TypeMapper, bundled_dataset, read_dataset
from bnnmd.data import keys as K
from bnnmd.nn import ModelConfig, StochasticNequIP, build_model
from bnnmd.nn.testing import random_periodic_atoms

from _machine import git_commit, git_modified, machine_info  # bench/_machine.py (bench/ is sys.path[0])

TYPES = ["H", "C", "O"]
CONFIG = dict(num_layers=3, l_max=2, num_features=16, cutoff=5.0)
KS = (1, 2, 4, 8)
ASPIRIN = Path("/work/shared/data/rmd17/rmd17_aspirin_train_01.npz")
BOX_ATOMS, BOX_DENSITY = 200, 0.1
STAT_FRAMES = 100  # frames used for avg_num_neighbours, shift and scale (molecules)
OUT = Path(__file__).resolve().parent / "results" / "model_forward.json"
DTYPES = {"float32": torch.float32, "float64": torch.float64}
GLIBC_KEEP_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"
OUTPUT_KEYS = (K.TOTAL_ENERGY, K.ATOMIC_ENERGY, K.FORCES, K.TOTAL_ENERGY_STD, K.FORCES_STD, K.VIRIAL)


# ---- systems -------------------------------------------------------------------
def periodic_box(n: int, seed: int) -> AtomicDataset:
    """``n`` random H/C/O atoms, > 1 A apart (minimum image), in a cubic cell at BOX_DENSITY
    (``bnnmd.nn.testing.random_periodic_atoms``)."""
    length = (n / BOX_DENSITY) ** (1.0 / 3.0)
    atoms = random_periodic_atoms(n, length, min_distance=1.0, seed=seed)
    # energies/forces only set the model's shift and scale (random, non-zero scale)
    forces = np.random.default_rng(seed).normal(size=(n, 3)) * 10.0
    return AtomicDataset(atoms.numbers, atoms.positions, [n], energy=[-100.0 * n], forces=forces,
                         cell=[length * np.eye(3)], pbc=[[True] * 3])


def load_systems(names, seed):
    systems = []
    for name in names:
        if name == "ethanol":
            ds = bundled_dataset("rmd17_ethanol_train").subset(range(STAT_FRAMES))
        elif name == "aspirin":
            ds = read_dataset(ASPIRIN).subset(range(STAT_FRAMES))
        elif name == "box":
            ds = periodic_box(BOX_ATOMS, seed)
        else:
            raise SystemExit(f"unknown system {name!r} (ethanol, aspirin, box)")
        systems.append((name, ds))
    return systems


# ---- timing --------------------------------------------------------------------
def call_stacked(model, batch):
    return model(batch)


def call_loop(models, batch):
    outs = [m(batch) for m in models]
    return {key: torch.cat([o[key] for o in outs], dim=0) for key in OUTPUT_KEYS}


def compare(stacked, loop, dtype):
    """Max abs differences per output; raise if the two ways disagree."""
    stacked = {key: v.detach() for key, v in stacked.items()}
    loop = {key: v.detach() for key, v in loop.items()}
    diffs = {key: float((stacked[key] - loop[key]).abs().max()) for key in OUTPUT_KEYS}
    scale = float(loop[K.FORCES].abs().max())
    if dtype == torch.float64:
        ok = diffs[K.FORCES] <= 1e-8
        e_ok = diffs[K.TOTAL_ENERGY] <= 1e-9 * max(1.0, float(loop[K.TOTAL_ENERGY].abs().max()))
    else:
        ok = diffs[K.FORCES] <= 1e-4 * max(1.0, scale)
        e_ok = diffs[K.TOTAL_ENERGY] <= 1e-5 * max(1.0, float(loop[K.TOTAL_ENERGY].abs().max()))
    if not (ok and e_ok):
        raise SystemExit(f"stacked and loop outputs disagree: {diffs} (max |F| = {scale})")
    return diffs, scale


def time_pair(stacked, singles, batch, repeats):
    """Warm up both, then alternate stacked/loop calls; returns times and the last outputs."""
    out_s = call_stacked(stacked, batch)  # warm-up
    out_l = call_loop(singles, batch)
    ts, tl = [], []
    for r in range(repeats):
        order = ("s", "l") if r % 2 == 0 else ("l", "s")
        for which in order:
            t0 = time.perf_counter()
            if which == "s":
                out_s = call_stacked(stacked, batch)
            else:
                out_l = call_loop(singles, batch)
            (ts if which == "s" else tl).append(time.perf_counter() - t0)
    return ts, tl, out_s, out_l


def bench(systems, dtypes, ks, repeats_mol, repeats_box, seed, log):
    rows = []
    for name, ds in systems:
        graphs = GraphDataset(ds, TypeMapper(TYPES), CONFIG["cutoff"])
        base = [build_model(ModelConfig(type_names=TYPES, num_samples=1, **CONFIG), ds, dtype=torch.float64,
                            seed=seed + s) for s in range(max(ks))]
        repeats = repeats_box if name == "box" else repeats_mol
        for dname in dtypes:
            dtype = DTYPES[dname]
            batch = graphs.batch([0], dtype=dtype)
            full = StochasticNequIP.stack(base).to(dtype).eval()
            singles_all = [full.select([i]).eval() for i in range(max(ks))]
            for k in ks:
                stacked = StochasticNequIP.stack(base[:k]).to(dtype).eval()
                singles = singles_all[:k]
                ts, tl, out_s, out_l = time_pair(stacked, singles, batch, repeats)
                diffs, fscale = compare(out_s, out_l, dtype)
                row = {"system": name, "atoms": int(batch[K.POSITIONS].shape[0]),
                       "edges": int(batch[K.EDGE_INDEX].shape[1]), "dtype": dname, "k": k, "repeats": repeats,
                       "stacked_s": statistics.median(ts), "loop_s": statistics.median(tl),
                       "stacked_times_s": ts, "loop_times_s": tl,
                       "max_abs_diff": diffs, "max_abs_force": fscale}
                row["loop_over_stacked"] = row["loop_s"] / row["stacked_s"]
                rows.append(row)
                log(f"# {name} {dname} k={k}: stacked {1e3 * row['stacked_s']:.1f} ms, "
                    f"loop {1e3 * row['loop_s']:.1f} ms, loop/stacked {row['loop_over_stacked']:.2f}, "
                    f"max |dF| {diffs[K.FORCES]:.1e}")
    return rows


# ---- profile -------------------------------------------------------------------
GLUE = "model glue (edge vectors, repeat along k, embedding, energy sum, forces/virial)"


def component_labels(model):
    """Module -> component label, for the modules whose calls are wrapped in profiler ranges."""
    labels = {model.sh: "spherical harmonics on [k, E] edge vectors",
              model.basis: "radial basis + cutoff on [k, E]", model.envelope: "radial basis + cutoff on [k, E]",
              model.to_invariant: "StackedLinear (linear_1, linear_2, readout)",
              model.to_energy: "StackedLinear (linear_1, linear_2, readout)",
              model.sigma_energy_head: "sigma heads (StackedMLP)",
              model.sigma_forces_head: "sigma heads (StackedMLP)"}
    for block in model.blocks:
        labels[block.tp] = "tensor product (e3nn TensorProduct, uvu)"
        labels[block.radial] = "radial MLP (StackedMLP)"
        labels[block.self_connection] = "self-connection (SpeciesLinear)"
        labels[block.linear_1] = "StackedLinear (linear_1, linear_2, readout)"
        labels[block.linear_2] = "StackedLinear (linear_1, linear_2, readout)"
        labels[block.gate] = "gate (e3nn Gate)"
    return labels


def profile_call(model, batch):
    """Profile one call; split self CPU time by component x (forward, backward) and by aten op."""
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    labels = component_labels(model)
    open_ranges = []
    hooks = []
    for mod, label in labels.items():
        def pre(m, args, label=label):
            rf = record_function("##" + label)
            rf.__enter__()
            open_ranges.append(rf)

        def post(m, args, out):
            open_ranges.pop().__exit__(None, None, None)

        hooks.append(mod.register_forward_pre_hook(pre))
        hooks.append(mod.register_forward_hook(post))
    try:
        model(batch)  # warm-up with the hooks
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t0 = time.perf_counter()
            model(batch)
            wall = time.perf_counter() - t0
    finally:
        for h in hooks:
            h.remove()
    events = list(prof.events())

    def ancestors(e):
        while e is not None:
            yield e
            e = e.cpu_parent

    def label_of(e):
        for a in ancestors(e):
            if a.name.startswith("##"):
                return a.name[2:]
        return GLUE

    def backward_root(e):
        for a in ancestors(e):
            if a.name.startswith("autograd::engine::evaluate_function:"):
                return a
        return None

    fwd_label_of_seq = {}
    for e in events:
        if e.sequence_nr >= 0 and backward_root(e) is None and e.sequence_nr not in fwd_label_of_seq:
            fwd_label_of_seq[e.sequence_nr] = label_of(e)
    node_label = {}
    for e in events:
        root = backward_root(e)
        if root is not None and root is not e and root.id not in node_label and e.sequence_nr >= 0 \
                and e.cpu_parent is root:
            node_label[root.id] = fwd_label_of_seq.get(e.sequence_nr, GLUE)

    by_component = defaultdict(lambda: {"forward_ms": 0.0, "backward_ms": 0.0})
    by_op = defaultdict(float)
    by_node = defaultdict(float)  # backward node type -> inclusive time
    for e in events:
        if e.name.startswith("autograd::engine::evaluate_function:"):
            by_node[e.name.split("evaluate_function:", 1)[1].strip()] += e.cpu_time_total / 1e3
    python_in_ranges = 0.0
    total = 0.0
    n_fwd_ops = n_bwd_nodes = 0
    for e in events:
        t = e.self_cpu_time_total / 1e3  # ms
        if e.name.startswith("##"):
            python_in_ranges += t  # interpreter time inside a component, between its ops
            by_component[e.name[2:]]["forward_ms"] += t
            total += t
            continue
        total += t
        root = backward_root(e)
        if root is e:
            n_bwd_nodes += 1
        elif root is None and (e.cpu_parent is None or e.cpu_parent.name.startswith("##")):
            n_fwd_ops += 1
        if root is None:
            by_component[label_of(e)]["forward_ms"] += t
        else:
            by_component[node_label.get(root.id, GLUE)]["backward_ms"] += t
        by_op[e.name] += t
    wall_ms = 1e3 * wall
    comp = []
    for label, v in by_component.items():
        s = v["forward_ms"] + v["backward_ms"]
        comp.append({"component": label, "forward_ms": round(v["forward_ms"], 2),
                     "backward_ms": round(v["backward_ms"], 2), "total_ms": round(s, 2),
                     "share": round(s / total, 4)})
    comp.sort(key=lambda c: -c["total_ms"])
    ops = sorted(by_op.items(), key=lambda kv: -kv[1])[:12]
    fwd = sum(c["forward_ms"] for c in comp)
    bwd = sum(c["backward_ms"] for c in comp)
    return {
        "wall_ms_profiled": round(wall_ms, 2),
        "self_cpu_ms_total": round(total, 2),
        "forward_ms": round(fwd, 2), "backward_ms": round(bwd, 2),
        "backward_share": round(bwd / total, 4),
        "python_between_ops_in_components_ms": round(python_in_ranges, 2),
        "untracked_python_ms": round(max(wall_ms - total, 0.0), 2),
        "forward_top_level_ops": n_fwd_ops,
        "backward_nodes": n_bwd_nodes,
        "by_component": comp,
        "top_ops": [{"op": n, "self_ms": round(t, 2), "share": round(t / total, 4)} for n, t in ops],
        "top_backward_nodes": [{"node": n, "inclusive_ms": round(t, 2), "share": round(t / total, 4)}
                               for n, t in sorted(by_node.items(), key=lambda kv: -kv[1])[:8]],
    }


def run_profiles(systems, seed, log):
    result = {}
    for name, ds in systems:
        graphs = GraphDataset(ds, TypeMapper(TYPES), CONFIG["cutoff"])
        batch = graphs.batch([0], dtype=torch.float64)
        model = build_model(ModelConfig(type_names=TYPES, num_samples=8, **CONFIG), ds, dtype=torch.float64,
                            seed=seed).eval()
        p = profile_call(model, batch)
        p["system"], p["k"], p["dtype"] = name, 8, "float64"
        p["atoms"], p["edges"] = int(batch[K.POSITIONS].shape[0]), int(batch[K.EDGE_INDEX].shape[1])
        result[f"{name}_k8_float64"] = p
        log(f"# profiled {name} k=8: " + ", ".join(f"{c['component']} {100 * c['share']:.0f}%"
                                                    for c in p["by_component"][:5]))
    return result


# ---- machine, output -----------------------------------------------------------
def code_version():
    """Commit of the checkout and whether the model/data code differs from it (read-only git calls)."""
    return {"git_commit": git_commit(), "model_code_modified": git_modified("python/bnnmd/nn", "python/bnnmd/data")}


#: the ``machine`` record (bench/_machine.py's facts under this script's keys)
MACHINE = ("platform", "processor=cpu_model", "python", "cpu_count", "usable_cpus", "torch", "e3nn", "numpy",
           "torch_num_threads=torch_threads", "OMP_NUM_THREADS", "GLIBC_TUNABLES", "LD_PRELOAD", "date=date_utc")


def markdown_table(rows):
    lines = ["| system | atoms | dtype | k | stacked (ms) | loop (ms) | loop / stacked |",
             "|---|---:|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['system']} | {r['atoms']} | {r['dtype']} | {r['k']} | {1e3 * r['stacked_s']:.1f} | "
                     f"{1e3 * r['loop_s']:.1f} | {r['loop_over_stacked']:.2f} |")
    return "\n".join(lines)


def allocator_check(args, log):
    """Float64 box again in a child process whose glibc malloc keeps freed memory (no page faults)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "alloc.json"
        env = dict(os.environ, GLIBC_TUNABLES=GLIBC_KEEP_MEMORY)
        cmd = [sys.executable, __file__, "--systems", "box", "--dtypes", "float64", "--no-profile",
               "--no-allocator-check", "--repeats-box", str(args.repeats_alloc), "--seed", str(args.seed),
               "--ks", *map(str, args.ks), "--out", str(out)]
        log("# allocator check: " + " ".join(cmd[1:]) + f" with GLIBC_TUNABLES={GLIBC_KEEP_MEMORY}")
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        child = json.loads(out.read_text())
    return {"GLIBC_TUNABLES": GLIBC_KEEP_MEMORY,
            "why": "glibc serves allocations above 32 MB with fresh mmap pages and unmaps them on free, so "
                   "every large temporary is page-faulted again; this setting keeps freed memory in the heap",
            "results": child["results"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", nargs="+", default=["ethanol", "aspirin", "box"])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"], choices=list(DTYPES))
    parser.add_argument("--ks", nargs="+", type=int, default=list(KS))
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per method for the molecules")
    parser.add_argument("--repeats-box", type=int, default=2, help="timed calls per method for the box")
    parser.add_argument("--repeats-alloc", type=int, default=4, help="timed calls per method, allocator check")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--no-allocator-check", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: OMP_NUM_THREADS is not 1; torch may use several threads", file=sys.stderr)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    start = time.perf_counter()
    systems = load_systems(args.systems, args.seed)
    rows = bench(systems, args.dtypes, args.ks, args.repeats, args.repeats_box, args.seed, log)
    result = {"benchmark": "model_forward", "statistic": "median",
              "timed": "one model call (forward + forces by autograd), eval mode, batch of 1 frame",
              "config": dict(ModelConfig(type_names=TYPES, **CONFIG).to_dict(), num_samples="k"),
              "repeats": {"molecules": args.repeats, "box": args.repeats_box, "allocator_check": args.repeats_alloc},
              "machine": machine_info(*MACHINE), "code": code_version(), "results": rows}
    if not args.no_profile:
        prof_systems = [(n, ds) for n, ds in systems if n in ("box", "ethanol")]
        result["profile"] = run_profiles(prof_systems, args.seed, log)
    if not args.no_allocator_check and "box" in args.systems and "float64" in args.dtypes:
        result["allocator_check"] = allocator_check(args, log)
    result["bench_wall_s"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows))
    if "allocator_check" in result:
        print(f"\nfloat64 box with GLIBC_TUNABLES={GLIBC_KEEP_MEMORY}:\n")
        print(markdown_table(result["allocator_check"]["results"]))
    log(f"\nwritten to {args.out} ({result['bench_wall_s']} s)")


if __name__ == "__main__":
    main()
