"""Training: every method end to end on bundled ethanol, exact resume, config validation."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from bnnmd.nn import ConfigError
from bnnmd.posterior import load_samples, read_sample
from bnnmd.train import RunError, TrainConfig, train

from helpers import tiny

METHOD_K = {"sghmc": 4, "map": 1, "mc_dropout": 3, "ensemble": 2}


@pytest.mark.parametrize("method", list(METHOD_K))
def test_every_method_end_to_end(tmp_path, method):
    cfg = tiny(method)
    result = train(cfg, tmp_path / "run", progress=False)
    assert result.status == "finished"
    run = tmp_path / "run"
    for name in ("config.yaml", "split.json", "log.csv", "checkpoint.pt"):
        assert (run / name).exists(), name
    assert TrainConfig.load(run / "config.yaml").to_dict() == cfg.to_dict()
    rows = list(csv.DictReader(open(run / "log.csv")))
    # every validate_every steps, and the final state (SGHMC stops once its samples are taken)
    assert [int(r["step"]) for r in rows] == ([3, 6, 8] if method == "sghmc" else [3, 6, 9, 12])
    assert all(float(r["val_force_mae"]) > 0 for r in rows)
    files = sorted((run / "samples").glob("sample_*.pt"))
    assert len(files) == {"sghmc": 4, "map": 1, "mc_dropout": 1, "ensemble": 2}[method]
    for f in files:
        d = torch.load(f, weights_only=True)
        assert d["method"] == method and d["config"]["num_samples"] == 1
    model = load_samples(run / "samples")
    assert model.num_samples == METHOD_K[method]
    if method == "sghmc":  # two chains, samples pooled: steps 6 and 8, chains 0 and 1
        metas = [read_sample(f)["meta"] for f in files]
        assert [(m["step"], m["chain"]) for m in metas] == [(6, 0), (6, 1), (8, 0), (8, 1)]


@pytest.mark.parametrize("method", list(METHOD_K))
def test_resume_equals_uninterrupted(tmp_path, method):
    cfg = tiny(method)
    train(cfg, tmp_path / "full", progress=False)
    r = train(cfg, tmp_path / "cut", progress=False, stop_after=5)  # between checkpoints 4 and 8
    assert r.status == "interrupted" and r.step == 5
    r = train(cfg, tmp_path / "cut", progress=False, resume=True)
    assert r.status == "finished"
    full = sorted((tmp_path / "full" / "samples").glob("*.pt"))
    cut = sorted((tmp_path / "cut" / "samples").glob("*.pt"))
    assert [f.name for f in full] == [f.name for f in cut]
    for a, b in zip(full, cut):
        sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        for key in sa["state_dict"]:
            assert torch.equal(sa["state_dict"][key], sb["state_dict"][key]), (a.name, key)
    la = list(csv.DictReader(open(tmp_path / "full" / "log.csv")))
    lb = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [(r["step"], r["loss"], r["val_force_mae"]) for r in la] == \
           [(r["step"], r["loss"], r["val_force_mae"]) for r in lb]


@pytest.mark.slow
def test_killed_cli_run_resumes_exactly(tmp_path):
    """SIGKILL in the middle of a run (no chance to clean up), then --resume."""
    cfg = tiny("sghmc", training={"max_steps": 40, "checkpoint_every": 2, "validate_every": 5},
               sghmc={"burn_in": 20, "sample_interval": 5})
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "bnnmd.cli.train", str(path), "--quiet"]
    subprocess.run(cmd + ["--out", str(tmp_path / "full")], check=True, env=env)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "cut")], env=env)
    ckpt = tmp_path / "cut" / "checkpoint.pt"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.exists()
    subprocess.run(cmd + ["--out", str(tmp_path / "cut"), "--resume"], check=True, env=env)
    full = sorted((tmp_path / "full" / "samples").glob("*.pt"))
    assert len(full) == 4
    for a in full:
        b = tmp_path / "cut" / "samples" / a.name
        sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
        assert all(torch.equal(sa["state_dict"][k], sb["state_dict"][k]) for k in sa["state_dict"])


@pytest.mark.slow
def test_sigint_writes_checkpoint_and_says_how_to_resume(tmp_path):
    cfg = tiny("map", training={"max_steps": 100000, "checkpoint_every": 100000, "validate_every": 1000})
    path = tmp_path / "cfg.yaml"
    path.write_text(cfg.dump())
    proc = subprocess.Popen([sys.executable, "-m", "bnnmd.cli.train", str(path), "--out", str(tmp_path / "run")],
                            env=dict(os.environ, OMP_NUM_THREADS="1"), stderr=subprocess.PIPE, text=True)
    log = tmp_path / "run" / "log.csv"
    deadline = time.time() + 120
    while not log.exists() and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert "--resume" in err
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["step"] > 0


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"config\.method = 'hmc': must be one of sghmc, map, mc_dropout, ensemble"):
        tiny("hmc")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) training\.batchsize; allowed in training: .*batch_size"):
        TrainConfig.from_dict({"training": {"batchsize": 3}})
    with pytest.raises(ConfigError, match=r"unknown top-level key\(s\) optimiser"):
        TrainConfig.from_dict({"optimiser": {}})
    with pytest.raises(ConfigError, match=r"unknown model key\(s\) lmax"):
        TrainConfig.from_dict({"model": {"lmax": 2}})
    with pytest.raises(ConfigError, match=r"sghmc\.friction = 2: must be a number in \(0, 1\]"):
        tiny("sghmc", sghmc={"friction": 2})
    with pytest.raises(ConfigError, match=r"sghmc\.burn_in = 2: must be >= sghmc\.mass_freeze_step \(4\)"):
        tiny("sghmc", sghmc={"burn_in": 2})
    with pytest.raises(ConfigError, match=r"sghmc\.num_samples = 3: must be a multiple of sghmc\.chains \(2\)"):
        tiny("sghmc", sghmc={"num_samples": 3})
    with pytest.raises(ConfigError, match=r"training\.max_steps = 12: must be >= 21 = sghmc\.warm_start_steps \+ burn_in"):
        tiny("sghmc", sghmc={"num_samples": 8, "sample_interval": 5})
    with pytest.raises(ConfigError, match=r"training\.batch_size = 0: must be an integer >= 1"):
        tiny("map", training={"batch_size": 0})
    with pytest.raises(ConfigError, match=r"training\.device = 'gpu': must be cpu, cuda, cuda:N or auto"):
        tiny("map", training={"device": "gpu"})
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"training\.device = 'cuda': torch sees no CUDA GPU"):
            train(tiny("map", training={"device": "cuda"}), tmp_path / "gpu", progress=False)
    with pytest.raises(ConfigError, match=r"model\.num_samples is set by the trainer"):
        TrainConfig.from_dict({"model": {"num_samples": 3}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        TrainConfig.load(bad)


def test_run_dir_rules(tmp_path):
    cfg = tiny("map", training={"max_steps": 3})
    train(cfg, tmp_path / "run", progress=False)
    with pytest.raises(RunError, match="already holds a run; pass --resume"):
        train(cfg, tmp_path / "run", progress=False)
    other = tiny("map", training={"max_steps": 4})
    with pytest.raises(RunError, match=r"config differs .* in training\.max_steps"):
        train(other, tmp_path / "run", progress=False, resume=True)
    with pytest.raises(RunError, match="nothing to resume"):
        train(cfg, tmp_path / "new", progress=False, resume=True)


def test_empty_config_and_duplicate_keys_are_errors(tmp_path, capsys):
    from bnnmd.cli.train import main

    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing here yet\n\n")
    assert main([str(empty), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "empty.yaml: the config file is empty" in err
    twice = tmp_path / "twice.yaml"
    twice.write_text("method: map\ntraining:\n  max_steps: 3\n  batch_size: 2\n  max_steps: 5\n")
    assert main([str(twice), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "twice.yaml: key 'max_steps' is given twice, on lines 3 and 5; keep one of them" in err
    assert not (tmp_path / "run").exists()  # nothing was started
    with pytest.raises(ConfigError, match="key 'method' is given twice, on lines 1 and 2"):
        (tmp_path / "top.yaml").write_text("method: map\nmethod: sghmc\n")
        TrainConfig.load(tmp_path / "top.yaml")
    (tmp_path / "defaults.yaml").write_text("{}\n")  # asking for every default is still possible
    assert TrainConfig.load(tmp_path / "defaults.yaml").method == "sghmc"


def test_a_run_directory_in_use_is_refused(tmp_path, capsys):
    """A second bnn-train into the --out of a running one stops at once, writing nothing there."""
    from bnnmd.cli.train import main

    run = tmp_path / "run"
    run.mkdir()
    holder = subprocess.Popen(  # another process holding the run directory's lock, as a running bnn-train does
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.write('bnn-train (pid 4242)'); f.flush(); print('held', flush=True); "
         "time.sleep(120)", str(run / ".bnnmd.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cfg = tmp_path / "map.yaml"
        cfg.write_text(tiny("map", training={"max_steps": 3}).dump())
        assert main([str(cfg), "--out", str(run), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert f"{run} is in use by bnn-train (pid 4242); wait for it to end, or give another output" in err
        assert sorted(p.name for p in run.iterdir()) == [".bnnmd.lock"]  # no config, split or samples
    finally:
        holder.kill()
        holder.wait()
    assert main([str(cfg), "--out", str(run), "--quiet"]) == 0  # the holder is gone: the lock is free
    assert (run / "samples" / "sample_000.pt").exists()


@pytest.mark.slow
def test_fine_tuning_prior_centred_on_an_earlier_run(tmp_path):
    first = train(tiny("map"), tmp_path / "first", progress=False)
    centre = first.samples[0]
    c = torch.load(centre, weights_only=True)["state_dict"]
    names = [k for k in c if c[k].dtype.is_floating_point and c[k].numel() and k not in
             ("energy_scale", "energy_shift", "sigma_scale")]

    def rms_deviation(std):
        cfg = tiny("sghmc", training={"prior_centre": str(centre), "prior_std": std, "max_steps": 40},
                   sghmc={"mass_freeze_step": 20, "burn_in": 30, "sample_interval": 3})
        run = train(cfg, tmp_path / f"fine_{std}", progress=False)
        s = torch.load(run.samples[-1], weights_only=True)["state_dict"]
        sq = sum((s[k] - c[k]).pow(2).sum() for k in names)
        return float((sq / sum(c[k].numel() for k in names)).sqrt())

    tight, wide = rms_deviation(0.05), rms_deviation(1.0)
    # the chain starts at the centre and a tight prior keeps it within about its width
    assert tight < 2 * 0.05
    assert wide > 2 * tight


def test_prior_centred_per_chain_on_a_samples_directory(tmp_path):
    """Each chain starts at (and is centred on) the last sample of the same chain of the earlier run."""
    from bnnmd.train import Trainer

    first = train(tiny("sghmc"), tmp_path / "first", progress=False)
    metas = [torch.load(p, weights_only=True) for p in first.samples]
    last = {}
    for m in metas:
        c = m["meta"]["chain"]
        if c not in last or m["meta"]["sampler_step"] > last[c]["meta"]["sampler_step"]:
            last[c] = m
    assert sorted(last) == [0, 1] and last[0]["meta"]["sampler_step"] == last[1]["meta"]["sampler_step"]
    cfg = tiny("sghmc", training={"prior_centre": str(tmp_path / "first" / "samples"), "prior_std": 0.1})
    t = Trainer(cfg, tmp_path / "fine", progress=False)
    for name, p in t.model.named_parameters():
        for c in (0, 1):
            torch.testing.assert_close(p[c].detach().double(), last[c]["state_dict"][name][0].double())
    # chains differ, so the centre is per chain, not one sample expanded
    name = next(n for n, _ in t.model.named_parameters())
    assert not torch.equal(t.model.state_dict()[name][0], t.model.state_dict()[name][1])
    with pytest.raises(ConfigError, match=r"its samples come from chains \[0, 1\], this run has 3"):
        Trainer(tiny("sghmc", training={"prior_centre": str(tmp_path / "first" / "samples")},
                     sghmc={"chains": 3, "num_samples": 3}), tmp_path / "bad", progress=False)


def test_reference_energies_given_instead_of_fitted(tmp_path):
    """data.reference_energies sets the per-species energy shift (e.g. isolated atoms); the default fits it."""
    given = {"H": -10.5, "C": -20.25, "O": -30.125}
    run = train(tiny("map", data={"reference_energies": given}, training={"max_steps": 2}), tmp_path / "given",
                progress=False)
    shift = read_sample(run.samples[0])["state_dict"]["energy_shift"]
    assert shift.tolist() == [-10.5, -20.25, -30.125]  # types H, C, O (by Z)
    fitted = train(tiny("map", training={"max_steps": 2}), tmp_path / "fitted", progress=False)
    assert read_sample(fitted.samples[0])["state_dict"]["energy_shift"].tolist() != shift.tolist()
    with pytest.raises(ConfigError, match=r"data\.reference_energies = .*gives no energy for O; give one per "
                                          r"element of the model \(H, C, O\)"):
        train(tiny("map", data={"reference_energies": {"H": -1.0, "C": -2.0}}), tmp_path / "missing", progress=False)
    for bad in ({"Xx": 1.0}, {"H": "low"}, {}, [1.0]):
        with pytest.raises(ConfigError, match=r"data\.reference_energies = .*must map element symbols"):
            tiny("map", data={"reference_energies": bad})
