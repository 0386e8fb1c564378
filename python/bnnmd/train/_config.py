"""The training configuration: YAML, validated, unknown keys refused."""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, Optional, Union

import yaml
from ase.data import chemical_symbols

from bnnmd._checks import Checks, is_int, is_number
from bnnmd._yaml import read_config_file
from bnnmd.nn import ConfigError, ModelConfig
from bnnmd.train._methods import get_method, method_names
DTYPES = ("float64", "float32")
DISTRIBUTED_MODES = ("auto", "chains", "data")
PROTOCOLS = ("rmd17", "ccsd_t_ethanol", "random")


def _checks(section: str) -> Checks:
    return Checks(ConfigError, section)


@dataclass
class DataSection:
    train: str = "bundled:rmd17_ethanol_train"  # a file, or bundled:NAME
    test: Optional[str] = "bundled:rmd17_ethanol_test"  # rmd17 protocol: the test file
    protocol: str = "rmd17"  # rmd17 (970/30 + test file), ccsd_t_ethanol (100/30/870), random
    n_train: Optional[int] = None  # override the protocol's sizes (random: required)
    n_val: Optional[int] = None
    split: Optional[str] = None  # reuse a saved split.json instead of making one
    type_names: Optional[list] = None  # default: the elements of the training data, by Z
    # element -> energy per atom (the data's energy unit), the model's per-species energy shift, e.g.
    # isolated-atom energies; default: fitted to the training energies by least squares
    reference_energies: Optional[Dict[str, float]] = None

    def validate(self):
        if self.protocol not in PROTOCOLS:
            _checks("data").bad("protocol", self.protocol, f"must be one of {', '.join(PROTOCOLS)}")
        for key in ("n_train", "n_val"):
            if getattr(self, key) is not None:
                _checks("data").integer(self, key, 1)
        if self.protocol == "random" and (self.n_train is None or self.n_val is None):
            _checks("data").bad("n_train", self.n_train, "protocol random needs data.n_train and data.n_val")
        ref = self.reference_energies
        if ref is not None and (not isinstance(ref, dict) or not ref
                                or any(k not in chemical_symbols[1:] or not is_number(v) for k, v in ref.items())):
            _checks("data").bad("reference_energies", ref, "must map element symbols to energies per atom, "
                                "e.g. {H: -13.6, O: -2041.3} (the data's energy unit)")


@dataclass
class TrainingSection:
    batch_size: int = 5  # frames per minibatch
    max_steps: int = 3000  # parameter updates at most
    validate_every: int = 100  # steps between validations (and log lines)
    checkpoint_every: int = 200  # steps between checkpoints (also written on Ctrl-C and at the end)
    time_limit: Optional[float] = None  # seconds of training after which the run stops cleanly
    prior_std: float = 1.0  # s of the N(centre, s^2 I) prior
    # a sample_XXX.pt to centre the prior on (fine-tuning), or a samples directory: chain c is
    # centred on (and starts at) the last sample of that run's chain c
    prior_centre: Optional[str] = None
    device: str = "cpu"  # cpu, cuda, cuda:N or auto (cuda when torch sees a GPU)
    # weight of the stress term of the likelihood (the six virial components of each frame with a
    # stress); 0 = stresses ignored. With stresses and a weight > 0 the model gets a virial sigma head
    stress_weight: float = 1.0
    # several processes (torchrun): chains = the k chains/members split over the processes (the
    # samples of one process, bit for bit); data = each minibatch split, gradients averaged; auto =
    # chains when k > 1, else data. No effect in one process (docs/training.md)
    distributed: str = "auto"

    def validate(self):
        for key, mn in (("batch_size", 1), ("max_steps", 1), ("validate_every", 1), ("checkpoint_every", 1)):
            _checks("training").integer(self, key, mn)
        if self.time_limit is not None:
            _checks("training").number(self, "time_limit", 0, None, lo_open=True)
        _checks("training").number(self, "prior_std", 0, None, lo_open=True)
        _checks("training").number(self, "stress_weight", 0, None)
        if not isinstance(self.device, str) or not (self.device in ("cpu", "cuda", "auto")
                                                    or (self.device.startswith("cuda:") and self.device[5:].isdigit())):
            _checks("training").bad("device", self.device, "must be cpu, cuda, cuda:N or auto")
        if self.distributed not in DISTRIBUTED_MODES:
            _checks("training").bad("distributed", self.distributed,
                                    "must be auto, chains (split the chains over the processes) or data "
                                    "(split each minibatch)")


@dataclass
class SGHMCSection:
    lr: float = 1e-3  # gamma, the step size
    friction: float = 0.1  # alpha (the authors' public code uses 0.1 = 1 - Adam's beta1)
    beta: float = 0.999  # running average of squared gradients for the mass
    eps: float = 1e-8
    warm_start_steps: int = 1000  # Adam + EMA (adam.lr, adam.ema_decay) before the sampler; 0 = off
    warm_start_shared: bool = False  # all chains start sampling from chain 0's warm start
    mass_freeze_step: int = 500  # sampler steps (after the warm start) while the mass adapts
    burn_in: int = 1000  # sampler steps before the first sample (>= mass_freeze_step)
    num_samples: int = 8  # k, pooled over chains
    sample_interval: int = 100  # steps between samples of a chain
    chains: int = 1  # chains run in parallel through the sample dimension
    noise: float = 1.0  # 1 = the posterior; 0 = no noise (an Adam-like optimiser)
    noise_start: float = 1.0  # reduced-noise start (paper's suggestion), off at 1.0
    noise_ramp_steps: int = 0  # steps over which noise_start ramps to noise
    # steps: the counts above; time: warm_start_steps, mass_freeze_step, burn_in and
    # sample_interval are planned during the run to end by 0.95 x training.time_limit
    schedule: str = "steps"
    warm_start_fraction: float = 0.85  # schedule time: the warm start's share of the planned steps

    def validate(self):
        _checks("sghmc").number(self, "lr", 0, None, lo_open=True)
        _checks("sghmc").number(self, "friction", 0, 1, lo_open=True)
        _checks("sghmc").number(self, "beta", 0, 1, hi_open=True)
        _checks("sghmc").number(self, "eps", 0, None, lo_open=True)
        _checks("sghmc").number(self, "noise", 0, None)
        _checks("sghmc").number(self, "noise_start", 0, 1)
        for key, mn in (("mass_freeze_step", 1), ("burn_in", 1), ("num_samples", 1), ("sample_interval", 1),
                        ("chains", 1), ("noise_ramp_steps", 0)):
            _checks("sghmc").integer(self, key, mn)
        _checks("sghmc").integer(self, "warm_start_steps", 0)
        if not isinstance(self.warm_start_shared, bool):
            _checks("sghmc").bad("warm_start_shared", self.warm_start_shared, "must be true or false")
        if self.schedule not in ("steps", "time"):
            _checks("sghmc").bad("schedule", self.schedule, "must be steps (the step counts given) or time "
                 "(planned to fit training.time_limit)")
        _checks("sghmc").number(self, "warm_start_fraction", 0, 1, hi_open=True)
        if self.burn_in < self.mass_freeze_step:
            _checks("sghmc").bad("burn_in", self.burn_in,
                 f"must be >= sghmc.mass_freeze_step ({self.mass_freeze_step}): samples are taken once the mass is frozen")
        if self.num_samples % self.chains:
            _checks("sghmc").bad("num_samples", self.num_samples,
                 f"must be a multiple of sghmc.chains ({self.chains}): every chain gives the same number of samples")


@dataclass
class AdamSection:
    lr: float = 1e-2  # nequip's; with the EMA it beat lr 3e-3 without (docs/training.md)
    ema_decay: float = 0.999  # EMA of the weights (validation, early stopping, samples); 0 = off
    ema_warmup: bool = True  # decay min(ema_decay, (1 + n) / (10 + n)) at update n (as nequip)
    lr_factor: float = 0.5  # learning-rate decay on a validation plateau
    lr_patience: int = 5  # validations without improvement before decaying
    min_lr: float = 1e-5
    early_stopping_patience: int = 10  # validations without improvement before a member stops
    members: int = 8  # ensemble only: k members with different initialisations
    dropout: float = 0.1  # mc_dropout only: dropout rate in the scalar channels
    mc_samples: int = 8  # mc_dropout only: dropout masks at inference

    def validate(self):
        _checks("adam").number(self, "lr", 0, None, lo_open=True)
        _checks("adam").number(self, "lr_factor", 0, 1, lo_open=True, hi_open=True)
        _checks("adam").number(self, "min_lr", 0, None)
        _checks("adam").number(self, "dropout", 0, 1, hi_open=True)
        _checks("adam").number(self, "ema_decay", 0, 1, hi_open=True)
        if not isinstance(self.ema_warmup, bool):
            _checks("adam").bad("ema_warmup", self.ema_warmup, "must be true or false")
        for key in ("lr_patience", "early_stopping_patience", "members", "mc_samples"):
            _checks("adam").integer(self, key, 1)


SECTIONS = {"data": DataSection, "training": TrainingSection, "sghmc": SGHMCSection, "adam": AdamSection}


@dataclass
class TrainConfig:
    """Everything ``bnn-train`` needs; see ``examples/*.yaml`` and ``docs/training.md``."""

    method: str = "sghmc"
    seed: int = 0
    dtype: str = "float64"
    data: DataSection = field(default_factory=DataSection)
    model: Dict[str, Any] = field(default_factory=dict)  # ModelConfig keys but type_names/num_samples
    training: TrainingSection = field(default_factory=TrainingSection)
    sghmc: SGHMCSection = field(default_factory=SGHMCSection)
    adam: AdamSection = field(default_factory=AdamSection)

    def validate(self) -> "TrainConfig":
        if self.method not in method_names():
            _checks("config").bad("method", self.method, f"must be one of {', '.join(method_names())}")
        if not is_int(self.seed):
            _checks("config").bad("seed", self.seed, "must be an integer")
        if self.dtype not in DTYPES:
            _checks("config").bad("dtype", self.dtype, f"must be one of {', '.join(DTYPES)}")
        for name in SECTIONS:
            getattr(self, name).validate()
        set_by = {"type_names": "data.type_names", "stress_std": "the data's stresses and training.stress_weight"}
        for key in ("type_names", "num_samples", "stress_std", *get_method(self.method)(self).model_options()):
            if key in self.model:
                raise ConfigError(f"model.{key} is set by the trainer ({set_by.get(key, 'the method')}); "
                                  "remove it from the model section")
        ModelConfig.from_dict({**self.model, "type_names": ["H"]})  # validates keys and values
        get_method(self.method)(self).validate()  # the rules that tie the method's section to the others
        return self

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrainConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"the config must be a mapping of sections, got {type(d).__name__}")
        top = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - top)
        if unknown:
            raise ConfigError(f"unknown top-level key(s) {', '.join(unknown)}; allowed: {', '.join(sorted(top))}")
        kwargs = {}
        for key, value in d.items():
            if key in SECTIONS:
                section = SECTIONS[key]
                if value is None:
                    value = {}
                if not isinstance(value, dict):
                    raise ConfigError(f"{key} must be a mapping, got {value!r}")
                known = {f.name for f in fields(section)}
                bad = sorted(set(value) - known)
                if bad:
                    raise ConfigError(f"unknown key(s) {', '.join(f'{key}.{b}' for b in bad)}; "
                                      f"allowed in {key}: {', '.join(sorted(known))}")
                kwargs[key] = section(**value)
            elif key == "model":
                if value is not None and not isinstance(value, dict):
                    raise ConfigError(f"model must be a mapping, got {value!r}")
                kwargs[key] = dict(value or {})
            else:
                kwargs[key] = value
        return cls(**kwargs).validate()

    @classmethod
    def load(cls, path: Union[str, Path]) -> "TrainConfig":
        path = Path(path)
        d = read_config_file(path, ConfigError)
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def to_dict(self) -> Dict[str, Any]:
        return copy.deepcopy(asdict(self))

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
