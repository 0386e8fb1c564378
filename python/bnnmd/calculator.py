"""ASE calculator for exported bnnmd models (and, optionally, in-memory samples)."""

from __future__ import annotations

import os
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes

from bnnmd import _core, units
from bnnmd.data import TypeMapper, neighbour_list
from bnnmd.deploy import DeployedModel, read_calibration
from bnnmd.nn import StochasticNequIP
from bnnmd.posterior import StdMap, energy_stats, force_stats, load_samples, virial_stats

PathLike = Union[str, os.PathLike]


class BNNCalculator(Calculator):
    """Energy, forces, stress and their uncertainties from k posterior samples.

    Parameters
    ----------
    model : path of an exported file (``bnn-export``), or, with ``backend="python"``,
        a samples directory or a :class:`bnnmd.nn.StochasticNequIP`.
    backend : ``"core"`` (default: the C++ evaluator the LAMMPS plugin uses) or
        ``"python"`` (the eager PyTorch model in this process).
    device : ``"cpu"``, ``"cuda"`` or ``"auto"``.

    ``results`` hold ASE's ``energy``, ``free_energy``, ``forces``, ``energies``
    (per atom) and, for periodic cells, ``stress``; and bnnmd's ``energy_std``
    (+ ``_epistemic``/``_aleatoric``) and per-atom ``forces_std`` (total,
    ``forces_std_epistemic``, ``forces_std_aleatoric``), in eV and eV/A; for periodic
    cells also ``stress_std`` (+ ``_epistemic``/``_aleatoric``): the std of each stress
    component, 6 values in ASE's Voigt order xx yy zz yz xz xy, eV/A^3 like ``stress``, and
    ``pressure_std`` (+ ``_epistemic``/``_aleatoric``): the std of the pressure
    -tr(stress)/3, eV/A^3. Stress stds are the k samples' spread (epistemic) and the
    model's virial sigma (aleatoric; 0 for a model trained without stresses), not
    calibrated (:func:`bnnmd.posterior.virial_stats`, the C++ core's moments).
    ``samples`` holds the per-sample outputs (eV, A).

    Examples
    --------
    >>> from ase.build import molecule                          # doctest: +SKIP
    >>> atoms = molecule("CH3CH2OH"); atoms.calc = BNNCalculator("model.pth")  # doctest: +SKIP
    >>> atoms.get_forces(); atoms.calc.results["forces_std"]  # doctest: +SKIP
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model: Union[PathLike, torch.nn.Module], backend: str = "core", device: str = "cpu",
                 **kwargs):
        super().__init__(**kwargs)
        if backend not in ("core", "python"):
            raise ValueError(f"backend {backend!r}: use 'core' (exported file, C++) or 'python' (in-memory)")
        self.backend = backend
        if backend == "core":
            self._core = _core.Evaluator(str(model), device, "eV", "A")
            meta = self._core.metadata
            self.type_names = list(meta["type_names"])
            self.cutoff = float(self._core.cutoff)
        else:
            if isinstance(model, StochasticNequIP):
                net, cal = model, {"forces": StdMap.scale(1.0), "energy": StdMap.scale(1.0)}
            else:
                net, cal = load_samples(model), read_calibration(model)
            self._module = DeployedModel(net).to(device)
            self._device = device
            self._dtype = net.embedding.dtype
            self.type_names = list(net.config.type_names)
            # the units the model was trained in travel in its config (the data's units)
            self._e = units.energy_factor(net.config.energy_unit, "eV")
            self._l = units.length_factor(net.config.length_unit, "A")
            self.cutoff = net.config.cutoff * self._l
            # the maps' knots are in model units; the aggregation below works in eV and eV/A
            self._calibration = (cal["energy"].in_units(self._e), cal["forces"].in_units(self._e / self._l))
        self.type_mapper = TypeMapper(self.type_names)

    def _samples(self, pos, types, edge_index, shift, n):
        """Per-sample outputs in eV / A, python backend."""
        d = dict(device=self._device, dtype=self._dtype)
        out = self._module(torch.as_tensor(pos / self._l, **d), torch.as_tensor(types, device=self._device),
                           torch.as_tensor(edge_index, device=self._device),
                           torch.as_tensor(shift / self._l, **d), n)
        g = {k: v.detach().cpu().double().numpy() for k, v in out.items()}
        f = self._e / self._l
        return {"total_energy": g["total_energy"] * self._e, "total_energy_std": g["total_energy_std"] * self._e,
                "atomic_energy": g["atomic_energy"] * self._e, "forces": g["forces"] * f,
                "forces_std": g["forces_std"] * f, "virial": g["virial"] * self._e,
                "virial_std": g["virial_std"] * self._e}

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        a = self.atoms
        types = self.type_mapper.types_of(a.numbers)
        pbc = np.asarray(a.pbc, dtype=bool)
        g = neighbour_list(a.positions, self.cutoff, a.cell.array if pbc.any() else None, pbc)
        n = len(a)
        if self.backend == "core":
            r = self._core.compute(a.positions, types, g.edge_index, g.shift_vector, n)
            samples = r["samples"]
            res = {key: r[key] for key in ("energy", "energy_std", "energy_std_epistemic", "energy_std_aleatoric",
                                           "forces", "forces_std", "forces_std_epistemic", "forces_std_aleatoric")}
            virial = {key: value for key, value in r.items() if key.startswith(("virial", "pressure_volume"))}
        else:
            samples = self._samples(a.positions, types, g.edge_index, g.shift_vector, n)
            res = {**energy_stats(samples["total_energy"], samples["total_energy_std"], self._calibration[0]),
                   **force_stats(samples["forces"], samples["forces_std"], self._calibration[1])}
            virial = virial_stats(samples["virial"], samples["virial_std"])
        res["free_energy"] = res["energy"]
        res["energies"] = samples["atomic_energy"].mean(axis=0)
        res["samples"] = samples
        if pbc.all():
            # ASE: stress = (1/V) dE/d(strain) = -virial / V, Voigt xx yy zz yz xz xy; its std = std(W) / V;
            # the pressure -tr(stress)/3 = tr(W) / (3 V)
            volume = a.get_volume()
            voigt = [0, 4, 8, 5, 2, 1]
            res["stress"] = (-virial["virial"] / volume).reshape(9)[voigt]
            for part in ("", "_epistemic", "_aleatoric"):
                res["stress_std" + part] = (virial["virial_std" + part] / volume).reshape(9)[voigt]
                res["pressure_std" + part] = float(virial["pressure_volume_std" + part]) / volume
        self.results.update(res)
