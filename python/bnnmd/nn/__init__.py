"""The stochastic equivariant model: NequIP on e3nn with sigma heads and a sample dimension.

Every parameter has a leading dimension ``k`` (posterior samples, chains,
ensemble members or dropout masks), so all k run in one forward/backward pass.

Examples
--------
>>> import torch
>>> from bnnmd.data import GraphDataset, TypeMapper, bundled_dataset
>>> ds = bundled_dataset("rmd17_ethanol_train").subset(range(2))
>>> cfg = ModelConfig(type_names=["H", "C", "O"], num_layers=1, l_max=1, num_features=4, num_samples=3)
>>> model = build_model(cfg, ds)
>>> out = model(GraphDataset(ds, TypeMapper(cfg.type_names), cfg.cutoff).batch([0, 1]))
>>> out["total_energy"].shape, out["forces"].shape, out["forces_std"].shape
(torch.Size([3, 2]), torch.Size([3, 18, 3]), torch.Size([3, 18]))
"""

from __future__ import annotations

import copy
from typing import Dict, Optional

import torch
from e3nn.util.jit import compile as _e3nn_compile

from bnnmd.data import TypeMapper, average_num_neighbours, force_rms, per_species_energy, virial_rms

from bnnmd.nn._config import NONLINEARITIES, ConfigError, ModelConfig
from bnnmd.nn._model import StochasticNequIP
from bnnmd.nn._predictive import Predictive, predict, predictive
from bnnmd.nn._stacked import StackedLinear, StackedMLP


def build_model(config: ModelConfig, dataset=None, dtype: torch.dtype = torch.float64,
                seed: Optional[int] = None,
                reference_energies: Optional[Dict[str, float]] = None) -> StochasticNequIP:
    """Build the model, with scale, shift and neighbour count from ``dataset`` when given.

    ``dataset`` is a :class:`bnnmd.data.AtomicDataset` (the training set); the
    per-species energy shift is ``reference_energies`` (element -> energy per atom, in the data's
    energy unit, e.g. isolated-atom energies) when given, else a least-squares fit of the data's
    energies; the scales come from its force RMS (and, with ``config.stress_std``, its virial RMS) and,
    unless the config sets it,
    ``avg_num_neighbours`` from its graphs.
    """
    config = copy.deepcopy(config)
    if dataset is not None and config.avg_num_neighbours is None:
        config.avg_num_neighbours = average_num_neighbours(dataset, config.cutoff)
    if dataset is not None:
        config.energy_unit, config.length_unit = dataset.energy_unit, dataset.length_unit
        config.__post_init__()  # the repulsion's reach is checked in the data's length unit
    if seed is not None:
        torch.manual_seed(seed)
    model = StochasticNequIP(config)
    if dataset is not None:
        if reference_energies is None:
            shift = per_species_energy(dataset, TypeMapper(config.type_names))
        else:
            missing = [t for t in config.type_names if t not in reference_energies]
            if missing:
                raise ConfigError(f"data.reference_energies = {reference_energies!r}: gives no energy for "
                                  f"{', '.join(missing)}; give one per element of the model ({', '.join(config.type_names)})")
            shift = [float(reference_energies[t]) for t in config.type_names]
        model.set_statistics(shift, force_rms(dataset),
                             virial_rms(dataset) if config.stress_std and dataset.stress is not None else None)
    return model.to(dtype)


def script(model: StochasticNequIP) -> torch.jit.ScriptModule:
    """TorchScript version of ``model`` (same outputs; used by the exporter)."""
    return _e3nn_compile(model)


__all__ = ["ConfigError", "ModelConfig", "NONLINEARITIES", "Predictive", "StackedLinear", "StackedMLP",
           "StochasticNequIP", "build_model", "predict", "predictive", "script"]
