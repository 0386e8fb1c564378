"""The training loop shared by all methods: data, model, steps, validation, checkpoints, samples."""

from __future__ import annotations

from bnnmd._errors import BnnmdError

import copy
import csv
import hashlib
import io
import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Union

import numpy as np
import torch

from bnnmd._files import DirectoryLock, write_atomic
from bnnmd.bayes import gaussian_prior_potential, negative_log_likelihood
from bnnmd.data import (PROTOCOLS, DataError, GraphDataset, Split, SplitPart, TypeMapper, keys as K,
                        protocol_split, random_split, read_dataset, resolve_data_path)
from bnnmd.nn import ConfigError, ModelConfig, build_model
from bnnmd.posterior import read_sample
from bnnmd.train._config import TrainConfig
from bnnmd.train._distributed import PeerLost, World, chain_seed
from bnnmd.train._methods import get_method

CHECKPOINT_FORMAT = 2
LOG_COLUMNS = ("step", "epoch", "loss", "val_force_mae", "val_energy_mae", "val_nll", "lr", "elapsed_s",
               "samples", "active_members", "val_stress_mae")


class RunError(BnnmdError, RuntimeError):
    """A run directory that cannot be used as asked (exists, differs, missing checkpoint)."""


def _differences(a: dict, b: dict, prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two nested dicts."""
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


def _torch_device(name: str) -> torch.device:
    """``training.device`` as a torch device; a clear error when CUDA is asked for and absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"training.device = {name!r}: torch sees no CUDA GPU (a CPU-only torch, or no "
                          "visible device); use cpu or auto")
    return torch.device(name)


def _torch_dtype(name: str) -> torch.dtype:
    return {"float64": torch.float64, "float32": torch.float32}[name]


@dataclass
class RunResult:
    run_dir: Path
    status: str  # "finished", "interrupted", "time_limit", "early_stopped"
    step: int
    samples: List[Path]
    best_val_force_mae: Optional[float]


def parameter_digest(model: torch.nn.Module) -> str:
    """SHA-256 of the parameters' bytes: equal digests, bit-identical parameters."""
    h = hashlib.sha256()
    for p in model.parameters():
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def init_chains(model: torch.nn.Module, chains: List[int], seed: int) -> None:
    """Give sample ``j`` of ``model`` the initial weights of chain ``chains[j]``: those a one-sample
    model draws after ``torch.manual_seed(chain_seed(seed, chain))``, whatever the other chains, so
    that a chain starts where it starts in any layout of the chains over processes."""
    cfg = copy.deepcopy(model.config)
    cfg.num_samples = 1
    params = dict(model.named_parameters())
    with torch.no_grad():
        for j, chain in enumerate(chains):
            torch.manual_seed(chain_seed(seed, chain))
            for name, p in type(model)(cfg).named_parameters():
                params[name][j].copy_(p[0])


class Trainer:
    """Trains one method of ``config`` into ``run_dir`` (see :func:`bnnmd.train.train`).

    ``world`` (:class:`bnnmd.train._distributed.World`) says which chains this process trains and
    with which other processes; the default is one process with all chains. ``k`` is the number of
    chains this process holds, ``k_total`` all chains of the run, ``chain_ids`` this process's ones.
    """

    def __init__(self, config: TrainConfig, run_dir: Union[str, Path], resume: bool = False,
                 progress: bool = True, world: Optional[World] = None):
        self.config = config
        self.run_dir = Path(run_dir)
        self.resume = resume
        self.method = get_method(config.method)(config)
        self.k_total = self.method.training_k()
        self.world = world if world is not None else World.single(self.k_total)
        if self.world.layout.num_chains != self.k_total:
            raise ValueError(f"{self.world!r} was made for {self.world.layout.num_chains} chains, the method "
                             f"trains {self.k_total}")
        self.chain_ids = self.world.chains
        self.progress = progress and self.world.is_main
        self.checkpoint_step = 0  # the step of the last checkpoint written or read
        self.checkpoint_path = self.run_dir / "checkpoint.pt"
        self.samples_dir = self.run_dir / "samples"
        self._prepare_run_dir()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()

    # ---- setup ---------------------------------------------------------------
    def _prepare_run_dir(self):
        self.world.run_on_main(self._prepare_run_dir_main)

    def _prepare_run_dir_main(self):
        cfg_path = self.run_dir / "config.yaml"
        if self.resume:
            if not self.checkpoint_path.exists():
                raise RunError(f"{self.run_dir}: nothing to resume (no checkpoint.pt); start without --resume")
            saved = TrainConfig.load(cfg_path)
            diff = _differences(saved.to_dict(), self.config.to_dict())
            if diff:
                raise RunError(f"{self.run_dir}: the config differs from the run's config.yaml in "
                               f"{', '.join(diff)}; resume with the same config or use a new --out")
        else:
            if self.checkpoint_path.exists() or self.samples_dir.exists():
                raise RunError(f"{self.run_dir} already holds a run; pass --resume to continue it "
                               "or choose another --out directory")
            self.run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(cfg_path, self.config.dump())

    def _setup_data(self):
        self.split = split = self.world.run_on_main(self._make_split)  # rank 0 makes and saves it
        d = self.config.data
        self.train_set = split.train.load()
        self.val_set = split.val.load()
        if len(self.val_set) == 0:
            raise ConfigError("the validation set is empty; set data.n_val >= 1")
        names = d.type_names or TypeMapper.from_atomic_numbers(self.train_set.atomic_numbers).type_names
        self.type_mapper = TypeMapper(names)
        self.dtype = _torch_dtype(self.config.dtype)
        self.device = _torch_device(self.config.training.device)
        if self.device.type == "cuda" and self.world.device_index is not None and self.device.index is None:
            self.device = torch.device("cuda", self.world.device_index)  # rank r on GPU LOCAL_RANK
        self.units = {"energy_unit": self.train_set.energy_unit, "length_unit": self.train_set.length_unit}

    def _make_split(self) -> Split:
        d = self.config.data
        split_path = self.run_dir / "split.json"
        if self.resume or d.split:
            split = Split.load(split_path if self.resume else d.split)
        else:
            train_file = resolve_data_path(d.train)
            test_file = resolve_data_path(d.test) if d.test else None
            if d.protocol == "random" or d.n_train or d.n_val:
                n = len(read_dataset(train_file))
                p = PROTOCOLS.get(d.protocol, {})
                n_train = d.n_train or p.get("n_train")
                n_val = d.n_val or p.get("n_val")
                n_test = None if d.protocol != "rmd17" else 0
                split = random_split(n, n_train, n_val, n_test, seed=self.config.seed, file=str(train_file),
                                     protocol=d.protocol)
                if d.protocol == "rmd17":
                    if test_file is None:
                        raise ConfigError("data.test is required for protocol rmd17 (the test file)")
                    split = Split(split.train, split.val, SplitPart(str(test_file), np.arange(len(read_dataset(test_file)))),
                                  seed=split.seed, protocol=split.protocol)
            else:
                split = protocol_split(d.protocol, train_file, test_file if d.protocol == "rmd17" else None,
                                       seed=self.config.seed)
        if not self.resume:
            split.save(split_path)
        return split

    def _setup_model(self):
        c = self.config
        k = len(self.chain_ids)
        # the likelihood has a stress term when the data has stresses and its weight is > 0
        self.stress_weight = float(c.training.stress_weight) if self.train_set.stress is not None else 0.0
        if self.stress_weight > 0 and self.val_set.stress is None:
            raise DataError("is missing in the validation frames but present in the training frames",
                            file=self.val_set.source, field="stress",
                            fix="validate on frames with stresses, or set training.stress_weight: 0")
        model_cfg = ModelConfig(**c.model, type_names=self.type_mapper.type_names, num_samples=k,
                                stress_std=self.stress_weight > 0, **self.method.model_options())
        self.model = build_model(model_cfg, self.train_set, dtype=self.dtype, seed=c.seed,
                                 reference_energies=c.data.reference_energies)
        init_chains(self.model, self.chain_ids, c.seed)  # chain c's weights, wherever it runs
        self.model = self.model.to(self.device)
        self.k = k
        cutoff = self.model.config.cutoff
        self.train_graphs = GraphDataset(self.train_set, self.type_mapper, cutoff)
        self.val_graphs = GraphDataset(self.val_set, self.type_mapper, cutoff)
        self.val_batches = [self.val_graphs.batch(range(s, min(s + 32, len(self.val_set))), dtype=self.dtype,
                                                  device=self.device)
                            for s in range(0, len(self.val_set), 32)]
        self.prior_centre = None
        if c.training.prior_centre:
            samples = prior_centre_samples(c.training.prior_centre, self.k_total)
            if len(samples) > 1:
                samples = [samples[chain] for chain in self.chain_ids]
            self.prior_centre = []
            for name, p in self.model.named_parameters():
                parts = []
                for path, sample in samples:
                    if sample["config"]["type_names"] != self.type_mapper.type_names:
                        raise ConfigError(f"training.prior_centre = {path}: its type names "
                                          f"{sample['config']['type_names']} differ from {self.type_mapper.type_names}")
                    sd = sample["state_dict"]
                    if name not in sd or sd[name].shape[1:] != p.shape[1:]:
                        raise ConfigError(f"training.prior_centre = {path}: parameter {name} does not match "
                                          "this model's architecture (use the same model section)")
                    parts.append(sd[name])
                centre = torch.cat(parts, dim=0) if len(parts) > 1 else parts[0]
                self.prior_centre.append(centre.to(self.device, self.dtype).expand_as(p).clone())
            # start the chain at the centre: fine-tuning from the earlier run
            with torch.no_grad():
                for p, c0 in zip(self.model.parameters(), self.prior_centre):
                    p.copy_(c0)

    def _setup_optimizer(self):
        self.optimizer = None
        self.ema = None  # a WeightEMA while the method averages the weights
        self.method.setup(self)
        self.step = 0
        self.samples_written = 0
        self.elapsed = 0.0
        self._clock_start: Optional[float] = None  # set while run() trains
        data_rank = self.world.layout.data_rank  # dropout masks differ between the ranks of a batch
        torch.manual_seed(self.config.seed if data_rank == 0 else chain_seed(self.config.seed, 2**31 + data_rank))
        if self.resume:
            self._load_checkpoint()

    def clock(self) -> float:
        """Seconds of training so far, now (``elapsed`` outside :meth:`run`); rank 0's clock on every
        rank, so that the time limit and the wall-clock plan decide the same everywhere (a collective:
        every rank calls it at the same points)."""
        if self._clock_start is None:
            return self.elapsed
        return self.world.from_main(time.perf_counter() - self._clock_start)

    # ---- potential -------------------------------------------------------------
    def prior_potential(self) -> torch.Tensor:
        """-ln p(theta) (up to a constant), summed over the k samples."""
        return gaussian_prior_potential(list(self.model.parameters()), std=self.config.training.prior_std,
                                        centre=self.prior_centre)

    def batch_indices(self, step: int) -> np.ndarray:
        """Frames of minibatch ``step`` (1-based): a fresh permutation per epoch, from the seed."""
        n, bs = len(self.train_set), self.config.training.batch_size
        per_epoch = math.ceil(n / bs)
        epoch, b = divmod(step - 1, per_epoch)
        order = np.random.default_rng([self.config.seed, epoch]).permutation(n)
        return order[b * bs:(b + 1) * bs]

    def local_batch(self, idx: np.ndarray) -> np.ndarray:
        """This rank's share of minibatch ``idx`` (all of it unless the minibatch is split)."""
        lay = self.world.layout
        if lay.data_ranks == 1:
            return idx
        return np.array_split(idx, lay.data_ranks)[lay.data_rank]

    def epoch_of(self, step: int) -> int:
        return (step - 1) // math.ceil(len(self.train_set) / self.config.training.batch_size)

    # ---- one step ----------------------------------------------------------------
    def train_step(self) -> float:
        self.step += 1
        self.model.train()
        idx = self.batch_indices(self.step)
        batch = self.train_graphs.batch(self.local_batch(idx), dtype=self.dtype, device=self.device)
        out = self.model(batch)
        nll = negative_log_likelihood(out, batch, self.stress_weight)["total"]  # [k]
        n_data, n_ranks = len(self.train_set), self.world.layout.data_ranks
        # sum over samples of u(theta_s); with the batch split over n_ranks, the mean over the ranks of
        # this u (and of its gradient) is the u of the whole minibatch: |D| / |B| sum over B
        u = self.prior_potential() + (n_data * n_ranks / len(idx)) * nll.sum()
        self.optimizer.zero_grad(set_to_none=True)
        (u * self.method.loss_scale(self)).backward()
        self.world.average_gradients(list(self.model.parameters()))
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update()
        loss = self.world.sum([float(u.detach()) / n_ranks])[0] / (n_data * self.k_total)
        self.method.after_step(self)
        return loss

    # ---- validation ----------------------------------------------------------------
    def validate(self) -> Dict[str, torch.Tensor]:
        """Per-sample and predictive-mean errors on the validation set (of the EMA weights, when averaging)."""
        if self.ema is not None:
            with self.ema.applied():
                return self._validate()
        return self._validate()

    def _validate(self) -> Dict[str, torch.Tensor]:
        self.model.eval()
        f_err, e_err, f_mean_err, e_mean_err, s_mean_err = [], [], [], [], []
        nll = torch.zeros(self.k, dtype=torch.float64)
        w = self.world
        for b in self.val_batches:
            out = self.model(b)
            f, e = out[K.FORCES].detach(), out[K.TOTAL_ENERGY].detach()
            f_err.append((f - b[K.FORCES]).abs().reshape(self.k, -1))
            e_err.append((e - b[K.TOTAL_ENERGY]).abs())
            means = [f, e] + ([out[K.VIRIAL].detach()] if self.stress_weight > 0 else [])
            if w.layout.groups == 1:
                means = [m.mean(0) for m in means]
            else:  # the predictive mean over the chains of all processes
                means = [m / self.k_total for m in w.sum_over_groups([m.sum(0) for m in means])]
            f_mean_err.append((means[0] - b[K.FORCES]).abs().reshape(-1))
            e_mean_err.append((means[1] - b[K.TOTAL_ENERGY]).abs())
            if self.stress_weight > 0:  # stress = -W / V, in the data's energy / length^3
                volume = torch.linalg.det(b[K.CELL]).abs()[:, None, None]
                s_mean_err.append((-means[2] / volume - b[K.STRESS]).abs().reshape(-1))
            nll += negative_log_likelihood({k: v.detach() for k, v in out.items()}, b,
                                           self.stress_weight)["total"].double().cpu()
        val = {  # on the CPU, whatever the training device; per sample: all k_total chains
            "force_mae_per_sample": w.gather_chains(torch.cat(f_err, dim=1).mean(1).double().cpu()),
            "energy_mae_per_sample": w.gather_chains(torch.cat(e_err, dim=1).mean(1).double().cpu()),
            "force_mae": torch.cat(f_mean_err).mean().double().cpu(),
            "energy_mae": torch.cat(e_mean_err).mean().double().cpu(),
            "nll_per_frame": w.gather_chains(nll / len(self.val_set)),
        }
        if s_mean_err:
            val["stress_mae"] = torch.cat(s_mean_err).mean().double().cpu()
        return val

    # ---- checkpoints -----------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """``checkpoint.pt``, written atomically by rank 0; under several processes it holds every
        group's state (``parts``, in rank order; the other data ranks keep only their RNG state)."""
        state = {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.zeros(0),
            "elapsed": self.elapsed,
            "samples_written": self.samples_written,
            "method": self.method.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else {},
        }
        w = self.world
        if w.distributed:
            digest = parameter_digest(self.model)
            mine = state if w.writes_chains else {k: state[k] for k in ("torch_rng", "cuda_rng")}
            parts = w.gather_to_main({**mine, "digest": digest})
            if w.is_main:  # the data ranks of a group must hold the same parameters
                d = w.layout.data_ranks
                for g in range(w.layout.groups):
                    digests = {parts[r]["digest"] for r in range(g * d, (g + 1) * d)}
                    if len(digests) > 1:
                        raise RunError(f"step {self.step}: the {d} data-parallel processes of chain group {g} "
                                       "hold different parameters (a bug); "
                                       "report it with the config")
            state = {"format": CHECKPOINT_FORMAT, "step": self.step, "layout": w.layout.key(), "parts": parts}
        if w.is_main:
            buf = io.BytesIO()
            torch.save(state, buf)
            write_atomic(self.checkpoint_path, buf.getvalue())
        self.checkpoint_step = self.step

    def _load_checkpoint(self) -> None:
        try:
            state = torch.load(self.checkpoint_path, weights_only=True, map_location="cpu")
        except Exception as exc:
            raise RunError(f"{self.checkpoint_path}: unreadable checkpoint ({type(exc).__name__}: {exc})") from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise RunError(f"{self.checkpoint_path}: checkpoint format {state.get('format')!r} is not "
                           f"{CHECKPOINT_FORMAT}; resume with the bnnmd version that wrote it")
        lay, saved = self.world.layout, state.get("layout")
        if saved is None and lay.world_size > 1:
            raise RunError(f"{self.checkpoint_path}: written by one process; resume it without torchrun "
                           "(or start a new run with several processes)")
        if saved is not None and saved != lay.key():
            n = saved.get("world_size")
            raise RunError(f"{self.checkpoint_path}: written by {n} process(es) in the layout {saved}, this is "
                           f"{lay.key()}; resume with torchrun --nproc_per_node {n} (--nnodes as before) and the "
                           "same training.distributed" if n != 1 else
                           f"{self.checkpoint_path}: written by one process; resume it without torchrun")
        if saved is not None:
            own = state["parts"][lay.rank]
            state = {**state["parts"][lay.group * lay.data_ranks], "torch_rng": own["torch_rng"],
                     "cuda_rng": own["cuda_rng"]}
        self.model.load_state_dict(state["model"])
        self.method.load_state_dict(state["method"], self)  # rebuilds the optimiser of the saved phase
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
        torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        self.step = self.checkpoint_step = int(state["step"])
        self.elapsed = float(state["elapsed"])
        self.samples_written = int(state["samples_written"])

    # ---- log --------------------------------------------------------------------------
    def _open_log(self):
        if not self.world.is_main:  # rank 0 writes the log
            return io.StringIO(), csv.DictWriter(io.StringIO(), fieldnames=LOG_COLUMNS)
        path = self.run_dir / "log.csv"
        rows = []
        if self.resume and path.exists():  # drop rows written after the checkpoint: they are redone
            with open(path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= self.step]
        fh = open(path, "w", newline="")
        writer = csv.DictWriter(fh, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        fh.flush()
        return fh, writer

    def _report(self, writer, fh, loss, val, rate):
        c = self.config
        row = {
            "step": self.step, "epoch": self.epoch_of(self.step), "loss": f"{loss:.6g}",
            "val_force_mae": f"{float(val['force_mae']):.6g}", "val_energy_mae": f"{float(val['energy_mae']):.6g}",
            "val_nll": f"{float(val['nll_per_frame'].mean()):.6g}",
            "lr": f"{self.optimizer.param_groups[0]['lr']:.3g}", "elapsed_s": f"{self.elapsed:.2f}",
            "val_stress_mae": f"{float(val['stress_mae']):.6g}" if "stress_mae" in val else "",
            **self.method.log_fields(self),
        }
        writer.writerow(row)
        fh.flush()
        if self.progress:
            extra = self.method.progress(self)
            planned = self.method.planned_steps()
            msg = (f"[{c.method}] step {self.step}/{planned or c.training.max_steps} | loss {loss:.4g} | "
                   f"val force MAE {float(val['force_mae']):.4g} energy MAE {float(val['energy_mae']):.4g}"
                   + (f" stress MAE {float(val['stress_mae']):.4g}" if "stress_mae" in val else "") + " | "
                   f"{rate:.1f} steps/s | {extra}")
            print(msg, file=sys.stderr if not sys.stdout.isatty() else sys.stdout, flush=True)

    # ---- the loop -----------------------------------------------------------------------
    def run(self, stop_after: Optional[int] = None) -> RunResult:
        """Train until done; ``stop_after`` simulates an interruption after that step (tests)."""
        c = self.config
        t = c.training
        interrupted = {"flag": False}

        def on_sigint(signum, frame):  # finish the current step, checkpoint, stop
            interrupted["flag"] = True

        old_handler = None
        try:
            old_handler = signal.signal(signal.SIGINT, on_sigint)
        except ValueError:  # not in the main thread
            pass
        fh, writer = self._open_log()
        status = "finished"
        start = time.perf_counter() - self.elapsed
        self._clock_start = start
        loss = math.nan
        last_validated = {"step": self.step, "rate_t": time.perf_counter(), "rate_s": self.step}

        def validate_and_report():
            val = self.validate()
            self.method.after_validation(self, val)
            now = time.perf_counter()
            rate = (self.step - last_validated["rate_s"]) / max(now - last_validated["rate_t"], 1e-9)
            last_validated.update(step=self.step, rate_t=now, rate_s=self.step)
            self._report(writer, fh, loss, val, rate)

        try:
            while self.step < t.max_steps:
                stop = self.method.stop_status(self)
                if stop is not None:
                    if stop != "finished":
                        status = stop
                    break
                lr_key = self.method.step_size_key()
                loss = self.train_step()
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        f"the loss became {loss} at step {self.step}; lower the step size "
                        f"({lr_key}) or the batch size noise")
                self.elapsed = self.clock()
                if self.step % t.validate_every == 0:
                    validate_and_report()
                if self.step % t.checkpoint_every == 0:
                    self.save_checkpoint()
                self.world.maybe_fail(self.step)
                if self.world.distributed:  # Ctrl-C reaches the ranks at different steps: stop together
                    interrupted["flag"] = self.world.sum([float(interrupted["flag"])])[0] > 0
                if interrupted["flag"] or (stop_after is not None and self.step >= stop_after):
                    status = "interrupted"
                    break
                if t.time_limit is not None and self.elapsed >= t.time_limit:
                    status = "time_limit"
                    break
            if status != "interrupted":
                if last_validated["step"] != self.step:  # the final state is always validated and logged
                    validate_and_report()
                self.method.finish(self)
            self.save_checkpoint()
            self.world.barrier()  # every rank's samples are written
        except PeerLost as exc:
            raise PeerLost(f"{exc}; the last checkpoint of {self.run_dir} is at step {self.checkpoint_step}: "
                           "run the same command with --resume to continue") from None
        finally:
            self._clock_start = None
            fh.close()
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        if status == "interrupted" and self.progress:
            print(f"interrupted at step {self.step}; checkpoint written. Continue with: "
                  f"bnn-train CONFIG --out {self.run_dir} --resume", file=sys.stderr, flush=True)
        samples = sorted(self.samples_dir.glob("sample_*.pt")) if self.samples_dir.exists() else []
        return RunResult(self.run_dir, status, self.step, samples, self.method.best_val_force_mae())


def prior_centre_samples(spec: Union[str, Path], k: int):
    """``[(path, sample dict)]`` to centre the prior on: one file (shared by all k chains), or
    a samples directory: for chain c the last sample its chain c wrote (by ``meta.sampler_step``),
    so that fine-tuning continues every chain where it ended."""
    path = Path(spec)
    if not path.is_dir():
        return [(path, read_sample(path))]
    files = sorted(path.glob("sample_*.pt"))
    if not files:
        raise ConfigError(f"training.prior_centre = {spec}: a directory without sample_XXX.pt files; give a "
                          "samples directory written by bnn-train, or one sample file")
    last: Dict[int, tuple] = {}
    for f in files:
        s = read_sample(f)
        chain = int(s["meta"].get("chain", 0))
        order = (s["meta"].get("sampler_step", s["meta"].get("step", 0)), f.name)
        if chain not in last or order > last[chain][0]:
            last[chain] = (order, f, s)
    if sorted(last) != list(range(k)):
        raise ConfigError(f"training.prior_centre = {spec}: its samples come from chains {sorted(last)}, this run "
                          f"has {k}; use the same sghmc.chains, or give one sample file (shared by all chains)")
    return [(last[c][1], last[c][2]) for c in range(k)]


def train(config: Union[TrainConfig, str, Path], run_dir: Union[str, Path], resume: bool = False,
          progress: bool = True, stop_after: Optional[int] = None) -> RunResult:
    """Train ``config`` (a :class:`TrainConfig` or a YAML path) into ``run_dir``.

    Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) every process calls this; they share
    the work as ``training.distributed`` says (:mod:`bnnmd.train._distributed`) and rank 0 holds the
    run directory's lock and writes its shared files. ``run_dir`` must be on a file system all
    processes see.
    """
    if not isinstance(config, TrainConfig):
        config = TrainConfig.load(config)
    t = config.training
    world = World.from_env(t.distributed, get_method(config.method)(config).training_k(), t.batch_size, t.device)
    lock = DirectoryLock(run_dir, RunError)  # one run per run directory: rank 0 holds it
    try:
        world.run_on_main(lambda: lock.__enter__() and None)
        try:
            return Trainer(config, run_dir, resume=resume, progress=progress, world=world).run(stop_after=stop_after)
        finally:
            if world.is_main:
                lock.__exit__(None, None, None)
    finally:
        world.close()
