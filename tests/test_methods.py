"""Training methods: the registry (a new method is one class), the EMA of the weights, SGHMC's warm start."""

import csv

import pytest
import torch

from bnnmd.nn import load_samples
from bnnmd.nn._samples import read_sample
from bnnmd.train import REGISTRY, Trainer, WeightEMA, get_method, register, train
from bnnmd.train._methods import MAP

from test_train import tiny


@pytest.fixture
def scratch_method():
    """Register a method for one test and remove it afterwards."""
    before = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


def test_a_new_method_is_one_class(tmp_path, scratch_method):
    @register
    class AveragedMAP(MAP):
        """Two MAP members whose step size halves: only what differs is written."""

        name = "two_slow_members"

        def training_k(self):
            return 2

        def setup(self, trainer):
            super().setup(trainer)
            for g in trainer.optimizer.param_groups:
                g["lr"] *= 0.5

    assert get_method("two_slow_members") is AveragedMAP
    cfg = tiny("two_slow_members", training={"max_steps": 6})
    run = train(cfg, tmp_path / "run", progress=False)
    assert run.status == "finished" and len(run.samples) == 2
    assert read_sample(run.samples[0])["method"] == "two_slow_members"
    assert load_samples(tmp_path / "run" / "samples").num_samples == 2  # the default inference rule
    rows = list(csv.DictReader(open(tmp_path / "run" / "log.csv")))
    assert float(rows[-1]["lr"]) == pytest.approx(cfg.adam.lr / 2)
    with pytest.raises(ValueError, match="already registered"):
        register(AveragedMAP)


def test_unknown_method_names_the_registry():
    with pytest.raises(ValueError, match="unknown method 'hmc'; one of sghmc, map, mc_dropout, ensemble"):
        get_method("hmc")


def test_weight_ema_equals_a_hand_computation():
    w = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    ema = WeightEMA({"w": w}, decay=0.9, warmup=True)
    values = [torch.full((3, 2), float(v), dtype=torch.float64) for v in (1.0, -2.0, 4.0, 0.5, 3.0)]
    expected = torch.zeros(3, 2, dtype=torch.float64)
    for n, v in enumerate(values, start=1):
        with torch.no_grad():
            w.copy_(v)
        ema.update()
        d = min(0.9, (1 + n) / (10 + n))
        expected = d * expected + (1 - d) * v
    assert torch.allclose(ema.shadow["w"], expected, atol=0, rtol=1e-15)
    plain = WeightEMA({"w": w}, decay=0.9, warmup=False)
    plain.update()
    assert torch.allclose(plain.shadow["w"], 0.9 * values[-1] + 0.1 * values[-1])
    with ema.applied():
        assert torch.equal(w.detach(), expected)
    assert torch.equal(w.detach(), values[-1])  # the raw weights are back


def test_map_validates_and_writes_the_ema_weights(tmp_path):
    """The trainer's EMA equals the EMA computed by hand from its raw weights, validation sees the
    averaged weights, and the written sample is the averaged weights of the best validation."""
    cfg = tiny("map", training={"max_steps": 6, "validate_every": 3}, adam={"ema_decay": 0.8})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    names = [n for n, _ in trainer.model.named_parameters()]
    expected = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    for n in range(1, 7):
        trainer.train_step()
        d = min(0.8, (1 + n) / (10 + n))
        for name, p in trainer.model.named_parameters():
            expected[name] = d * expected[name] + (1 - d) * p.detach()
    for name in names:
        assert torch.allclose(trainer.ema.shadow[name], expected[name], rtol=1e-12, atol=1e-14), name
    raw = trainer._validate()["force_mae"]
    averaged = trainer.validate()["force_mae"]
    with trainer.ema.applied():
        assert trainer._validate()["force_mae"] == averaged
    assert averaged != raw

    run = train(cfg, tmp_path / "full", progress=False)
    sd = read_sample(run.samples[0])["state_dict"]
    off = train(tiny("map", training={"max_steps": 6, "validate_every": 3}, adam={"ema_decay": 0.0}),
                tmp_path / "off", progress=False)
    sd_off = read_sample(off.samples[0])["state_dict"]
    assert any(not torch.equal(sd[k], sd_off[k]) for k in sd if sd[k].is_floating_point())


WARM = {"warm_start_steps": 5, "mass_freeze_step": 3, "burn_in": 4, "sample_interval": 2, "num_samples": 4,
        "chains": 2}


def test_sghmc_warm_start_then_samples(tmp_path):
    cfg = tiny("sghmc", training={"max_steps": 12, "validate_every": 3, "checkpoint_every": 4}, sghmc=WARM)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    assert isinstance(trainer.optimizer, torch.optim.Adam) and trainer.ema is not None
    for _ in range(4):
        trainer.train_step()
    assert trainer.method.phase == "warm_start" and trainer.samples_written == 0
    ema = trainer.ema
    trainer.train_step()  # step 5: the last warm-start step; the chains take the EMA weights
    assert ema.num_updates == 5
    assert trainer.method.phase == "sample" and type(trainer.optimizer).__name__ == "AdaptiveSGHMC"
    assert trainer.ema is None
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), ema.shadow[name]), name

    run = train(cfg, tmp_path / "full", progress=False)
    metas = [read_sample(f)["meta"] for f in run.samples]
    # samples only after the warm start: sampler steps 4 and 6 = global steps 9 and 11
    assert [(m["step"], m["sampler_step"], m["chain"]) for m in metas] == \
        [(9, 4, 0), (9, 4, 1), (11, 6, 0), (11, 6, 1)]


@pytest.mark.parametrize("stop_after", [3, 7])  # a checkpoint before and after the phase change
def test_resume_is_exact_across_the_warm_start(tmp_path, stop_after):
    cfg = tiny("sghmc", training={"max_steps": 12, "validate_every": 3, "checkpoint_every": 4}, sghmc=WARM)
    train(cfg, tmp_path / "full", progress=False)
    r = train(cfg, tmp_path / "cut", progress=False, stop_after=stop_after)
    assert r.status == "interrupted"
    train(cfg, tmp_path / "cut", progress=False, resume=True)
    full = sorted((tmp_path / "full" / "samples").glob("*.pt"))
    cut = sorted((tmp_path / "cut" / "samples").glob("*.pt"))
    assert [f.name for f in full] == [f.name for f in cut] and len(full) == 4
    for a, b in zip(full, cut):
        sa, sb = read_sample(a)["state_dict"], read_sample(b)["state_dict"]
        for key in sa:
            assert torch.equal(sa[key], sb[key]), (a.name, key)
    la = list(csv.DictReader(open(tmp_path / "full" / "log.csv")))
    lb = list(csv.DictReader(open(tmp_path / "cut" / "log.csv")))
    assert [(r["step"], r["loss"], r["val_force_mae"]) for r in la] == \
           [(r["step"], r["loss"], r["val_force_mae"]) for r in lb]


def test_shared_warm_start_starts_every_chain_from_chain_0(tmp_path):
    cfg = tiny("sghmc", training={"max_steps": 12, "validate_every": 3, "checkpoint_every": 4},
               sghmc={**WARM, "warm_start_shared": True})
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    for _ in range(4):
        trainer.train_step()
    ema = trainer.ema
    assert any(not torch.equal(v[0], v[1]) for v in ema.shadow.values())  # chains differ while warming up
    trainer.train_step()  # the last warm-start step
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), ema.shadow[name][:1].expand_as(p)), name
