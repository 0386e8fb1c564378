"""The ``.pt2`` format: the stacked model compiled ahead of time by AOTInductor.

``bnn-export samples/ model.pt2`` traces :class:`~bnnmd.deploy.DeployedModel` (forces by
autograd included) with ``make_fx(tracing_mode="symbolic")``, exports the traced graph with
``torch.export`` (dynamic atom and edge counts, each >= 2), compiles and packages it with
``torch._inductor.aoti_compile_and_package`` and stores the same ``bnnmd.txt`` metadata as the
TorchScript file in the package (``aot_inductor.metadata``). The C++ evaluator loads either
format behind one interface (``torch::inductor::AOTIModelPackageLoader`` for this one).

Inputs of the compiled graph: ``pos [N, 3]``, ``atom_type [N]`` (int64), ``edge_index [2, E]``
(int64), ``edge_shift [E, 3]``, ``num_local`` (a 0-d int64 tensor); outputs, in
:data:`OUTPUT_KEYS` order, the tensors of the TorchScript module's dict. N >= 2 and E >= 2: the
C++ side pads smaller inputs with two ghost atoms joined by two edges, which change nothing.

A ``.pt2`` runs only with the torch (major.minor) and the device it was compiled for; the C++
evaluator refuses others with a message that says to re-export.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

import numpy as np
import torch
from torch.export import Dim
from torch.fx.experimental.proxy_tensor import make_fx

from bnnmd import _core
from bnnmd.data import neighbour_list
from bnnmd.posterior import EXTRA_FILE
from bnnmd.deploy._module import DeployedModel

PathLike = Union[str, os.PathLike]

#: The order of the compiled graph's outputs (the keys of DeployedModel's dict), as the C++ evaluator
#: reads them (bnn_evaluator.h kOutputKeys).
OUTPUT_KEYS = tuple(_core.output_keys)
#: Metadata key of the package that holds the text of ``bnnmd.txt``.
METADATA_KEY = EXTRA_FILE
#: The smallest atom and edge counts the compiled graph accepts (torch.export specialises 0 and 1).
MIN_ATOMS = MIN_EDGES = 2

Inputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


class _Flat(torch.nn.Module):
    """DeployedModel with tensor inputs and a tuple of outputs (what torch.export takes)."""

    def __init__(self, deployed: DeployedModel):
        super().__init__()
        self.deployed = deployed

    def forward(self, pos, atom_type, edge_index, edge_shift, num_local):
        out = self.deployed(pos, atom_type, edge_index, edge_shift, num_local)
        return tuple(out[k] for k in OUTPUT_KEYS)


def example_inputs(type_names: Sequence[str], cutoff: float, n: int, seed: int, dtype: torch.dtype,
                   device: str) -> Inputs:
    """A cluster of ``n`` atoms of every type on a jittered grid (0.3 x ``cutoff`` apart, whatever the
    length unit), its graph within ``cutoff`` and two ghosts (``num_local = n - 2``): a tracing and
    checking input. A second input of another size (:func:`compile_package`) would reveal a
    dimension that torch.export had fixed to the first one's value."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(-1, 3)[:n]
    pos = cutoff * (0.3 * grid + rng.uniform(-0.03, 0.03, size=(n, 3)))
    types = np.arange(n) % len(type_names)
    g = neighbour_list(pos, cutoff)
    return (torch.tensor(pos, dtype=dtype, device=device), torch.tensor(types, device=device),
            torch.tensor(g.edge_index, device=device), torch.tensor(g.shift_vector, dtype=dtype, device=device),
            torch.tensor(n - 2, device=device))


def compile_package(deployed: DeployedModel, meta_text: str, out: PathLike, device: str = "cpu") -> Path:
    """Compile ``deployed`` (its model in eval mode, on ``device``) into the AOTInductor package ``out``
    and check it against the eager model on two inputs of different sizes. Returns ``out``."""
    model = deployed.model
    cfg = model.config
    dtype = next(model.parameters()).dtype
    flat = _Flat(deployed).eval()
    model.set_traceable(True)
    try:
        with warnings.catch_warnings():
            # torch 2.13's own pytree code, not ours: nothing a user can act on
            warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
            example = example_inputs(cfg.type_names, cfg.cutoff, 13, 0, dtype, device)
            # parameters become constants of the graph (they are not inputs of the deployed model)
            traced = make_fx(flat, tracing_mode="symbolic", _allow_non_fake_inputs=True)(*example)
            n, e = Dim("num_atoms", min=MIN_ATOMS), Dim("num_edges", min=MIN_EDGES)
            program = torch.export.export(traced, example, dynamic_shapes=({0: n}, {0: n}, {1: e}, {0: e}, None),
                                          strict=False)
            out = Path(out)
            out.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as tmp:
                part = Path(tmp) / "model.pt2"
                torch._inductor.aoti_compile_and_package(
                    program, package_path=str(part),
                    inductor_configs={"aot_inductor.metadata": {METADATA_KEY: meta_text}})
                check_package(part, flat, [example, example_inputs(cfg.type_names, cfg.cutoff, 22, 1, dtype, device)])
                os.replace(part, out)
    finally:
        model.set_traceable(False)
    return out


def tolerance(dtype: torch.dtype) -> float:
    """Largest deviation of the compiled from the eager outputs, relative to max(|eager|, 1)."""
    return {torch.float64: 1e-9, torch.float32: 1e-4}[dtype]


def check_package(path: PathLike, flat: torch.nn.Module, inputs: List[Inputs]) -> None:
    """Raise ``RuntimeError`` naming the output when the package at ``path`` differs from ``flat``."""
    compiled = torch._inductor.aoti_load_package(str(path))
    for args in inputs:
        want = flat(*args)
        got = compiled(*args)
        tol = tolerance(want[0].dtype)
        for key, g, w in zip(OUTPUT_KEYS, got, want):
            w = w.detach()
            err = (g - w).abs().max().item() if w.numel() else 0.0
            scale = max(w.abs().max().item() if w.numel() else 0.0, 1.0)
            if not (g.shape == w.shape and err <= tol * scale):
                raise RuntimeError(f"the compiled .pt2 differs from the eager model on {key} ({len(args[0])} "
                                   f"atoms): max deviation {err:.3g} > {tol:.0e} x {scale:.3g}")


def read_package_metadata(path: PathLike) -> Dict[str, str]:
    """The AOTInductor metadata of a ``.pt2`` (``bnnmd.txt`` under :data:`METADATA_KEY`), read by the
    C++ core without loading the compiled code (raises ``RuntimeError`` for other files)."""
    return dict(_core.read_pt2_metadata(str(path)))
