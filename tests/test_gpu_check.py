"""bench/gpu_check.py runs end to end on the CPU (``--cpu-dry-run``), so that its first GPU run is not its first run."""

import json
import subprocess
import sys
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
sys.path.insert(0, str(REPO / "bench"))
import gpu_check  # noqa: E402  (bench/gpu_check.py)


@pytest.mark.slow
def test_cpu_dry_run_writes_every_phase_with_numbers(tmp_path):
    r = subprocess.run([sys.executable, str(SCRIPT), "--cpu-dry-run", "--out", str(tmp_path)], capture_output=True,
                       text=True, timeout=900, cwd=REPO)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["mode"] == "cpu-dry-run" and result["device"] == "cpu"
    ph = result["phases"]
    assert set(ph) == set(gpu_check.PHASES)
    assert ph["setup"]["status"] == "ok" and ph["setup"]["torch"]
    # the CUDA tests were collected and each skipped for the want of a GPU (none failed, none errored)
    tests = ph["tests"]
    assert tests["failed"] == tests["errors"] == 0 and tests["skipped"] >= 10, tests
    assert tests["status"] == "skipped" and any("CUDA" in s for s in tests["skip_reasons"])
    # timings: calls/s and LAMMPS steps/s for k = 1 and k = 8 on both systems, and their ratios
    timings = ph["timings"]
    assert timings["status"] == "ok", timings.get("reason")
    rows = timings["rows"]
    for kind, rate in (("calls", "calls_per_s"), ("lammps", "steps_per_s")):
        got = {(r["system"], r["k"]): r for r in rows if r["kind"] == kind and r["format"] == "pth"}
        assert set(got) == {(s, k) for s in ("ethanol", "water96") for k in (1, 8)}, kind
        assert all(r["status"] == "ok" and r[rate] > 0 for r in got.values()), got
    assert {r["atoms"] for r in rows if r["kind"] == "calls"} == {9, 96}
    ratios = {(r["kind"], r["system"]): r["k8_over_k1_time"] for r in timings["ratios"]}
    assert set(ratios) == {(kind, s) for kind in ("calls", "lammps") for s in ("ethanol", "water96")}
    assert all(v > 0 for v in ratios.values())
    assert all(r["device_used"] == "cpu" for r in rows if r["kind"] == "lammps")
    # training: SGHMC steps/s with 8 chains on ethanol and the periodic water set
    train = ph["training"]["rows"]
    assert [r["dataset"] for r in train] == ["bundled:rmd17_ethanol_train", "bundled:water_gfn2_train"]
    assert all(r["status"] == "ok" and r["steps_per_s"] > 0 and r["chains"] == 8 for r in train)
    # the table: printed and written
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| phase | status | wall (s) | note |" in r.stdout and table.strip() in r.stdout
    for line in ("| timings | OK |", "| ethanol | 9 | pth |", "| water96 | 96 | pth |",
                 "| bundled:water_gfn2_train | 2 | float32 |"):
        assert line in table, line
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gpu_check.json", "gpu_check.md", "tests.log", "tests_junit.xml", "timings.log", "training.log"]


def test_a_phase_past_its_cap_is_stopped_and_reported(tmp_path):
    """The child and everything it started are killed at the cap; the phase gets one FAIL line, no traceback."""
    a = Namespace(cpu_dry_run=True, pt2=False)
    res = gpu_check.phase_child(a, tmp_path, "training", 2.0, "cpu")
    assert res["status"] == "failed" and res["reason"].startswith("stopped at its time cap (2 s) after 0 measurements")
    assert res["rows"] == [] and res["wall_s"] < 30


def test_slim_wheel_drops_members_and_their_record_lines(tmp_path):
    src = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(src, "w") as z:
        z.writestr("pkg/__init__.py", "x = 1\n")
        z.writestr("pkg/share/big.dat", "0" * 10000)
        z.writestr("pkg-1.0.dist-info/RECORD", "pkg/__init__.py,sha256=a,6\npkg/share/big.dat,sha256=b,10000\n"
                                                "pkg-1.0.dist-info/RECORD,,\n")
    dest = tmp_path / "out" / src.name
    dest.parent.mkdir()
    info = gpu_check.slim_wheel(src, dest, ("pkg/share/",))
    assert info["removed_uncompressed_bytes"] == 10000
    with zipfile.ZipFile(dest) as z:
        assert z.namelist() == ["pkg/__init__.py", "pkg-1.0.dist-info/RECORD"]
        assert z.read("pkg-1.0.dist-info/RECORD").decode() == ("pkg/__init__.py,sha256=a,6\n"
                                                              "pkg-1.0.dist-info/RECORD,,\n")


def test_k_ratios_and_requirements():
    rows = [{"kind": "calls", "system": "s", "format": "pth", "k": 1, "status": "ok", "calls_per_s": 10.0},
            {"kind": "calls", "system": "s", "format": "pth", "k": 8, "status": "ok", "calls_per_s": 4.0},
            {"kind": "lammps", "system": "s", "format": "pth", "k": 1, "status": "ok", "steps_per_s": 2.0},
            {"kind": "lammps", "system": "s", "format": "pth", "k": 8, "status": "skipped"}]
    assert gpu_check.k_ratios(rows) == [{"kind": "calls", "system": "s", "format": "pth", "k8_over_k1_time": 2.5}]
    assert gpu_check.satisfied("0.6.0", "==0.6.0") and not gpu_check.satisfied("0.5.1", "==0.6.0")
    assert not gpu_check.satisfied(None, ">=1") and gpu_check.satisfied("2.11.0+cu130", ">=2.4")
