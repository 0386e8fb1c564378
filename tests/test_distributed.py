"""Training over several processes: ``torchrun --nproc_per_node 2 -m bnnmd.cli.train`` on gloo (CPU).

The launches are the ones a user types. Bit-for-bit comparisons run every process with
``ATEN_CPU_CAPABILITY=default`` (torch's SIMD kernels compute the tail of a vectorised loop with
scalar libm calls, so a chain's last bits would depend on how many chains share its tensors;
docs/training.md, "What is bit-identical").
"""

import csv
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bnnmd.bayes import AdaptiveSGHMC
from bnnmd.nn import ConfigError
from bnnmd.posterior import load_samples, read_sample
from bnnmd.train import TrainConfig
from bnnmd.train._distributed import Layout, chain_seed

from helpers import tiny

BIN = Path(sys.executable).parent
TORCHRUN = BIN / "torchrun"
#: every process of a comparison: one thread, torch's portable (non-SIMD) CPU kernels
EXACT = dict(os.environ, OMP_NUM_THREADS="1", ATEN_CPU_CAPABILITY="default")
EXACT.pop("WORLD_SIZE", None)
EXACT.pop("RANK", None)
TIMEOUT = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path, cfg, name="cfg.yaml") -> Path:
    path = tmp_path / name
    path.write_text(cfg.dump())
    return path


def one_process(config: Path, out: Path, *extra, env=EXACT, check=True) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "bnnmd.cli.train", str(config), "--out", str(out), "--quiet", *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r


def torchrun_cmd(config: Path, out: Path, *extra, nproc=2):
    return [str(TORCHRUN), "--nnodes", "1", "--nproc_per_node", str(nproc), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"127.0.0.1:{_free_port()}", "-m", "bnnmd.cli.train", str(config),
            "--out", str(out), *extra]


def two_processes(config: Path, out: Path, *extra, env=EXACT, check=True, nproc=2) -> subprocess.CompletedProcess:
    cmd = torchrun_cmd(config, out, *extra, nproc=nproc)
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    if check and r.returncode:
        raise AssertionError(f"{cmd} failed ({r.returncode}):\n{r.stdout}\n{r.stderr[-4000:]}")
    return r


def sample_files(run: Path):
    return sorted((run / "samples").glob("sample_*.pt"))


def assert_same_samples(a: Path, b: Path):
    fa, fb = sample_files(a), sample_files(b)
    assert [f.name for f in fa] == [f.name for f in fb] and fa
    for x, y in zip(fa, fb):
        assert x.read_bytes() == y.read_bytes(), f"{x.name} differs between {a.name} and {b.name}"


def final_state(run: Path):
    """The model parameters of each rank's part of a checkpoint (one part for one process)."""
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    return [p["model"] for p in state["parts"] if "model" in p] if "parts" in state else [state["model"]]


# ---- the layout and the per-chain streams (in process) ---------------------------------------------
def test_layouts():
    lay = Layout.make("auto", 4, 2, 1, 5)
    assert (lay.mode, lay.groups, lay.data_ranks, lay.chains) == ("chains", 2, 1, [2, 3])
    assert Layout.make("chains", 3, 2, 0, 5).chains == [0, 1] and Layout.make("chains", 3, 2, 1, 5).chains == [2]
    lay = Layout.make("auto", 1, 2, 1, 5)  # one chain: the minibatch is split
    assert (lay.mode, lay.groups, lay.data_ranks, lay.data_rank, lay.chains) == ("data", 1, 2, 1, [0])
    lay = Layout.make("chains", 2, 4, 3, 5)  # chains x data: 2 chains, 2 ranks each
    assert (lay.groups, lay.data_ranks, lay.group, lay.data_rank, lay.chains) == (2, 2, 1, 1, [1])
    assert Layout.make("data", 4, 2, 0, 5).chains == [0, 1, 2, 3]
    assert Layout.make("auto", 4, 1, 0, 5).world_size == 1
    with pytest.raises(ConfigError, match=r"training.distributed = chains: 2 chain\(s\) cannot be shared by 3"):
        Layout.make("chains", 2, 3, 0, 5)
    with pytest.raises(ConfigError, match=r"training.batch_size = 1: .* raise it to >= 2"):
        Layout.make("data", 1, 2, 0, 1)


def test_config_key():
    assert TrainConfig().training.distributed == "auto"
    with pytest.raises(ConfigError, match=r"^training.distributed = 'both': must be auto, chains .* or data"):
        tiny("sghmc", training={"distributed": "both"})


def test_a_chains_noise_does_not_depend_on_the_other_chains():
    """Chain 1 of a 3-chain sampler draws what chain 1 alone draws (per-chain generators)."""
    seeds = [chain_seed(5, c) for c in range(3)]
    assert len(set(seeds)) == 3 and seeds[1] == chain_seed(5, 1)

    def run(chains):
        theta = torch.nn.Parameter(torch.full((len(chains), 3), 2.0, dtype=torch.float64))
        opt = AdaptiveSGHMC([theta], lr=1e-2, dataset_size=10, mass_freeze_step=3,
                            chain_seeds=[seeds[c] for c in chains])
        for _ in range(6):
            opt.zero_grad()
            (theta.pow(2).sum() / 2).backward()
            opt.step()
        return theta.detach(), opt

    all3, opt = run([0, 1, 2])
    alone, _ = run([1])
    assert torch.equal(all3[1:2], alone)
    assert not torch.equal(all3[0], all3[1])
    again, opt2 = run([0, 1, 2])  # the generators travel in the state dict
    opt2.load_state_dict(opt.state_dict())
    assert all(torch.equal(a.get_state(), b.get_state()) for a, b in zip(opt.chain_generators, opt2.chain_generators))
    with pytest.raises(RuntimeError, match="no leading chain dimension"):
        bad = torch.nn.Parameter(torch.zeros(2, 3, dtype=torch.float64))
        o = AdaptiveSGHMC([bad], dataset_size=1, mass_freeze_step=1, chain_seeds=seeds)
        bad.grad = torch.ones_like(bad)
        o.step()


# ---- chains mode: the samples of one process, bit for bit ----------------------------------------------
@pytest.mark.parametrize("method,over", [
    ("sghmc", {"sghmc": {"chains": 3, "num_samples": 6}}),  # 2 + 1 chains on the two ranks
    ("ensemble", {}),
])
def test_chains_mode_writes_the_samples_of_one_process(tmp_path, method, over):
    cfg = write_config(tmp_path, tiny(method, **over))
    one_process(cfg, tmp_path / "one")
    r = two_processes(cfg, tmp_path / "two")
    assert_same_samples(tmp_path / "one", tmp_path / "two")
    for name in ("config.yaml", "split.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    # rank 0 alone reports and logs; the log holds the values of one process (up to summation order)
    assert r.stdout.count("bnn-train: finished") == 1
    la = list(csv.DictReader(open(tmp_path / "one" / "log.csv")))
    lb = list(csv.DictReader(open(tmp_path / "two" / "log.csv")))
    assert [x["step"] for x in la] == [x["step"] for x in lb]
    for x, y in zip(la, lb):
        for key in ("loss", "val_force_mae", "val_energy_mae", "val_nll", "samples", "active_members"):
            assert float(x[key]) == pytest.approx(float(y[key]), rel=1e-9), key
    if method == "sghmc":
        metas = [read_sample(f)["meta"] for f in sample_files(tmp_path / "two")]
        assert [(m["step"], m["chain"]) for m in metas] == [(6, 0), (6, 1), (6, 2), (8, 0), (8, 1), (8, 2)]


# ---- data mode: one chain's minibatch split over the ranks ----------------------------------------------
def leader_and_digests(run: Path):
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    return state["parts"][0]["model"], [p["digest"] for p in state["parts"]]


@pytest.mark.parametrize("method", ["sghmc", "map"])
def test_data_mode_equals_one_process_with_the_whole_batch(tmp_path, method):
    """Noise off: both ranks hold the same parameters (bit for bit) and these are those of one
    process on the whole minibatch (float64 round-off: the gradient is summed in another order).
    batch_size 5 splits 3 + 2: the likelihood is scaled by |D| / (global batch), not per rank."""
    cfg = write_config(tmp_path, tiny(method, training={"distributed": "data", "batch_size": 5},
                                      sghmc={"chains": 1, "num_samples": 2, "noise": 0.0}))
    one_process(cfg, tmp_path / "one")
    two_processes(cfg, tmp_path / "two")
    model, digests = leader_and_digests(tmp_path / "two")
    assert len(digests) == 2 and digests[0] == digests[1]
    single = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    for name, p in single.items():
        assert torch.allclose(model[name], p, rtol=1e-9, atol=1e-12), name
    fa, fb = sample_files(tmp_path / "one"), sample_files(tmp_path / "two")
    assert [f.name for f in fa] == [f.name for f in fb] and fa
    for a, b in zip(fa, fb):
        sa, sb = read_sample(a)["state_dict"], read_sample(b)["state_dict"]
        assert all(torch.allclose(sa[k], sb[k], rtol=1e-9, atol=1e-12) for k in sa)
    # the half-batch alone gives other parameters: the comparison can fail
    cfg_half = write_config(tmp_path, tiny(method, training={"batch_size": 3},
                                           sghmc={"chains": 1, "num_samples": 2, "noise": 0.0}), "half.yaml")
    one_process(cfg_half, tmp_path / "half")
    half = torch.load(tmp_path / "half" / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.allclose(half[k], single[k], rtol=1e-6) for k in single)


def test_chains_x_data_equals_one_process_per_chain(tmp_path):
    """2 SGHMC chains on 4 processes (training.distributed: chains): chain c runs on ranks 2c and 2c+1,
    which split its minibatch (batch_size 5: 3 + 2 frames). Noise off: the two ranks of a chain hold
    the same parameters (bit for bit), and each chain's parameters and samples are those of one process
    running both chains on the whole minibatch (float64 round-off), in the same files with the same
    step and chain."""
    cfg = write_config(tmp_path, tiny("sghmc", training={"distributed": "chains", "batch_size": 5},
                                      sghmc={"chains": 2, "num_samples": 4, "noise": 0.0}))
    one_process(cfg, tmp_path / "one")
    r = two_processes(cfg, tmp_path / "four", nproc=4)
    assert r.stdout.count("bnn-train: finished") == 1
    state = torch.load(tmp_path / "four" / "checkpoint.pt", weights_only=True)
    assert state["layout"] == {"world_size": 4, "mode": "chains", "groups": 2, "data_ranks": 2, "num_chains": 2}
    digests = [p["digest"] for p in state["parts"]]
    assert digests[0] == digests[1] and digests[2] == digests[3] and digests[0] != digests[2]
    per_chain = final_state(tmp_path / "four")  # data rank 0 of each chain group: chains 0 and 1
    single = torch.load(tmp_path / "one" / "checkpoint.pt", weights_only=True)["model"]
    assert len(per_chain) == 2
    for c, model in enumerate(per_chain):
        assert model.keys() == single.keys()
        for name, p in single.items():  # parameters carry a leading chain dimension, buffers may not
            ref = p if model[name].shape == p.shape else p[c:c + 1]
            assert model[name].shape == ref.shape and torch.allclose(model[name], ref, rtol=1e-9, atol=1e-12), \
                (c, name)
    fa, fb = sample_files(tmp_path / "one"), sample_files(tmp_path / "four")
    assert [f.name for f in fa] == [f.name for f in fb] and len(fa) == 4
    metas = []
    for a, b in zip(fa, fb):
        da, db = read_sample(a), read_sample(b)
        assert da["meta"] == db["meta"], a.name
        metas.append((da["meta"]["step"], da["meta"]["chain"]))
        sa, sb = da["state_dict"], db["state_dict"]
        assert sa.keys() == sb.keys()
        assert all(torch.allclose(sa[k], sb[k], rtol=1e-9, atol=1e-12) for k in sa), a.name
    assert metas == [(6, 0), (6, 1), (8, 0), (8, 1)]
    # a chain on its first rank's 3 frames alone ends elsewhere: the comparison can fail
    cfg_part = write_config(tmp_path, tiny("sghmc", training={"batch_size": 3},
                                           sghmc={"chains": 2, "num_samples": 4, "noise": 0.0}), "part.yaml")
    one_process(cfg_part, tmp_path / "part")
    part = torch.load(tmp_path / "part" / "checkpoint.pt", weights_only=True)["model"]
    assert any(not torch.allclose(part[k], single[k], rtol=1e-6) for k in single)


def test_data_mode_injects_the_noise_of_one_process(tmp_path):
    """One sampler step from the same start with the noise on and off: the difference is the injected
    noise, gamma / M * alpha * sqrt(2 M / (|D| gamma)) * xi, with |D| the whole training set (the
    one-process formula). Standardised by that, it is N(0, 1) per parameter, and it is the draw of
    one process (the same per-chain generator on every rank)."""
    over = dict(training={"distributed": "data", "batch_size": 4, "max_steps": 1},
                sghmc={"chains": 1, "num_samples": 1, "mass_freeze_step": 1, "burn_in": 1, "sample_interval": 1,
                       "lr": 1e-4})
    z = {}
    for launch in ("one", "two"):
        steps = {}
        for noise in (1.0, 0.0):
            cfg = write_config(tmp_path, tiny("sghmc", **{**over, "sghmc": {**over["sghmc"], "noise": noise}}),
                               f"n{noise}.yaml")
            out = tmp_path / f"{launch}_{noise}"
            (one_process if launch == "one" else two_processes)(cfg, out)
            state = torch.load(out / "checkpoint.pt", weights_only=True)
            part = state["parts"][0] if "parts" in state else state
            names = [n for n, _ in load_samples(out / "samples").named_parameters()]  # the optimiser's order
            opt_state = part["optimizer"]["state"]
            masses = [opt_state[i]["mass"] for i in range(len(names)) if i in opt_state]
            steps[noise] = [part["model"][n] for i, n in enumerate(names) if i in opt_state]
        c = tiny("sghmc", **over).sghmc
        n_data, gamma, alpha = 20, c.lr, c.friction
        z[launch] = torch.cat([((a - b) / (gamma / m * alpha * torch.sqrt(2 * m / (n_data * gamma)))).reshape(-1)
                               for a, b, m in zip(steps[1.0], steps[0.0], masses)])
    n = z["two"].numel()
    assert n > 100
    # E[z^2] = 1 within 4 standard errors (a noise scaled by the local batch or |D|/2 gives 2 or 0.5)
    assert abs(float(z["two"].pow(2).mean()) - 1.0) < 4 * math.sqrt(2.0 / n)
    assert abs(float(z["two"].mean())) < 4 / math.sqrt(n)
    assert torch.allclose(z["two"], z["one"], rtol=1e-6, atol=1e-6)


# ---- a killed rank, then --resume ----------------------------------------------------------------------
def test_a_killed_rank_stops_the_job_and_resume_finishes_it(tmp_path):
    """Rank 1 SIGKILLs itself after step 13 (checkpoint at 12): the job ends non-zero within the
    timeout with a message that names the way on; the same command with --resume ends with the
    samples of an uninterrupted one-process run, byte for byte."""
    cfg = write_config(tmp_path, tiny("sghmc", training={"max_steps": 30, "checkpoint_every": 4, "validate_every": 5},
                                      sghmc={"burn_in": 10, "sample_interval": 5, "num_samples": 6}))
    one_process(cfg, tmp_path / "one")
    env = dict(EXACT, _BNNMD_KILL_RANK_AFTER_STEP="1:13")
    start = time.monotonic()
    r = two_processes(cfg, tmp_path / "two", env=env, check=False)
    assert r.returncode != 0
    assert time.monotonic() - start < TIMEOUT  # no hang (subprocess.run would have raised)
    out = r.stdout + r.stderr
    # rank 0 says how to go on, unless torchrun's SIGTERM reaches it first; torchrun names the dead rank
    assert ("rank 0: another process of this run stopped answering" in out and "with --resume" in out) \
        or "(SIGTERM)" in out, out[-3000:]
    assert "rank      : 1 (local_rank: 1)" in out and "(SIGKILL)" in out, out[-3000:]
    ckpt = torch.load(tmp_path / "two" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 12 and len(ckpt["parts"]) == 2
    written = sample_files(tmp_path / "two")
    assert 0 < len(written) < 6  # stopped between the samples of steps 10 and 15
    r = two_processes(cfg, tmp_path / "two", "--resume")
    assert "finished at step" in r.stdout
    assert_same_samples(tmp_path / "one", tmp_path / "two")
    # a different layout is refused with the command that resumes it
    r = one_process(cfg, tmp_path / "two", "--resume", check=False)
    assert r.returncode == 2 and "resume with torchrun --nproc_per_node 2" in r.stderr
