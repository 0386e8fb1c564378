"""Training methods: the registry (a new method is one class), the EMA of the weights, SGHMC's warm start."""

import csv
import dataclasses

import pytest
import torch

from bnnmd.posterior import load_samples, read_sample
from bnnmd.train import REGISTRY, Trainer, WeightEMA, get_method, register, train
from bnnmd.train._methods import MAP

from helpers import tiny


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
    ema, adam = trainer.ema, trainer.optimizer
    trainer.train_step()  # step 5: the last warm-start step; the chains take the EMA weights
    assert ema.num_updates == 5
    # the sampler's mass starts from Adam's bias-corrected second moments (of u / |D|), not from one gradient
    beta2 = adam.param_groups[0]["betas"][1]
    assert trainer.optimizer.is_primed
    for p in trainer.model.parameters():
        st = adam.state[p]
        want = st["exp_avg_sq"] / (1 - beta2 ** float(st["step"]))
        assert torch.allclose(trainer.optimizer.state[p]["exp_avg_sq"], want, rtol=1e-14, atol=0)
        assert torch.allclose(trainer.optimizer.mass(p), want.sqrt() + cfg.sghmc.eps, rtol=1e-14, atol=0)
    assert trainer.method.phase == "sample" and type(trainer.optimizer).__name__ == "AdaptiveSGHMC"
    assert trainer.ema is None
    for name, p in trainer.model.named_parameters():
        assert torch.equal(p.detach(), ema.shadow[name]), name

    run = train(cfg, tmp_path / "full", progress=False)
    metas = [read_sample(f)["meta"] for f in run.samples]
    # samples only after the warm start: sampler steps 4 and 6 = global steps 9 and 11
    assert [(m["step"], m["sampler_step"], m["chain"]) for m in metas] == \
        [(9, 4, 0), (9, 4, 1), (11, 6, 0), (11, 6, 1)]


@pytest.mark.parametrize("stop_after", [3, pytest.param(7, marks=pytest.mark.slow)])  # a checkpoint before and after the phase change
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
        m = trainer.optimizer.mass(p)
        assert torch.equal(m, m[:1].expand_as(m)), name  # and chain 0's mass


# ---- sghmc.schedule: time (the wall-clock plan) -------------------------------------------------
def test_schedule_arithmetic_by_hand():
    from bnnmd.train import _schedule as S

    # 40 steps in 2 s since the reference: 0.05 s/step; 0.95 x 100 - 10 = 85 s left -> 1700 steps
    assert S.steps_left(50, 10.0, 10, 8.0, 100.0) == 1700
    assert S.steps_left(50, 99.0, 10, 8.0, 100.0) == 0  # past the end: nothing left
    with pytest.raises(ValueError, match="timed step"):
        S.steps_left(10, 8.0, 10, 8.0, 100.0)
    assert S.sampler_schedule(900, 4) == (300, 600, 100)  # a third each; 4 samples 100 apart
    assert S.sampler_schedule(900, 1) == (300, 900, 1)  # one sample: at the last step
    assert S.sampler_schedule(2, 4) == (4, 8, 1)  # too few steps: the shortest schedule that samples
    assert S.sampling_schedule(300, 600, 4) == (600, 100)
    assert S.sampling_schedule(300, 600, 1) == (900, 1)


def _fake_clock(trainer, warm_s, sample_s):
    """Training time as a function of the steps done: ``warm_s`` per warm-start step, ``sample_s`` per
    sampler step (the planner sees only this clock, so the plan is deterministic)."""
    def clock():
        w = trainer.method.plan.warm_start_steps
        w = trainer.step if w is None else min(w, trainer.step)
        return w * warm_s + (trainer.step - w) * sample_s
    trainer.clock = clock


TIMED = {"schedule": "time", "warm_start_fraction": 0.5, "num_samples": 4, "chains": 2}


@pytest.mark.slow
@pytest.mark.parametrize("sample_s", [0.01, 0.03])  # the sampler as fast as the warm start, and 3x slower
def test_time_schedule_fills_the_time_limit(tmp_path, sample_s):
    cfg = tiny("sghmc", training={"max_steps": 10 ** 6, "validate_every": 25, "checkpoint_every": 50,
                                  "time_limit": 3.0}, sghmc=TIMED)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    _fake_clock(trainer, 0.01, sample_s)
    run = trainer.run()
    plan = trainer.method.plan
    assert run.status == "finished" and len(run.samples) == 4
    assert plan.stage == "done"
    # the first plan: 0.95 x 3 s at 0.01 s/step = 285 steps, half of them warm start
    assert plan.warm_start_steps == 142
    end = trainer.clock()
    assert 0.85 * 3.0 <= end <= 0.95 * 3.0 + sample_s, end  # re-planned on the sampler's own rate
    metas = [read_sample(f)["meta"] for f in run.samples]
    assert min(m["step"] for m in metas) > plan.warm_start_steps  # no sample from the warm start
    assert all(m["sampler_step"] >= plan.burn_in for m in metas)
    assert metas[-1]["step"] == run.step == trainer.method.planned_steps()
    assert trainer.optimizer.mass_freeze_step == plan.mass_freeze_step < plan.burn_in
    import json
    assert json.loads((tmp_path / "run" / "schedule.json").read_text())["warm_start_steps"] == 142


@pytest.mark.slow
def test_time_schedule_ends_a_slowed_warm_start_by_the_clock(tmp_path):
    """Warm-start steps 3x slower after the plan (a loaded machine): the planned 142 warm steps would
    take 3.5 s of a 3 s limit and leave no sample; the warm start ends by the clock instead."""
    cfg = tiny("sghmc", training={"max_steps": 10 ** 6, "validate_every": 25, "checkpoint_every": 50,
                                  "time_limit": 3.0}, sghmc=TIMED)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)

    def clock():
        w = trainer.method.plan.warm_start_steps  # the plan is a value: read the current one
        w = trainer.step if w is None else min(w, trainer.step)
        return min(w, 40) * 0.01 + max(w - 40, 0) * 0.03 + (trainer.step - w) * 0.01
    trainer.clock = clock
    run = trainer.run()
    plan = trainer.method.plan
    assert run.status == "finished" and len(run.samples) == 4
    # planned at step 25 (0.25 s): 142 warm steps, due by 0.25 + 1.1 x 117 x 0.01 = 1.537 s, passed at
    # step 78 (0.4 + 38 x 0.03 = 1.54 s)
    assert plan.warm_start_deadline == pytest.approx(1.537)
    assert plan.warm_start_steps == 78
    assert min(read_sample(f)["meta"]["step"] for f in run.samples) > 78
    assert trainer.clock() <= 0.95 * 3.0 + 0.01


@pytest.mark.slow
def test_time_schedule_resumes_with_its_plan(tmp_path):
    cfg = tiny("sghmc", training={"max_steps": 10 ** 6, "validate_every": 25, "checkpoint_every": 20,
                                  "time_limit": 2.0}, sghmc=TIMED)
    full = Trainer(cfg, tmp_path / "full", progress=False)
    _fake_clock(full, 0.01, 0.02)
    full.run()
    cut = Trainer(cfg, tmp_path / "cut", progress=False)
    _fake_clock(cut, 0.01, 0.02)
    assert cut.run(stop_after=120).status == "interrupted"  # after the warm start's end (step 95)
    again = Trainer(cfg, tmp_path / "cut", progress=False, resume=True)
    assert again.method.plan == cut.method.plan  # the plan came back from the checkpoint
    _fake_clock(again, 0.01, 0.02)
    again.run()
    a = sorted((tmp_path / "full" / "samples").glob("*.pt"))
    b = sorted((tmp_path / "cut" / "samples").glob("*.pt"))
    assert [f.name for f in a] == [f.name for f in b] and len(a) == 4
    for x, y in zip(a, b):
        sx, sy = read_sample(x)["state_dict"], read_sample(y)["state_dict"]
        assert all(torch.equal(sx[k], sy[k]) for k in sx), x.name


def test_time_schedule_needs_a_time_limit():
    from bnnmd.nn import ConfigError

    with pytest.raises(ConfigError, match="training.time_limit.*sghmc.schedule: steps"):
        tiny("sghmc", sghmc={"schedule": "time"})
    with pytest.raises(ConfigError, match="sghmc.schedule"):
        tiny("sghmc", sghmc={"schedule": "clock"})


def test_sample_interval_counts_the_writes():
    from bnnmd.train import _schedule as S

    # 10 s left, 3 more samples per chain costing 1 s each: 7 s of steps of 0.1 s -> 70 steps, 23 apart
    assert S.sample_interval(0.1, 10.0, 3, 1.0, 5) == 23
    assert S.sample_interval(None, 10.0, 3, 1.0, 5) == 5
    assert S.sample_interval(0.1, 1.0, 3, 1.0, 5) == 1


def test_plan_advance_is_pure_and_walks_the_stages_once():
    """The wall-clock plan as a value: advance returns new plans and never changes the one given;
    on a steady clock it passes TIMING -> WARM_START -> SAMPLER_TIMING -> SAMPLER -> DONE in order,
    each decision made once, and the samples end inside the budget."""
    from bnnmd.train import _schedule as S

    start = S.Plan()
    p, seen, first_set = start, [S.Stage.TIMING], {}
    step_s, limit = 0.01, 10.0  # 950 steps fit before END_FRACTION x limit
    for step in range(1, 1200):
        new = S.advance(p, step, step * step_s, limit, 5000, 2, 0.5 if step <= (p.warm_start_steps or 1e9) else None)
        assert p == S.Plan.from_dict(p.to_dict())  # the checkpoint form round-trips
        if new.stage != seen[-1]:
            seen.append(new.stage)
        for key in ("budget_steps", "mass_freeze_step", "burn_in"):
            if getattr(new, key) is not None:
                assert first_set.setdefault(key, getattr(new, key)) == getattr(new, key), key  # decided once
        p = new
    assert start == S.Plan() and start.stage is S.Stage.TIMING
    assert seen == [S.Stage.TIMING, S.Stage.WARM_START, S.Stage.SAMPLER_TIMING, S.Stage.SAMPLER, S.Stage.DONE]
    assert abs(first_set["budget_steps"] - 950) <= 1
    assert p.warm_start_steps == int(0.5 * first_set["budget_steps"])
    assert p.burn_in >= p.mass_freeze_step
    assert p.warm_start_steps < p.planned_steps(2) <= 950 + 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.burn_in = 3
