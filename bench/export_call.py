"""Time per call: the exported model (TorchScript and .pt2) through the C++ evaluator vs eager Python.

    OMP_NUM_THREADS=1 .venv/bin/python bench/export_call.py
    OMP_NUM_THREADS=1 .venv/bin/python bench/export_call.py --systems ethanol --model peer   # nequip's size

Systems: ethanol (9 atoms), aspirin (21 atoms, from ../shared/data when present) and a random
200-atom periodic H/C/O box; k = 1 and 8 (one model per k, for every system); model of bench/model_forward.py (3 layers, l_max 2,
16 features, cutoff 5 A; ``--model peer``: bench/peer_nequip.py's 3 layers, l_max 1, 32 features,
cutoff 5 A, radial MLP 2 x 64), float64. Four ways of running the same samples: eager
`DeployedModel` in Python, the exported TorchScript file through `bnnmd._core.Evaluator` (C++),
the same exported with `--freeze`, and the AOTInductor package (`bnn-export ... model.pt2`) through
the same evaluator. Median of several calls after three warm-up calls; the .pt2 compile time is
recorded too. Writes bench/results/export_call.json (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

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


def median_ms(fn, repeats):
    for _ in range(3):  # TorchScript's profiling executor optimises after the first calls
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
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", default=None, help="comma-separated subset of ethanol,aspirin,box200")
    p.add_argument("--k", default="1,8", help="comma-separated sample counts (default 1,8)")
    p.add_argument("--model", choices=sorted(MODELS), default="bench")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "export_call.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from bnnmd import _core
    from bnnmd.data import TypeMapper, neighbour_list
    from bnnmd.deploy import DeployedModel, export
    from bnnmd.nn import ModelConfig, build_model, save_sample

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chosen = systems()
        if a.systems:
            chosen = {n: chosen[n] for n in a.systems.split(",") if n in chosen}
        # one model (and one .pt2 compile, minutes) per k, from ethanol's statistics, for every system
        for k in (int(x) for x in a.k.split(",")):
            cfg = ModelConfig(type_names=["H", "C", "O"], num_samples=k, **MODELS[a.model])
            model = build_model(cfg, systems()["ethanol"], seed=0).eval()
            d = tmp / f"k{k}"
            for s in range(k):
                save_sample(d / "samples" / f"sample_{s:03d}.pt", model, s, "sghmc")
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
                repeats = 3 if name == "box200" else 20
                row = {"system": name, "model": a.model, "atoms": n, "edges": g.num_edges, "k": k,
                       "pt2_compile_s": compile_s,
                       "eager_python_ms": median_ms(lambda: eager(*args, n), repeats),
                       "cpp_ms": median_ms(lambda: plain.compute(*cpp_args), repeats),
                       "cpp_frozen_ms": median_ms(lambda: frozen.compute(*cpp_args), repeats),
                       "cpp_pt2_ms": median_ms(lambda: pt2.compute(*cpp_args), repeats)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
           "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print("| system | atoms | k | eager Python (ms) | TorchScript (ms) | TorchScript, frozen (ms) | .pt2 (ms) | "
          "TorchScript / .pt2 | .pt2 k / .pt2 k=1 | .pt2 compile (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    k1 = {r["system"]: r["cpp_pt2_ms"] for r in rows if r["k"] == 1}
    for r in rows:
        per_k = f"{r['cpp_pt2_ms'] / k1[r['system']]:.2f}" if r["system"] in k1 else "-"
        print(f"| {r['system']} | {r['atoms']} | {r['k']} | {r['eager_python_ms']:.1f} | {r['cpp_ms']:.2f} | "
              f"{r['cpp_frozen_ms']:.2f} | {r['cpp_pt2_ms']:.2f} | {r['cpp_ms'] / r['cpp_pt2_ms']:.1f} | {per_k} | "
              f"{r['pt2_compile_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
