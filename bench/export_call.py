"""Time per call: the exported module through the C++ evaluator vs the eager Python model.

    OMP_NUM_THREADS=1 .venv/bin/python bench/export_call.py

Systems: ethanol (9 atoms), aspirin (21 atoms, from ../shared/data when present) and a random
200-atom periodic H/C/O box; k = 1 and 8; model of bench/model_forward.py (3 layers, l_max 2,
16 features, cutoff 5 A), float64. Three ways of running the same samples, alternated:
eager `DeployedModel` in Python, the exported TorchScript file through `bnnmd._core.Evaluator`
(C++), and the same exported with `--freeze`. Median of several calls after three warm-up calls.
Writes bench/results/export_call.json.
"""

from __future__ import annotations

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


def main() -> int:
    from bnnmd import _core
    from bnnmd.data import TypeMapper, neighbour_list
    from bnnmd.deploy import DeployedModel, export
    from bnnmd.nn import ModelConfig, build_model, save_sample

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name, ds in systems().items():
            tm = TypeMapper(["H", "C", "O"])
            f = ds.frame(0)
            g = neighbour_list(f["positions"], 5.0, f["cell"], f["pbc"])
            types = tm.types_of(f["atomic_numbers"])
            n = len(types)
            for k in (1, 8):
                cfg = ModelConfig(type_names=["H", "C", "O"], num_layers=3, l_max=2, num_features=16, cutoff=5.0,
                                  num_samples=k)
                model = build_model(cfg, ds, seed=0).eval()
                d = tmp / f"{name}_{k}"
                for s in range(k):
                    save_sample(d / "samples" / f"sample_{s:03d}.pt", model, s, "sghmc")
                plain = _core.Evaluator(str(export(d / "samples", d / "model.pth")))
                frozen = _core.Evaluator(str(export(d / "samples", d / "frozen.pth", freeze=True)))
                eager = DeployedModel(model)
                args = (torch.tensor(f["positions"]), torch.tensor(types), torch.tensor(g.edge_index),
                        torch.tensor(g.shift_vector))
                cpp_args = (f["positions"], types, g.edge_index, g.shift_vector, n)
                ref = eager(*args, n)["forces"].detach().numpy()
                got = plain.compute(*cpp_args)["samples"]["forces"]
                assert np.abs(got - ref).max() < 1e-9, "the exported module differs from the eager model"
                repeats = 3 if name == "box200" else 20
                row = {"system": name, "atoms": n, "edges": g.num_edges, "k": k,
                       "eager_python_ms": median_ms(lambda: eager(*args, n), repeats),
                       "cpp_ms": median_ms(lambda: plain.compute(*cpp_args), repeats),
                       "cpp_frozen_ms": median_ms(lambda: frozen.compute(*cpp_args), repeats)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    out = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")},
           "date": time.strftime("%Y-%m-%d %H:%M"), "rows": rows}
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "export_call.json").write_text(json.dumps(out, indent=1) + "\n")
    print("| system | atoms | k | eager Python (ms) | C++ evaluator (ms) | C++, frozen (ms) | eager / C++ | eager / frozen |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['system']} | {r['atoms']} | {r['k']} | {r['eager_python_ms']:.1f} | {r['cpp_ms']:.1f} | "
              f"{r['cpp_frozen_ms']:.1f} | {r['eager_python_ms'] / r['cpp_ms']:.2f} | "
              f"{r['eager_python_ms'] / r['cpp_frozen_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
