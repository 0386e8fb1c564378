"""Benchmark: bnnmd.data.neighbour_list (vesin) against ASE and a NumPy brute force.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python bench/neighbour_list.py

Systems: random atoms at liquid-water-like density (0.1 atoms / A^3) in periodic
cubic boxes of 1000, 4000 and 16000 atoms, and a 1000-atom non-periodic
spherical cluster; cutoff 5 A. Every method is timed in the same run, each
``--repeats`` times after one untimed warm-up call, and the median is reported.
The NumPy brute force (explicit periodic images, O(N^2)) runs on the 1000-atom
systems only. The edge counts of all methods must agree, or the script fails.

Edge cases, ``neighbour_list`` alone (vesin's own bounding box dies by SIGFPE on the first):
4 atoms up to 1e8 A apart, and 4 atoms up to 3e5 A apart in a slab (4 A x 4 A periodic in
x and y, open in z), where vesin alone is slow. tests/test_graph.py checks their edges;
their time is measured here (it was a 2 s assertion in the test).

Writes ``bench/results/neighbour_list.json`` and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import vesin
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from bnnmd.data import neighbour_list

from _machine import machine_info  # bench/_machine.py (bench/ is sys.path[0])

DENSITY = 0.1  # atoms / A^3, about that of liquid water (3 atoms per 30 A^3)
CUTOFF = 5.0
OUT = Path(__file__).resolve().parent / "results" / "neighbour_list.json"
#: (name, positions, cell, pbc): the far-apart systems of tests/test_graph.py
EDGE_CASES = [
    ("far apart (1e8 A span)", np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [1e6, 0.0, 0.0], [1e6, 0.5, 1e8]]),
     None, False),
    ("slab, 3e5 A in z (pbc x y)", np.array([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 5e4], [2.0, 1.0, -3e5]]),
     np.diag([4.0, 4.0, 0.0]), [True, True, False]),
]


def periodic_box(n: int, rng: np.random.Generator):
    length = (n / DENSITY) ** (1.0 / 3.0)
    cell = length * np.eye(3)
    return rng.random((n, 3)) * length, cell, True


def cluster(n: int, rng: np.random.Generator):
    radius = (3.0 * n / (4.0 * math.pi * DENSITY)) ** (1.0 / 3.0)
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    return direction * radius * rng.random((n, 1)) ** (1.0 / 3.0), None, False


def run_bnnmd(pos, cell, pbc):
    return neighbour_list(pos, CUTOFF, cell, pbc).num_edges


def run_vesin_raw(pos, cell, pbc):
    """vesin alone, without bnnmd's checks, exact-cutoff filter and sort (for reference)."""
    box = np.zeros((3, 3)) if cell is None else cell
    i, _, _ = vesin.NeighborList(cutoff=CUTOFF, full_list=True).compute(pos, box, pbc, quantities="ijS")
    return len(i)


def run_ase(pos, cell, pbc):
    atoms = Atoms(numbers=np.ones(len(pos), dtype=int), positions=pos, cell=cell, pbc=pbc)
    i, _, _ = ase_neighbor_list("ijS", atoms, CUTOFF)
    return len(i)


def run_brute(pos, cell, pbc):
    """All pairs for each periodic image (images n in [-n_max, n_max], n_max = ceil(rc / L) + 1)."""
    if pbc:
        normals = np.cross(np.roll(cell, -1, axis=0), np.roll(cell, -2, axis=0))
        heights = abs(np.linalg.det(cell)) / np.linalg.norm(normals, axis=1)
        ranges = [range(-(math.ceil(CUTOFF / h) + 1), math.ceil(CUTOFF / h) + 2) for h in heights]
    else:
        ranges = [range(0, 1)] * 3
    box = np.zeros((3, 3)) if cell is None else cell
    edges = 0
    for s in itertools.product(*ranges):
        vec = pos[None, :, :] - pos[:, None, :] + np.asarray(s, dtype=float) @ box
        d2 = np.einsum("ijk,ijk->ij", vec, vec)
        edges += int(np.count_nonzero(d2 < CUTOFF * CUTOFF))
        if not any(s):
            edges -= len(pos)  # the self pairs
    return edges


def median_time(fn, args, repeats):
    result = fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - t0)
    return result, statistics.median(times), times


#: the ``machine`` record (bench/_machine.py's facts under this script's keys)
MACHINE = ("platform", "processor=cpu_model", "python", "cpu_count", "usable_cpus", "numpy", "vesin", "ase",
           "OMP_NUM_THREADS", "date=date_utc")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per method (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if os.environ.get("OMP_NUM_THREADS") != "1":
        print("note: OMP_NUM_THREADS is not 1; vesin may use several threads", file=sys.stderr)

    rng = np.random.default_rng(args.seed)
    systems = [
        ("periodic box", 1000, periodic_box(1000, rng)),
        ("periodic box", 4000, periodic_box(4000, rng)),
        ("periodic box", 16000, periodic_box(16000, rng)),
        ("cluster (no pbc)", 1000, cluster(1000, rng)),
    ]
    methods = [("bnnmd", run_bnnmd), ("vesin_raw", run_vesin_raw), ("ase", run_ase), ("brute", run_brute)]
    rows = []
    for name, n, (pos, cell, pbc) in systems:
        row = {"system": name, "atoms": n, "cutoff": CUTOFF, "density": DENSITY,
               "box_length": None if cell is None else float(cell[0, 0]), "median_s": {}, "times_s": {}}
        counts = {}
        for method, fn in methods:
            if method == "brute" and n > 1000:
                continue
            counts[method], med, times = median_time(fn, (pos, cell, pbc), args.repeats)
            row["median_s"][method] = med
            row["times_s"][method] = times
        if len(set(counts.values())) != 1:
            raise SystemExit(f"edge counts disagree for {name} N={n}: {counts}")
        row["edges"] = counts["bnnmd"]
        row["ase_over_bnnmd"] = row["median_s"]["ase"] / row["median_s"]["bnnmd"]
        rows.append(row)
        print(f"# done: {name} N={n} edges={row['edges']}", file=sys.stderr)
    edge_rows = []
    for name, pos, cell, pbc in EDGE_CASES:
        edges, med, times = median_time(run_bnnmd, (pos, cell, pbc), args.repeats)
        edge_rows.append({"system": name, "atoms": len(pos), "cutoff": CUTOFF, "edges": edges,
                          "median_s": {"bnnmd": med}, "times_s": {"bnnmd": times}})

    result = {"benchmark": "neighbour_list", "repeats": args.repeats, "statistic": "median",
              "machine": machine_info(*MACHINE), "results": rows, "edge_cases": edge_rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table(rows))
    print("\n| edge case | atoms | edges | `neighbour_list` (ms) |\n|---|---:|---:|---:|")
    for r in edge_rows:
        print(f"| {r['system']} | {r['atoms']} | {r['edges']} | {1e3 * r['median_s']['bnnmd']:.2f} |")
    print(f"\nwritten to {args.out}", file=sys.stderr)


def markdown_table(rows):
    def ms(row, method):
        t = row["median_s"].get(method)
        return "-" if t is None else f"{1e3 * t:.1f}"

    lines = [
        "| system | atoms | edges | `neighbour_list` (ms) | vesin alone (ms) | ASE (ms) "
        "| NumPy brute force (ms) | ASE / `neighbour_list` |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['system']} | {r['atoms']} | {r['edges']} | {ms(r, 'bnnmd')} | {ms(r, 'vesin_raw')} | "
                     f"{ms(r, 'ase')} | {ms(r, 'brute')} | {r['ase_over_bnnmd']:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
