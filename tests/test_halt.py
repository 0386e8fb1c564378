"""The halt threshold rules: statistics from validation frames, rules, storage and export."""

import json

import numpy as np
import pytest

from bnnmd.data import bundled_dataset
from bnnmd.deploy import ExportError, export, read_metadata
from bnnmd.posterior import (Calibration, HaltRuleError, HaltStatistics, StdMap, halt_statistics, halt_threshold,
                             parse_rule)
from bnnmd.uq import calibrate

from helpers import write_samples


def test_statistics_by_hand():
    """Two frames (2 and 1 atoms), k = 2: per-atom std^2 = mean_xyz var_k(F) + mean_k sigma^2, times c^2."""
    mu = np.array([[0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 2.0, 0.0, 0.0],
                   [2.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0]])
    sigma = np.array([[1.0] * 3 + [2.0] * 3 + [0.5] * 3, [1.0] * 3 + [2.0] * 3 + [0.5] * 3])
    y = np.zeros(9)
    s = halt_statistics(mu, sigma, y, [2, 1], StdMap.scale(2.0), "kcal/mol/A")
    # atom 0: var_x = 1, mean_xyz = 1/3; + 1 -> 4/3; atom 1: 0 + 4; atom 2: 1/3 + 0.25
    per_atom = 2.0 * np.sqrt([4 / 3, 4.0, 1 / 3 + 0.25])
    np.testing.assert_allclose(s.frame_max_std, [per_atom[1], per_atom[2]])
    np.testing.assert_allclose(s.frame_max_std_epistemic, [2.0 * np.sqrt(1 / 3), 2.0 * np.sqrt(1 / 3)])
    mean = mu.mean(axis=0)
    assert s.force_rmse == pytest.approx(np.sqrt(np.mean(mean ** 2)))


def test_rules():
    s = HaltStatistics([1.0, 3.0, 2.0], [0.5, 1.0, 0.2], 0.8, "kcal/mol/A", "split:val")
    value, text = halt_threshold(s, "envelope:1.5")
    assert value == pytest.approx(4.5)
    assert text == ("envelope:1.5: 1.5 x the largest per-atom force std on 3 validation frames "
                    "(3 kcal/mol/A) = 4.5 kcal/mol/A")
    assert halt_threshold(s, "rmse:3")[0] == pytest.approx(2.4)
    assert halt_threshold(s, "median:1.2")[0] == pytest.approx(2.4)
    # the epistemic part (bnn-learn's md.halt_on epistemic): the same rules on its maxima
    assert halt_threshold(s, "median:1.5", part="epistemic")[0] == pytest.approx(0.75)
    assert halt_threshold(s, "envelope:2", part="epistemic")[0] == pytest.approx(2.0)
    assert "largest per-atom epistemic force std" in halt_threshold(s, "median:1.5", part="epistemic")[1]
    for bad in ("envelope", "sigma:2", "rmse:-1", "rmse:x"):
        with pytest.raises(HaltRuleError, match="use NAME:FACTOR with NAME one of envelope, median, rmse"):
            parse_rule(bad)
    assert HaltStatistics.from_dict(s.to_dict()) == s


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    d = tmp_path_factory.mktemp("halt")
    write_samples(d / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=2, seed=1)
    cal = calibrate(d / "samples", bundled_dataset("rmd17_ethanol_test").subset(range(6)))
    return d, cal


@pytest.mark.slow
def test_calibration_file_keeps_the_statistics(calibrated):
    d, cal = calibrated
    stored = json.loads((d / "samples" / "calibration.json").read_text())["halt"]
    assert len(stored["frame_max_std"]) == 6 and stored["force_unit"] == "kcal/mol/A"
    assert Calibration.load(d / "samples" / "calibration.json").halt == cal.halt


@pytest.mark.slow
def test_export_applies_the_default_rule(calibrated, tmp_path):
    d, cal = calibrated
    meta = read_metadata(export(d / "samples", tmp_path / "m.pth"))
    assert meta["halt_threshold"] == pytest.approx(1.5 * np.median(cal.halt.frame_max_std), rel=1e-12)
    assert meta["halt_rule"].startswith("median:1.5: ")
    with pytest.raises(ExportError, match="halt rule 'sigma:3'"):
        export(d / "samples", tmp_path / "bad.pth", halt_rule="sigma:3")


@pytest.mark.slow
def test_export_without_statistics(tmp_path):
    write_samples(tmp_path / "samples", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=2)
    assert "halt_threshold" not in read_metadata(export(tmp_path / "samples", tmp_path / "m.pth"))
    with pytest.raises(ExportError, match="needs validation statistics.*--calibrate-on split:val first"):
        export(tmp_path / "samples", tmp_path / "m2.pth", halt_rule="rmse:3")


@pytest.mark.slow
def test_cli_prints_the_threshold(calibrated, tmp_path, capsys):
    from bnnmd.cli.export import main

    d, cal = calibrated
    assert main([str(d / "samples"), str(tmp_path / "m.pth"), "--halt-rule", "rmse:2"]) == 0
    out = capsys.readouterr().out
    assert f"halt threshold {2 * cal.halt.force_rmse:.6g} kcal/mol/A per-atom force std" in out
    assert "rule rmse:2: 2 x the force RMSE on 6 validation frames" in out


@pytest.mark.slow
def test_a_fixed_threshold(calibrated, tmp_path, capsys):
    """--halt-threshold stores the number given (no statistics needed), and nothing else with it."""
    from bnnmd.cli.export import main

    d, _ = calibrated
    meta = read_metadata(export(d / "samples", tmp_path / "m.pth", halt_threshold=2.75))
    assert meta["halt_threshold"] == 2.75 and meta["halt_rule"].startswith("fixed: 2.75 ")
    write_samples(tmp_path / "plain", bundled_dataset("rmd17_ethanol_train").subset(range(20)), k=2)
    assert main([str(tmp_path / "plain"), str(tmp_path / "p.pth"), "--halt-threshold", "1.5"]) == 0
    assert "halt threshold 1.5 kcal/mol/A per-atom force std" in capsys.readouterr().out
    with pytest.raises(ExportError, match="either a halt rule or a halt threshold"):
        export(d / "samples", tmp_path / "x.pth", halt_rule="rmse:2", halt_threshold=1.0)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ExportError, match="must be a number > 0"):
            export(d / "samples", tmp_path / "x.pth", halt_threshold=bad)
