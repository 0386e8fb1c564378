"""bnn-learn's executors (issue 27, item 5): the MD runs and the labels of a round on a dask
LocalCluster give the same frames and labels as on local threads and processes; the fine-tuning on
several processes (finetune.nproc, torchrun); config errors in one line."""

import json
import time

import numpy as np
import pytest
import torch

from bnnmd.label import CachedLabeller, Label, LabelError
from bnnmd.learn import ActiveLearning, LearnConfig, LearnError
from bnnmd.learn._executor import DaskExecutor, LocalExecutor, make_executor
from bnnmd.train import TrainConfig

from helpers import learn_start_run

pytest.importorskip("pyscf")


@pytest.fixture(scope="module")
def start_run(tmp_path_factory):
    return learn_start_run(tmp_path_factory.mktemp("learn_executor_start"))


def learn_config(start_run, **over):
    d = {"start": str(start_run / "run"), "rounds": 1, "max_dft_calls": 4, "test": "bundled:rmd17_ethanol_test",
         "md": {"template": str(start_run / "in.template"), "nsteps": 60, "halt_every": 10, "dump_every": 10,
                "seed": 5, "runs": 2, "processes": 2},
         "select": {"n": 2, "min_gap": 5}, "label": {"basis": "sto-3g", "processes": 2},
         "finetune": {"warm_start_steps": 10, "max_steps": 30, "mass_freeze_step": 5, "burn_in": 10,
                      "sample_interval": 5, "validate_every": 10}}
    for k, v in over.items():
        d[k] = {**d.get(k, {}), **v} if isinstance(v, dict) else v
    return d


def md_and_labels(cfg: dict, out):
    """Round 0 of the loop up to its labels (export, MD, select, label), as ``run`` calls them."""
    al = ActiveLearning(LearnConfig.from_dict(cfg), out)
    for phase in (al._export, al._md, al._select, al._label):
        phase(0)
    return json.loads((out / "state.json").read_text())["rounds"]["0"]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:No artists with labels:UserWarning")  # no evaluate phase: no errors to plot
def test_dask_local_cluster_labels_the_same_frames(start_run, tmp_path):
    """Two MD runs and their labels, once on local threads and processes and once as tasks of a dask
    LocalCluster of 2 workers: the same halts, the same frames picked, the same labels (bit for bit),
    and the labels cached where the loop runs."""
    local = md_and_labels(learn_config(start_run), tmp_path / "local")
    dask = md_and_labels(learn_config(start_run, executor={"scheduler": "local:2"}), tmp_path / "dask")
    assert local["halt_steps"] == dask["halt_steps"] == [10, 10]
    assert local["selected"] == dask["selected"] and len(local["selected"]) == 2
    assert local["labelled"] == dask["labelled"] == 2 and dask["label_failures"] == {}
    with np.load(tmp_path / "local" / "round_00" / "labels.npz") as a, \
            np.load(tmp_path / "dask" / "round_00" / "labels.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for key in a.files:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for i in ("md", "md_01"):  # the same trajectories, written by the workers into OUT
        dumps = [(tmp_path / o / "round_00" / i / "traj.dump").read_text() for o in ("local", "dask")]
        assert dumps[0] == dumps[1]
    assert len(list((tmp_path / "dask" / "labels").glob("*.npz"))) == 2


def test_executor_map_keeps_the_order_and_raises():
    """Both executors give fn's results in the items' order; a task's exception reaches the caller."""
    pytest.importorskip("distributed")
    items = [3, 1, 2, 5, 4]
    for scheduler in (None, "local:2"):
        with make_executor(scheduler) as ex:
            assert isinstance(ex, DaskExecutor if scheduler else LocalExecutor)
            assert ex.map(abs, [-x for x in items], 2) == items
            with pytest.raises(LearnError, match="bad item 2"):
                ex.map(_fails_on_two, items, 2)


def _fails_on_two(x):
    if x == 2:
        raise LearnError("bad item 2")
    return x


def test_executor_and_nproc_config_errors(start_run):
    """executor.scheduler and finetune.nproc are checked when the config loads, in one line naming the key."""
    for bad in ("localhost:8786", "local:0", "local:two", 8786, ""):
        with pytest.raises(LearnError, match=r"executor\.scheduler = .*: give null \(this machine\), a dask "
                                             r"scheduler address \(tcp://HOST:8786\) or local:N"):
            LearnConfig.from_dict(learn_config(start_run, executor={"scheduler": bad}))
    with pytest.raises(LearnError, match=r"unknown key\(s\) executor\.address"):
        LearnConfig.from_dict(learn_config(start_run, executor={"address": "tcp://h:8786"}))
    with pytest.raises(LearnError, match="finetune.nproc = 0: must be an integer >= 1"):
        LearnConfig.from_dict(learn_config(start_run, finetune={"nproc": 0}))
    # 2 SGHMC chains cannot be split over 3 processes (training.distributed auto -> chains)
    with pytest.raises(LearnError, match=r"finetune\.nproc = 3: training\.distributed = chains: 2 chain\(s\) "
                                         r"cannot be shared by 3 processes"):
        LearnConfig.from_dict(learn_config(start_run, finetune={"nproc": 3}))
    ok = LearnConfig.from_dict(learn_config(start_run, executor={"scheduler": "tcp://10.0.0.1:8786"},
                                            finetune={"nproc": 2}))
    assert ok.executor.scheduler == "tcp://10.0.0.1:8786" and ok.finetune.nproc == 2


@pytest.mark.slow
def test_finetune_on_two_processes(start_run, tmp_path):
    """finetune.nproc 2: round 1's fine-tuning is torchrun --nproc_per_node 2 on round_01/finetune.yaml;
    its checkpoint is a 2-process one and the loop goes on with its samples."""
    out = tmp_path / "out"
    cfg = learn_config(start_run, md={"runs": 1, "processes": 1}, label={"processes": 1}, finetune={"nproc": 2})
    rep = ActiveLearning(LearnConfig.from_dict(cfg), out).run()
    assert rep["status"] == "round budget reached (1 fine-tunings)"
    nxt = out / "round_01"
    assert "--nproc_per_node 2" in (nxt / "finetune.log").read_text()
    assert TrainConfig.load(nxt / "finetune.yaml").training.prior_centre == str(out / "round_00" / "run" / "samples")
    state = torch.load(nxt / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert state["layout"]["world_size"] == 2
    assert len(list((nxt / "run" / "samples").glob("sample_*.pt"))) == 4
    assert (nxt / "model.pth").exists() and rep["rounds"][1]["halt_step"] is not None


class _SleepyLabeller(CachedLabeller):
    """Frame 0 (a lone H) takes ``sleep`` s, any other is labelled at once."""

    def __init__(self, cache, sleep):
        super().__init__(cache)
        self.sleep = sleep

    def method_id(self) -> str:
        return "sleepy|"

    def _compute(self, atoms) -> Label:
        if len(atoms) == 1:
            time.sleep(self.sleep)
        return Label(float(len(atoms)), np.zeros((len(atoms), 3)), True, 1)


def test_dask_label_timeout_and_cache(tmp_path):
    """On the cluster a frame past label.timeout is cancelled and gets a LabelError naming the
    timeout; the others are labelled and cached by the loop's process (the workers get no cache)."""
    pytest.importorskip("distributed")
    import ase

    lab = _SleepyLabeller(tmp_path / "labels", sleep=30.0)
    frames = [ase.Atoms("H", positions=[[0, 0, 0]]), ase.Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.74]])]
    with make_executor("local:2") as ex:
        ex.client.run(_fails_on_two, 1)  # every worker imports this module (and torch) before the clock starts
        t0 = time.monotonic()
        out = ex.label(lab, frames, timeout=2.0)
        assert time.monotonic() - t0 < 20.0  # not held up by the 30 s frame
    assert isinstance(out[0], LabelError) and "longer than the timeout (2 s)" in str(out[0])
    assert isinstance(out[1], Label) and out[1].energy == 2.0
    assert lab.cached(frames[1]).energy == 2.0 and lab.cached(frames[0]) is None
    assert len(list((tmp_path / "labels").glob("*.npz"))) == 1
