"""The stochastic NequIP model of Rensmeyer et al. (2024), with a sample dimension."""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
from e3nn import o3
from e3nn.util.jit import compile_mode
from torch import nn

from bnnmd.data import keys as K
from bnnmd.nn._config import ConfigError, ModelConfig
from bnnmd.nn._interaction import InteractionBlock, hidden_irreps
from bnnmd.nn._radial import BesselBasis, PolynomialCutoff
from bnnmd.nn._repulsion import ZBLRepulsion
from bnnmd.nn._stacked import StackedLinear, StackedMLP


@compile_mode("script")
class StochasticNequIP(nn.Module):
    """NequIP with sigma heads; every parameter has a leading sample dimension ``k``.

    ``forward(data)`` takes a batch from :class:`bnnmd.data.GraphDataset` (keys of
    :mod:`bnnmd.data.keys`) and returns, per sample ``s < k``:

    ============================  ======================  =====================================
    key                           shape                   meaning
    ============================  ======================  =====================================
    ``total_energy``              ``[k, num_frames]``     mu_E, sum of atomic energies
    ``atomic_energy``             ``[k, num_atoms]``      E_i = scale[z_i] * out_i + shift[z_i] (+ ZBL)
    ``forces``                    ``[k, num_atoms, 3]``   mu_F = -dE/dr (autograd, conservative)
    ``total_energy_std``          ``[k, num_frames]``     sigma_E (permutation invariant)
    ``forces_std``                ``[k, num_atoms]``      sigma_F_i, shared by x, y, z
    ``virial``                    ``[k, num_frames, 3, 3]`` -sum_edges r_ij (x) dE/dr_ij
    ``virial_std``                ``[k, num_frames]``     sigma_W of each virial component (0
                                                          without a stress head)
    ============================  ======================  =====================================

    Notes
    -----
    The graph and the edge vectors are built once per call. Per-sample forces
    need one backward pass for all k samples, so the edge vectors are repeated
    along k before the spherical harmonics and radial basis (cheap next to the
    tensor products, see ``docs/benchmarks.md``); then ``dE_s/dr_ij`` is sample
    ``s``'s own, and forces and virial follow from these edge gradients, the
    form LAMMPS needs for ghost atoms.

    With ``config.repulsion = "zbl"`` (the default) each atomic energy also holds half of
    its ZBL pair energies (:mod:`bnnmd.nn._repulsion`): the same for every sample, zero
    beyond ``repulsion_outer`` x the covalent sum, so it moves means, never stds.

    sigma_E^2 = scale^2 * sum_i (softplus(MLP_E(v_i)) + floor) and sigma_F_i =
    scale * (softplus(MLP_F(v_i)) + floor), with scale = the force RMS of the data
    and v_i the invariant features of the model base. Both are positive and finite for any input.
    With ``config.stress_std``, sigma_W^2 = scale_W^2 * sum_i (softplus(MLP_W(v_i)) + floor), one
    sigma for every virial component of a frame, with scale_W = the per-atom virial RMS of the data.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        c = config
        if c.avg_num_neighbours is None:
            raise ConfigError("model.avg_num_neighbours is not set: compute it from the training data "
                              "(bnnmd.nn.build_model does) or give it in the config")
        self.config = copy.deepcopy(c)
        k = c.num_samples
        self.num_samples = k
        self.num_layers = c.num_layers
        self.num_types = len(c.type_names)
        self.cutoff = float(c.cutoff)
        self.irreps_sh = o3.Irreps.spherical_harmonics(c.l_max)  # 0e + 1o + 2e + ...
        self.sh = o3.SphericalHarmonics(self.irreps_sh, normalize=True, normalization="component")
        self.basis = BesselBasis(c.cutoff, c.num_basis, k)
        self.envelope = PolynomialCutoff(c.cutoff, c.cutoff_p)
        self.embedding = nn.Parameter(torch.randn(k, self.num_types, c.num_features))
        target = hidden_irreps(c.num_features, c.l_max, c.parity)
        irreps = o3.Irreps(f"{c.num_features}x0e")
        blocks = []
        for layer in range(c.num_layers):
            # the last block only feeds the invariant readout: it produces even scalars only,
            # so that no parameter is left without a gradient (it would sample only its prior)
            last = layer == c.num_layers - 1
            block = InteractionBlock(irreps, self.irreps_sh, o3.Irreps(f"{c.num_features}x0e") if last else target,
                                     self.num_types, c.num_basis,
                                     c.radial_hidden, c.radial_layers, c.avg_num_neighbours,
                                     c.nonlinearity, c.resnet, c.dropout, k)
            blocks.append(block)
            irreps = block.irreps_out
        self.blocks = nn.ModuleList(blocks)
        n_inv = max(c.num_features // 2, 1)
        self.to_invariant = StackedLinear(irreps, o3.Irreps(f"{n_inv}x0e"), k)  # v_i
        self.to_energy = StackedLinear(o3.Irreps(f"{n_inv}x0e"), o3.Irreps("1x0e"), k)
        self.sigma_energy_head = StackedMLP([n_inv, c.sigma_hidden, 1], k, act=c.nonlinearity)
        self.sigma_forces_head = StackedMLP([n_inv, c.sigma_hidden, 1], k, act=c.nonlinearity)
        # Per-species scale and shift of the atomic energies and the scale of the
        # sigmas: data statistics, not parameters (the N(0, I) prior is not for them).
        self.register_buffer("energy_scale", torch.ones(self.num_types))
        self.register_buffer("energy_shift", torch.zeros(self.num_types))
        self.register_buffer("sigma_scale", torch.ones(()))
        self.sigma_floor = 1e-4
        self.use_repulsion = c.repulsion == "zbl"
        self.repulsion = ZBLRepulsion(c.type_names, c.repulsion_inner, c.repulsion_outer,
                                      c.energy_unit, c.length_unit)
        self.message_dim = max(b.message_dim for b in self.blocks)
        # samples x edges x message width per pass; 2**23 elements = 64 MB in float64
        self.max_chunk_elements = 2 ** 23
        # True while torch.export traces the model (bnn-export to .pt2): one pass over all samples
        # and no ghost pruning, so that no branch depends on the data or the edge count
        self.traceable = False
        # the virial's sigma head comes last, so that a model with it draws every other initial
        # weight as a model without it (same seed, same weights)
        self.sigma_stress_head = StackedMLP([n_inv, c.sigma_hidden, 1], k, act=c.nonlinearity) \
            if c.stress_std else None
        if c.stress_std:
            self.register_buffer("virial_scale", torch.ones(()))

    @torch.jit.unused
    def set_traceable(self, traceable: bool) -> None:
        """Make the forward pass free of data-dependent branches and shapes (for ``torch.export``):
        all samples in one pass, no ghost pruning, every species' self-connection on every atom.
        The outputs are the same; only the work done differs."""
        for m in self.modules():
            if hasattr(m, "traceable"):
                m.traceable = bool(traceable)

    # ---- sample dimension ----------------------------------------------------
    @torch.jit.unused
    def select(self, indices: Sequence[int]) -> "StochasticNequIP":
        """A model holding only samples ``indices`` (a copy)."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        if idx.numel() == 0 or int(idx.min()) < 0 or int(idx.max()) >= self.num_samples:
            raise ValueError(f"sample indices {list(indices)} out of range for k = {self.num_samples}")
        cfg = copy.deepcopy(self.config)
        cfg.num_samples = int(idx.numel())
        new = StochasticNequIP(cfg).to(self.embedding.dtype)
        sd = {n: (p.index_select(0, idx.to(p.device)) if n in dict(self.named_parameters()) else p)
              for n, p in self.state_dict().items()}
        new.load_state_dict(sd)
        return new.to(self.embedding.device)

    @staticmethod
    @torch.jit.unused
    def stack(models: Sequence["StochasticNequIP"]) -> "StochasticNequIP":
        """One model whose samples are those of ``models``, in order (same config, same buffers)."""
        if not models:
            raise ValueError("stack() needs at least one model")
        first = models[0]
        base = dict(first.config.to_dict(), num_samples=0)
        for m in models[1:]:
            if dict(m.config.to_dict(), num_samples=0) != base:
                raise ValueError("stack(): models have different configs; only the number of samples may differ")
        cfg = copy.deepcopy(first.config)
        cfg.num_samples = sum(m.num_samples for m in models)
        new = StochasticNequIP(cfg).to(first.embedding.dtype)
        params = dict(first.named_parameters())
        sd = {}
        for name, value in first.state_dict().items():
            if name in params:
                sd[name] = torch.cat([m.state_dict()[name] for m in models], dim=0)
            else:
                for m in models[1:]:
                    if not torch.equal(m.state_dict()[name], value):
                        raise ValueError(f"stack(): buffer {name} differs between models")
                sd[name] = value
        new.load_state_dict(sd)
        return new.to(first.embedding.device)

    @torch.jit.unused
    def set_statistics(self, per_species_energy: Sequence[float], force_rms: float,
                       virial_rms: Optional[float] = None) -> None:
        """Initialise shift (energy per atom of each type) and scales (force RMS; the virial's sigma:
        the per-atom virial RMS, for a model with a stress head) from data."""
        e = torch.as_tensor(list(per_species_energy), dtype=self.energy_shift.dtype)
        if e.shape != self.energy_shift.shape:
            raise ValueError(f"per_species_energy has {e.numel()} values for {self.num_types} types")
        self.energy_shift.copy_(e)
        self.energy_scale.fill_(float(force_rms))
        self.sigma_scale.fill_(float(force_rms))
        if virial_rms is not None and self.sigma_stress_head is not None:
            self.virial_scale.fill_(float(virial_rms))

    @torch.jit.unused
    def set_dropout_active(self, active: bool) -> None:
        """Keep dropout masks on in eval mode (MC dropout inference)."""
        for b in self.blocks:
            b.dropout_active = bool(active)

    # ---- forward -------------------------------------------------------------
    def forward(self, data: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Per-sample outputs (see the class docstring).

        The k samples run in chunks of at most ``chunk_size(num_edges)`` samples:
        all of them for molecules, fewer for large systems where k copies of the
        per-edge messages would not fit in cache-friendly memory (there, one
        stacked pass was measured to be slower than a loop over samples).
        """
        if not torch.is_grad_enabled():
            raise RuntimeError("StochasticNequIP computes forces by autograd: call it with gradients "
                               "enabled, not under torch.no_grad() or inference_mode()")
        k = self.num_samples
        if self.traceable:
            return self._forward_samples(data, 0, -1)
        chunk = self.chunk_size(data[K.EDGE_INDEX].shape[1])
        if chunk >= k:
            return self._forward_samples(data, 0, -1)
        parts: List[Dict[str, torch.Tensor]] = []
        for s0 in range(0, k, chunk):
            parts.append(self._forward_samples(data, s0, min(s0 + chunk, k)))
        out: Dict[str, torch.Tensor] = {}
        for key in parts[0].keys():
            out[key] = torch.cat([p[key] for p in parts], dim=0)
        return out

    def _hops(self, mask: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Graph distance (in edges, capped at L) of every atom from the atoms with ``mask > 0``."""
        hops = torch.where(mask > 0, 0, self.num_layers).to(torch.long)
        centre, neighbour = edge_index[0], edge_index[1]
        for _ in range(self.num_layers - 1):
            reach = hops.index_select(0, centre) + 1  # messages flow neighbour -> centre
            hops = hops.scatter_reduce(0, neighbour, reach, reduce="amin", include_self=True)
        return hops

    def chunk_size(self, num_edges: int) -> int:
        """Samples per pass: keeps ``samples x edges x message width`` under ``max_chunk_elements``."""
        per_sample = max(num_edges * self.message_dim, 1)
        return max(1, min(self.num_samples, self.max_chunk_elements // per_sample))

    def _forward_samples(self, data: Dict[str, torch.Tensor], s0: int, s1: int) -> Dict[str, torch.Tensor]:
        """Outputs of samples ``s0 .. s1 - 1`` (``s1 < 0``: all)."""
        pos = data[K.POSITIONS]
        atom_type = data[K.ATOM_TYPE]
        edge_index = data[K.EDGE_INDEX]
        batch = data[K.BATCH]
        num_frames = data[K.NUM_ATOMS].shape[0]
        k = (self.num_samples if s1 < 0 else s1) - s0
        n_atoms = pos.shape[0]
        edge_shift = data[K.EDGE_SHIFT]
        # only atoms with energy_mask 1 count (LAMMPS: local atoms, not ghosts); forces still reach all
        mask: Optional[torch.Tensor] = data.get(K.ENERGY_MASK)
        hops: Optional[torch.Tensor] = None
        if mask is not None and not self.traceable and bool((mask <= 0).any()):
            # layer l (1..L) only needs to update atoms within L - l hops of a counted atom:
            # drop the messages nothing counted depends on (most of LAMMPS's ghost shell)
            hops = self._hops(mask, edge_index)
            keep = torch.nonzero(hops.index_select(0, edge_index[0]) <= self.num_layers - 1).squeeze(-1)
            edge_index = edge_index.index_select(1, keep)
            edge_shift = edge_shift.index_select(0, keep)
        centre, neighbour = edge_index[0], edge_index[1]
        vec = pos.index_select(0, neighbour) - pos.index_select(0, centre) + edge_shift
        vec_k = vec.detach().unsqueeze(0).repeat(k, 1, 1).requires_grad_(True)
        r = torch.linalg.norm(vec_k, dim=-1)
        sh = self.sh(vec_k)
        basis = self.basis(r, s0, s1) * self.envelope(r).unsqueeze(-1)
        embedding = self.embedding if s1 < 0 else self.embedding[s0:s1]
        x = embedding.index_select(1, atom_type)
        for layer, block in enumerate(self.blocks):
            if hops is None or layer == 0:
                x = block(x, atom_type, edge_index, sh, basis, s0, s1)
            else:
                sel = torch.nonzero(hops.index_select(0, centre) <= self.num_layers - 1 - layer).squeeze(-1)
                x = block(x, atom_type, edge_index.index_select(1, sel), sh.index_select(1, sel),
                          basis.index_select(1, sel), s0, s1)
        v = self.to_invariant(x, s0, s1)
        out = self.to_energy(v, s0, s1).squeeze(-1)
        atomic_energy = out * self.energy_scale.index_select(0, atom_type) \
            + self.energy_shift.index_select(0, atom_type)
        if self.use_repulsion:
            # each directed edge carries half of its pair's energy, on its centre atom
            pair = self.repulsion(r, atom_type.index_select(0, centre), atom_type.index_select(0, neighbour))
            atomic_energy = atomic_energy.index_add(1, centre, 0.5 * pair)
        counted = atomic_energy if mask is None else atomic_energy * mask
        energy = atomic_energy.new_zeros(k, num_frames).index_add(1, batch, counted)
        grads = torch.autograd.grad([energy.sum()], [vec_k], create_graph=self.training, allow_unused=True)
        g = grads[0]
        if g is None:  # no edges at all
            g = torch.zeros_like(vec_k)
        # F_i = -dE/dr_i with r_ij = r_j - r_i: F_i += dE/dr_ij, F_j -= dE/dr_ij
        forces = g.new_zeros(k, n_atoms, 3).index_add(1, centre, g).index_add(1, neighbour, -g)
        edge_frame = batch.index_select(0, centre)
        virial_edges = -(vec.detach().unsqueeze(0).unsqueeze(-1) * g.unsqueeze(-2))  # [k, E, 3, 3]
        virial = g.new_zeros(k, num_frames, 3, 3).index_add(1, edge_frame, virial_edges)
        # per-atom variance contributions (positive, with a floor) add up over the frame
        var_e_atoms = torch.nn.functional.softplus(self.sigma_energy_head(v, s0, s1).squeeze(-1)) \
            + self.sigma_floor
        if mask is not None:
            var_e_atoms = var_e_atoms * mask
        var_e = var_e_atoms.new_zeros(k, num_frames).index_add(1, batch, var_e_atoms)
        energy_std = self.sigma_scale * torch.sqrt(var_e)
        forces_std = self.sigma_scale * (torch.nn.functional.softplus(
            self.sigma_forces_head(v, s0, s1).squeeze(-1)) + self.sigma_floor)
        head = self.sigma_stress_head
        if head is not None:
            # like sigma_E: per-atom variance contributions add up, sigma_W^2 = scale^2 * sum_i (...)
            var_w_atoms = torch.nn.functional.softplus(head(v, s0, s1).squeeze(-1)) + self.sigma_floor
            if mask is not None:
                var_w_atoms = var_w_atoms * mask
            var_w = var_w_atoms.new_zeros(k, num_frames).index_add(1, batch, var_w_atoms)
            virial_std = self.virial_scale * torch.sqrt(var_w)
        else:
            virial_std = torch.zeros_like(energy_std)
        return {
            K.TOTAL_ENERGY: energy,
            K.ATOMIC_ENERGY: atomic_energy,
            K.FORCES: forces,
            K.TOTAL_ENERGY_STD: energy_std,
            K.FORCES_STD: forces_std,
            K.VIRIAL: virial,
            K.VIRIAL_STD: virial_std,
        }

    @torch.jit.unused
    def __repr__(self) -> str:
        n = sum(p.numel() for p in self.parameters()) // self.num_samples
        c = self.config
        return (f"StochasticNequIP(k={self.num_samples}, layers={c.num_layers}, l_max={c.l_max}, "
                f"features={c.num_features}, cutoff={c.cutoff}, types={c.type_names}, "
                f"{n} parameters per sample)")
