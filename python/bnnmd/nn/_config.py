"""Model hyperparameters, validated with messages that name the key and the allowed values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import List, Optional

from ase.data import atomic_numbers, covalent_radii

from bnnmd import units
from bnnmd._checks import Checks
from bnnmd._errors import BnnmdError
from bnnmd.data import DataError, TypeMapper
from bnnmd.nn._repulsion import REPULSIONS

NONLINEARITIES = ("silu", "ssp", "tanh")


class ConfigError(BnnmdError, ValueError):
    """A bad configuration value; the message names the key and what is allowed."""


@dataclass
class ModelConfig:
    """Hyperparameters of the stochastic NequIP model.

    Defaults are a CPU-sized model; the paper's NequIP runs used 4-5 layers,
    l_max = 2-3 and 32-64 features.

    Examples
    --------
    >>> ModelConfig(type_names=["H", "C", "O"], num_layers=2, l_max=1).num_samples
    1
    >>> ModelConfig(type_names=["H"], l_max=-1)
    Traceback (most recent call last):
    ...
    bnnmd.nn._config.ConfigError: model.l_max = -1: must be an integer >= 0 (0 = invariant messages only)
    """

    type_names: List[str] = field(default_factory=list)  # element symbols, one per type
    num_layers: int = 3  # interaction blocks L; receptive field = L * cutoff
    l_max: int = 2  # largest rotation order of features and spherical harmonics
    num_features: int = 16  # channels per irrep
    parity: bool = True  # True: features of both parities (pseudo-tensors too); False: only p = (-1)^l
    cutoff: float = 5.0  # Angstrom (the dataset's length unit)
    num_basis: int = 8  # Bessel functions
    cutoff_p: int = 6  # polynomial cutoff envelope exponent
    radial_hidden: int = 32  # width of the radial MLP
    radial_layers: int = 2  # hidden layers of the radial MLP
    nonlinearity: str = "silu"  # scalar nonlinearity: silu, ssp (shifted softplus) or tanh
    resnet: bool = True  # residual updates where the irreps allow
    avg_num_neighbours: Optional[float] = None  # message normalisation; None: from data
    sigma_hidden: int = 16  # width of the sigma-head MLPs
    dropout: float = 0.0  # dropout rate in the scalar channels (MC-dropout baseline)
    num_samples: int = 1  # k: parameter samples evaluated in one pass
    # fixed short-range pair repulsion (bnnmd.nn._repulsion): "zbl" or "none"; switched off
    # between repulsion_inner and repulsion_outer x the sum of the two covalent radii
    repulsion: str = "zbl"
    repulsion_inner: float = 0.5
    repulsion_outer: float = 0.8
    # a sigma head for the virial (stress): set by the trainer when the training data has stresses
    # and training.stress_weight > 0; without it the model's virial std is 0 (epistemic stress only)
    stress_std: bool = False
    # units of the model's energies and lengths: set from the training data by build_model
    energy_unit: str = "kcal/mol"
    length_unit: str = "A"

    def __post_init__(self):
        checks = Checks(ConfigError, "model")
        bad = checks.bad
        if not isinstance(self.type_names, (list, tuple)) or not self.type_names:
            bad("type_names", self.type_names, "must be a non-empty list of element symbols, e.g. [H, C, O]")
        try:
            TypeMapper(self.type_names)
        except DataError as exc:
            raise ConfigError(f"model.type_names = {self.type_names!r}: {exc.problem}; {exc.fix}") from None
        self.type_names = list(self.type_names)
        for key, minimum, what in (("num_layers", 1, ""), ("l_max", 0, " (0 = invariant messages only)"),
                                   ("num_features", 1, ""), ("num_basis", 1, ""), ("cutoff_p", 2, ""),
                                   ("radial_hidden", 1, ""), ("radial_layers", 1, ""),
                                   ("sigma_hidden", 1, ""), ("num_samples", 1, " (k, the sample dimension)")):
            checks.integer(self, key, minimum, what)
        for key in ("cutoff",) + (("avg_num_neighbours",) if self.avg_num_neighbours is not None else ()):
            checks.positive(self, key)
        checks.choice(self, "nonlinearity", NONLINEARITIES)
        checks.number(self, "dropout", 0, 1, hi_open=True)
        checks.choice(self, "repulsion", REPULSIONS)
        for key in ("repulsion_inner", "repulsion_outer"):
            checks.positive(self, key, " (a fraction of the sum of covalent radii)")
        if self.repulsion_inner >= self.repulsion_outer:
            bad("repulsion_inner", self.repulsion_inner,
                f"must be below model.repulsion_outer = {self.repulsion_outer} (the switch runs from inner to outer)")
        for key, check in (("energy_unit", units.check_energy_unit), ("length_unit", units.check_length_unit)):
            try:
                check(getattr(self, key))
            except ValueError as exc:
                bad(key, getattr(self, key), str(exc))
        if self.repulsion != "none":
            widest = 2 * max(covalent_radii[atomic_numbers[t]] for t in self.type_names) \
                * units.length_factor("A", self.length_unit)
            if self.repulsion_outer * widest >= self.cutoff:
                bad("repulsion_outer", self.repulsion_outer,
                    f"x {widest:.3g} (the widest covalent pair) reaches model.cutoff = {self.cutoff}; "
                    "use a smaller repulsion_outer or a larger cutoff")
        for key in ("parity", "resnet", "stress_std"):
            checks.boolean(self, key)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from a mapping; unknown keys are an error, not ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(known))}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)
