"""bnnmd.uq: metrics against hand-worked values and independent implementations, recalibration,
plots, and bnn-eval end to end on a tiny run trained here."""

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from scipy.stats import norm

from bnnmd.cli.evaluate import main as bnn_eval
from bnnmd.data import GraphDataset, TypeMapper, bundled_dataset, bundled_path
from bnnmd.posterior import Calibration, CalibrationError, StdMap, evenly_spaced, scale_predictions, unit_std
from bnnmd.uq import (EvaluationError, Predictions, QuantityPredictions, calibrate, central_interval_coverage,
                      error_detection_auc, evaluate, fit_isotonic, fit_scale, load_model, mae, mll, moments, nece,
                      nece_bins, rmse, roc_auc, roc_curve, within_sigma, write_plots)

sys.path.insert(0, str(Path(__file__).parent))
from helpers import tiny  # noqa: E402

REQUIRED_KEYS = ["forces.mae", "forces.rmse", "forces.mll", "forces.nece", "forces.auc",
                 "energy.mae", "energy.rmse", "energy.mll", "energy.nece"]


def mixture_sample(rng, mu, sigma):
    """One draw per column from the mixture (1/k) sum_s N(mu_s, sigma_s^2)."""
    k, n = mu.shape
    s = rng.integers(0, k, n)
    cols = np.arange(n)
    return mu[s, cols] + sigma[s, cols] * rng.standard_normal(n)


# ---- point metrics, moments, MLL ----------------------------------------------------------------
def test_mae_rmse_use_the_mean_of_the_sample_means():
    mu = np.array([[1.0, 0.0, 4.0], [3.0, 0.0, 0.0]])  # means 2, 0, 2
    y = np.array([0.0, 1.0, 2.0])                       # errors 2, 1, 0
    assert mae(mu, y) == pytest.approx(1.0)
    assert rmse(mu, y) == pytest.approx(np.sqrt(5 / 3))


def test_moments_agree_with_the_model_side_predictive():
    from bnnmd.nn import predictive

    rng = np.random.default_rng(1)
    mu, sigma = rng.normal(size=(5, 40)), rng.uniform(0.1, 2, size=(5, 40))
    m = moments(mu, sigma)
    p = predictive(torch.tensor(mu), torch.tensor(sigma))
    for a, b in zip(m, p):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-12)


def test_mll_against_scipy():
    rng = np.random.default_rng(2)
    k, n = 6, 300
    mu, sigma = rng.normal(size=(k, n)), rng.uniform(0.05, 3, size=(k, n))
    y = rng.normal(size=n) * 2
    ref = np.mean(logsumexp(norm.logpdf(y, mu, sigma), axis=0) - np.log(k))
    assert mll(mu, sigma, y) == pytest.approx(ref, rel=1e-12)
    # single Gaussian
    assert mll(mu[:1], sigma[:1], y) == pytest.approx(np.mean(norm.logpdf(y, mu[0], sigma[0])), rel=1e-12)


def test_mll_is_finite_far_in_the_tails():
    # density underflows to 0 in float64 (z = 1e3), the log-sum-exp does not
    value = mll([[0.0], [1.0]], [[1e-3], [1e-3]], [1.0 + 1.0])
    assert np.isfinite(value)
    assert value == pytest.approx(-0.5 * 1e6 - np.log(1e-3) - 0.5 * np.log(2 * np.pi) - np.log(2), rel=1e-9)


# ---- ROC-AUC ------------------------------------------------------------------------------------
def test_auc_against_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc_curve

    rng = np.random.default_rng(3)
    for _ in range(5):
        scores = np.round(rng.normal(size=500), 1)  # many ties
        labels = (scores + rng.normal(size=500) > 0.8).astype(int)
        assert roc_auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        fpr, tpr = roc_curve(scores, labels)
        sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(fpr, sk_fpr)
        np.testing.assert_allclose(tpr, sk_tpr)


def test_error_detection_auc_uses_total_variance_and_threshold():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(4)
    k, n = 4, 2000
    sigma = np.repeat(rng.uniform(0.2, 2.0, n)[None], k, 0)
    mu = rng.normal(scale=0.3, size=(k, n))
    y = mixture_sample(rng, mu, sigma)
    m = moments(mu, sigma)
    labels = np.abs(y - m.mean) > 1.0
    assert error_detection_auc(mu, sigma, y, 1.0) == pytest.approx(roc_auc_score(labels, m.variance))
    assert error_detection_auc(mu, sigma, y, 1.0) > 0.7  # informative stds detect large errors
    assert np.isnan(error_detection_auc(mu, sigma, y, 1e9))  # no outliers: undefined ("NA" in the paper)


# ---- NECE ---------------------------------------------------------------------------------------
def test_nece_hand_worked_example():
    # k = 2 samples N(-0.5, 1) and N(0.5, 1) for every point; y chosen so that the errors
    # y - mean are -0.5, 0.5, 0.25, 1.5; two bins [-1, 0), [0, 1] of width 1.
    mu = np.array([[-0.5] * 4, [0.5] * 4]) + np.array([0.0, 1.0, 2.0, 3.0])
    y = np.array([0.0, 1.0, 2.0, 3.0]) + np.array([-0.5, 0.5, 0.25, 1.5])
    f = np.array([1 / 4, 2 / 4])  # 1.5 is outside the range: counted in n, in no bin
    cdf = lambda x: 0.5 * (norm.cdf(x, -0.5, 1) + norm.cdf(x, 0.5, 1))  # noqa: E731
    e = np.array([cdf(0) - cdf(-1), cdf(1) - cdf(0)])
    expected = np.sum(f / 1.0 * np.abs(f - e))
    b = nece_bins(mu, np.ones_like(mu), y, width=1.0, limit=1.0)
    np.testing.assert_allclose(b.observed, f)
    np.testing.assert_allclose(b.predicted, e)
    assert nece(mu, np.ones_like(mu), y, width=1.0, limit=1.0) == pytest.approx(expected, rel=1e-12)


def test_nece_of_a_calibrated_gaussian_goes_to_zero():
    rng = np.random.default_rng(5)
    values = []
    for n in (1_000, 10_000, 100_000):
        y = rng.standard_normal(n)
        values.append(nece(np.zeros((1, n)), np.ones((1, n)), y, width=0.2, limit=5.0))
    assert values[0] > values[1] > values[2]
    assert values[2] < 0.01


def _overconfident_nece_continuous(s: float) -> float:
    """E_r |r - p| for observed errors r = N(0, s^2), predicted p = N(0, 1), s > 1 (closed form).

    r > p outside |y| > y*, p > r inside. r^2 = N(y; 0, s^2/2) / (2 s sqrt(pi)) and
    r p = N(0; 0, s^2 + 1) N(y; 0, s^2 / (s^2 + 1)).
    """
    ystar = np.sqrt(2 * np.log(s) * s ** 2 / (s ** 2 - 1))

    def inside(sd):
        return 2 * norm.cdf(ystar / sd) - 1

    rr_in = inside(s / np.sqrt(2)) / (2 * s * np.sqrt(np.pi))  # int over |y| < y* of r^2
    rr_all = 1 / (2 * s * np.sqrt(np.pi))
    rp_all = norm.pdf(0, 0, np.sqrt(s ** 2 + 1))                  # int of r p
    rp_in = rp_all * inside(s / np.sqrt(s ** 2 + 1))
    return ((rr_all - rr_in) - (rp_all - rp_in)) - (rr_in - rp_in)


def test_nece_of_a_2x_overconfident_model_matches_the_analytic_value():
    from scipy.integrate import quad

    analytic = _overconfident_nece_continuous(2.0)
    numeric = quad(lambda t: norm.pdf(t, 0, 2) * abs(norm.pdf(t, 0, 2) - norm.pdf(t)), -40, 40,
                   points=[-1.36, 1.36], limit=200)[0]
    assert analytic == pytest.approx(numeric, rel=1e-6)
    assert analytic == pytest.approx(0.0864, abs=1e-4)
    rng = np.random.default_rng(6)
    n = 200_000
    y = 2.0 * rng.standard_normal(n)  # truth has std 2, the model says 1
    value = nece(np.zeros((1, n)), np.ones((1, n)), y, width=0.1, limit=8.0)
    assert value == pytest.approx(analytic, abs=0.004)
    # the same errors with the right std: about zero
    assert nece(np.zeros((1, n)), np.full((1, n), 2.0), y, width=0.1, limit=8.0) < 0.003


def test_normalised_nece_checks_where_the_large_stds_are():
    # heteroscedastic, calibrated: both variants ~ 0. Stds shuffled among the points: the pooled
    # error density (the paper's NECE) is still right, the normalised errors are not.
    rng = np.random.default_rng(7)
    n = 100_000
    sigma = rng.choice([0.2, 3.0], n)[None]
    y = sigma[0] * rng.standard_normal(n)
    mu = np.zeros((1, n))
    assert nece(mu, sigma, y) < 0.01
    assert nece(mu, sigma, y, normalise=True) < 0.01
    shuffled = rng.permutation(sigma[0])[None]
    assert nece(mu, shuffled, y) < 0.01
    assert nece(mu, shuffled, y, normalise=True) > 0.1


def test_coverage_of_a_calibrated_mixture():
    rng = np.random.default_rng(8)
    k, n = 3, 60_000
    mu = rng.normal(size=(k, n))
    sigma = rng.uniform(0.3, 1.0, size=(k, n))
    y = mixture_sample(rng, mu, sigma)
    levels = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(central_interval_coverage(mu, sigma, y, levels), levels, atol=0.01)
    # one Gaussian: within c sigma = Gaussian coverage
    y1 = rng.standard_normal(n)
    assert within_sigma(np.zeros((1, n)), np.ones((1, n)), y1, 2) == pytest.approx(0.9545, abs=0.005)


# ---- recalibration ------------------------------------------------------------------------------
def test_scaling_scales_every_variance_part_by_c_squared():
    rng = np.random.default_rng(9)
    mu, sigma = rng.normal(size=(4, 10)), rng.uniform(0.1, 1, size=(4, 10))
    a, b = moments(mu, sigma), moments(*scale_predictions(mu, sigma, 1.7))
    np.testing.assert_allclose(b.mean, a.mean)
    for part in ("variance", "epistemic", "aleatoric"):
        np.testing.assert_allclose(getattr(b, part), 1.7 ** 2 * getattr(a, part))


def test_fitted_factor_recovers_the_true_overconfidence():
    rng = np.random.default_rng(10)
    k, n, c_true = 4, 20_000, 2.0
    centre = rng.normal(size=n)
    dev = rng.normal(scale=0.5, size=(k, n))
    sigma = rng.uniform(0.2, 1.0, size=(k, n))
    mu = centre + dev
    y = mixture_sample(rng, *scale_predictions(mu, sigma, c_true))  # truth: the spread is 2x wider
    c = fit_scale(mu, sigma, y)
    assert c == pytest.approx(c_true, rel=0.03)
    mu_c, sigma_c = scale_predictions(mu, sigma, c)
    assert mll(mu_c, sigma_c, y) > mll(mu, sigma, y) + 0.1
    assert nece(mu_c, sigma_c, y) < 0.5 * nece(mu, sigma, y)
    assert nece(mu_c, sigma_c, y, normalise=True) < 0.5 * nece(mu, sigma, y, normalise=True)
    # underconfident data is recovered too
    y_under = mixture_sample(rng, *scale_predictions(mu, sigma, 0.5))
    assert fit_scale(mu, sigma, y_under) == pytest.approx(0.5, rel=0.03)


def test_fit_for_one_gaussian_is_the_closed_form():
    rng = np.random.default_rng(11)
    mu, sigma = rng.normal(size=(1, 500)), rng.uniform(0.5, 1.5, size=(1, 500))
    y = mu[0] + 1.3 * sigma[0] * rng.standard_normal(500)
    assert fit_scale(mu, sigma, y) == pytest.approx(np.sqrt(np.mean(((y - mu[0]) / sigma[0]) ** 2)), rel=1e-5)


def heteroscedastic(rng, n_atoms, k=4):
    """Force predictions with predicted per-atom std s whose true error std is sqrt(s): too small
    below s = 1 and too large above, which no single factor fixes."""
    centre = rng.normal(size=(1, n_atoms, 1))
    scale = rng.lognormal(mean=-0.5, sigma=0.6, size=(1, n_atoms, 1))
    mu = np.broadcast_to(centre + 0.4 * scale * rng.normal(size=(k, n_atoms, 3)), (k, n_atoms, 3)).reshape(k, -1)
    sigma = np.broadcast_to(scale * rng.uniform(0.6, 1.0, size=(k, n_atoms, 1)), (k, n_atoms, 3)).reshape(k, -1)
    s = np.repeat(unit_std(mu, sigma, 3), 3)
    y = mu.mean(axis=0) + np.sqrt(s) * rng.standard_normal(s.size)
    return mu, sigma, y


def test_isotonic_map_beats_one_factor_on_heteroscedastic_miscalibration():
    rng = np.random.default_rng(21)
    fit, test = heteroscedastic(rng, 6000), heteroscedastic(rng, 6000)
    iso = fit_isotonic(*fit, group=3, min_per_bin=50)
    c = fit_scale(*fit)
    assert iso.kind == "isotonic" and len(iso.std) >= 2
    s = unit_std(test[0], test[1], 3)
    lo, hi = s < np.quantile(s, 0.3), s > np.quantile(s, 0.7)
    assert np.median(iso.factor_at(s[lo])) == pytest.approx(np.median(s[lo] ** -0.5), rel=0.1)
    assert np.median(iso.factor_at(s[hi])) == pytest.approx(np.median(s[hi] ** -0.5), rel=0.1)
    scaled, mapped = scale_predictions(test[0], test[1], c), iso.apply(test[0], test[1], 3)
    assert mll(*mapped, test[2]) > mll(*scaled, test[2]) + 0.05
    assert nece(*mapped, test[2]) < 0.7 * nece(*scaled, test[2])
    # the map keeps the point prediction and the ranking of the stds (so every AUC), and treats an
    # atom's three components alike
    np.testing.assert_allclose(mapped[0].mean(axis=0), test[0].mean(axis=0), rtol=1e-12, atol=1e-12)
    after = unit_std(*mapped, 3)
    assert np.all(np.diff(after[np.argsort(s)]) >= -1e-12)
    ratio = (mapped[1] / test[1]).reshape(test[1].shape[0], -1, 3)
    np.testing.assert_allclose(ratio, ratio[..., :1].repeat(3, axis=-1), rtol=1e-12)
    # every variance part of an atom is scaled by the same c^2
    m0, m1 = moments(test[0], test[1]), moments(*mapped)
    np.testing.assert_allclose(m1.epistemic, (mapped[1] / test[1])[0] ** 2 * m0.epistemic, rtol=1e-9)


def test_isotonic_pooling_equals_sklearn():
    from sklearn.isotonic import IsotonicRegression

    rng = np.random.default_rng(22)
    s = rng.uniform(0.1, 3.0, 997)
    y = rng.normal(size=997) * (1 + np.sin(3 * s))  # non-monotone truth: PAV has to pool
    m = fit_isotonic(np.zeros((1, s.size)), s[None], y, group=1, min_per_bin=10)
    o = np.argsort(s)
    edges = np.linspace(0, s.size, s.size // 10 + 1).round().astype(int)
    xb = np.array([s[o][a:b].mean() for a, b in zip(edges[:-1], edges[1:])])
    eb = np.array([(y[o][a:b] ** 2).mean() for a, b in zip(edges[:-1], edges[1:])])
    wb = np.diff(edges)
    v = IsotonicRegression().fit(np.arange(len(xb)), eb, sample_weight=wb).predict(np.arange(len(xb)))
    # each knot is one pooled block: its g^2 is sklearn's value there, at the block's mean s
    g2 = (np.asarray(m.factor) * np.asarray(m.std)) ** 2
    blocks = np.unique(v)
    assert len(g2) == len(blocks) >= 3
    np.testing.assert_allclose(g2, blocks, rtol=1e-10)
    for value, knot in zip(blocks, m.std):
        sel = v == value
        assert knot == pytest.approx(np.sum(xb[sel] * wb[sel]) / np.sum(wb[sel]), rel=1e-12)


def test_std_map_errors():
    for args, match in [(("isotonic", (1.0, 1.0), (1.0, 1.0)), "strictly increasing"),
                        (("isotonic", (1.0,), (0.0,)), "positive"), (("scale", (1.0, 2.0), (1.0, 1.0)), "one factor"),
                        (("cubic", (1.0,), (1.0,)), "unknown calibration kind")]:
        with pytest.raises(CalibrationError, match=match):
            StdMap(*args)
    with pytest.raises(CalibrationError, match="is not 'scale C' or 'isotonic"):
        StdMap.from_text("isotonic 1.0")
    with pytest.raises(CalibrationError, match="do not split into units of 3"):
        StdMap("isotonic", (1.0, 2.0), (1.0, 1.0)).apply(np.zeros((1, 4)), np.ones((1, 4)), 3)


def test_calibration_file_round_trip_and_errors(tmp_path):
    cal = Calibration({"forces": 1.25, "energy": 0.5}, {"data": "x"}, {"forces.mll": -1.0}, {"forces.mll": -0.5})
    path = cal.save(tmp_path / "calibration.json")
    d = json.loads(path.read_text())
    assert d["format"] == 1 and d["forces"] == {"kind": "scale", "factor": 1.25}
    assert d["energy"]["factor"] == 0.5 and d["fitted_on"] == {"data": "x"}
    assert set(d) == {"format", "forces", "energy", "fitted_on", "metrics_before", "metrics_after"}
    assert Calibration.load(path).maps == {"forces": StdMap.scale(1.25), "energy": StdMap.scale(0.5)}
    iso = Calibration({"forces": StdMap("isotonic", (0.1, 0.4), (2.0, 1.5)), "energy": 0.5})
    assert Calibration.load(iso.save(tmp_path / "iso.json")).maps == iso.maps
    for bad, match in [({**d, "format": 2}, "format 2"),
                       ({**d, "forces": {"kind": "quantile"}}, "unknown calibration kind 'quantile'"),
                       ({**d, "forces": {"kind": "isotonic", "factor": [1.0]}}, "std = None is not a list"),
                       ({**d, "forces": {"kind": "isotonic", "std": [2, 1], "factor": [1, 1]}},
                        "strictly increasing"),
                       ({**d, "forces": {"kind": "isotonic", "std": [1, 2], "factor": [1]}}, "as many factors"),
                       ({**d, "energy": {"kind": "scale", "factor": -1}}, "not a positive number")]:
        path.write_text(json.dumps(bad))
        with pytest.raises(CalibrationError, match=match):
            Calibration.load(path)
    path.write_text("{not json")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        Calibration.load(path)


# ---- plots --------------------------------------------------------------------------------------
def synthetic_predictions(rng, n_atoms=300, n_frames=50, k=4):
    def quantity(n, scale):
        mu = rng.normal(scale=0.2 * scale, size=(k, n))
        sigma = rng.uniform(0.3, 1.0, size=(k, n)) * scale
        return QuantityPredictions(mu, sigma, mixture_sample(rng, mu, 1.5 * sigma))

    return Predictions(quantity(3 * n_atoms, 1.0), quantity(n_frames, 2.0), n_frames, n_atoms)


def test_plots_are_written(tmp_path):
    pred = synthetic_predictions(np.random.default_rng(12))
    files = write_plots(pred, tmp_path / "plots", uncalibrated=pred)
    assert sorted(f.name for f in files) == sorted(["error_density.png", "roc.png", "error_vs_std.png",
                                                    "reliability.png"])
    for f in files:
        assert f.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f.stat().st_size > 5000


def test_evenly_spaced():
    assert evenly_spaced(8, 8) == list(range(8))
    assert evenly_spaced(8, 4) == [0, 2, 5, 7]
    assert evenly_spaced(8, 1) == [7]
    for n in range(1, 12):
        for k in range(1, n + 1):
            idx = evenly_spaced(n, k)
            assert len(set(idx)) == k and idx[-1] == n - 1 and min(idx) >= 0


# ---- end to end on a tiny run -------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from bnnmd.train import train

    root = tmp_path_factory.mktemp("uq")
    train(tiny("sghmc"), root / "run", progress=False)
    return root / "run"


@pytest.fixture(scope="module")
def dropout_run(tmp_path_factory):
    from bnnmd.train import train

    root = tmp_path_factory.mktemp("uq_dropout")
    train(tiny("mc_dropout", training={"max_steps": 3, "validate_every": 3}), root / "run", progress=False)
    return root / "run"


def test_evaluate_python_api(run):
    res = evaluate(run / "samples", "split:val")
    for key in REQUIRED_KEYS:
        assert isinstance(res[key], float) and np.isfinite(res[key]), key
    assert res["k"] == 4 and res["n_frames"] == 4 and res["n_atoms"] == 36 and res["method"] == "sghmc"
    assert res["units"] == {"energy": "kcal/mol", "forces": "kcal/mol/A"}
    assert res["calibration"]["applied"] is False and "uncalibrated" not in res.metrics
    # against the metric functions on the model's own outputs
    ds = bundled_dataset("rmd17_ethanol_train").subset(json.loads((run / "split.json").read_text())["val"]["indices"])
    model = load_model(run / "samples").model
    out = model(GraphDataset(ds, TypeMapper(model.config.type_names), model.config.cutoff).batch(range(len(ds))))
    f_mu = out["forces"].detach().reshape(4, -1).numpy()
    f_sigma = out["forces_std"].detach().unsqueeze(-1).expand(-1, -1, 3).reshape(4, -1).numpy()
    assert res["forces.mll"] == pytest.approx(mll(f_mu, f_sigma, ds.forces.reshape(-1)), rel=1e-9)
    e_mu = out["total_energy"].detach().numpy()
    assert res["energy.mae"] == pytest.approx(mae(e_mu, ds.energy), rel=1e-9)
    # k evenly spaced samples; a model object and a dataset work too
    res2 = evaluate(run / "samples", ds, k=2)
    assert res2["k"] == 2 and res2["sample_indices"] == [0, 3]
    res3 = evaluate(model, ds)
    assert res3["forces.mll"] == pytest.approx(res["forces.mll"], rel=1e-12)
    json.loads(res.to_json())  # strict JSON


def test_mc_dropout_k_masks(dropout_run):
    res = evaluate(dropout_run / "samples", "split:val", k=5)
    assert res["k"] == 5 and res["method"] == "mc_dropout"
    assert res["forces.mean_epistemic_std"] > 0  # the masks differ
    again = evaluate(dropout_run / "samples", "split:val", k=5)
    assert again["forces.mll"] == res["forces.mll"]  # seeded masks


@pytest.mark.slow
def test_cli_end_to_end_with_calibration(run, tmp_path, capsys):
    samples = run / "samples"
    out = tmp_path / "metrics.json"
    rc = bnn_eval([str(samples), "--data", "bundled:rmd17_ethanol_test", "--k", "2", "--json", str(out),
                   "--plots", str(tmp_path / "plots"), "--calibrate-on", "split:val"])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "calibration fitted on split:val" in text and "ROC-AUC |error| > 1 kcal/mol/A" in text and "NECE" in text
    d = json.loads(out.read_text())
    for key in REQUIRED_KEYS:
        assert key in d and isinstance(d[key], float), key
    assert d["k"] == 2 and d["n_frames"] == 200 and d["calibration"]["applied"] is True
    for key in REQUIRED_KEYS:
        assert key in d["uncalibrated"]
    # calibration changes the stds, not the point predictions nor the ranking
    for key in ("forces.mae", "forces.rmse", "energy.mae", "forces.auc"):
        assert d[key] == pytest.approx(d["uncalibrated"][key], rel=1e-12)
    cal = json.loads((samples / "calibration.json").read_text())
    assert cal["format"] == 1 and cal["forces"]["kind"] == "scale" and cal["forces"]["factor"] > 0
    assert cal["fitted_on"]["n_frames"] == 4 and cal["fitted_on"]["k"] == 2
    # the fit maximises the validation MLL
    assert cal["metrics_after"]["forces.mll"] >= cal["metrics_before"]["forces.mll"]
    assert cal["metrics_after"]["energy.mll"] >= cal["metrics_before"]["energy.mll"]
    assert d["calibration"]["forces"] == cal["forces"]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(
        ["error_density.png", "error_vs_std.png", "reliability.png", "roc.png"])
    # the stored calibration is applied by default, and can be switched off
    rc = bnn_eval([str(samples), "--data", "split:val", "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["calibration"]["applied"] is True
    rc = bnn_eval([str(samples), "--data", "split:val", "--json", str(out), "--no-calibration",
                   "--nece-width", "0.5", "2.0"])  # widths well above 1/1000 of the errors' range (2000 bins at most)
    d = json.loads(out.read_text())
    assert rc == 0 and d["calibration"]["applied"] is False and "uncalibrated" not in d
    assert d["forces.nece_bin_width"] == pytest.approx(0.5, rel=0.05)
    assert d["energy.nece_bin_width"] == pytest.approx(2.0, rel=0.05)
    # an isotonic map: fitted, stored, applied; the point predictions stay
    rc = bnn_eval([str(samples), "--data", "split:val", "--json", str(out), "--calibrate-on", "split:val",
                   "--calibration-map", "isotonic"])
    text = capsys.readouterr().out
    d = json.loads(out.read_text())
    cal = json.loads((samples / "calibration.json").read_text())
    assert rc == 0 and d["calibration"]["applied"] is True and cal["fitted_on"]["kind"] == "isotonic"
    assert cal["forces"]["kind"] in ("isotonic", "scale")  # 4 frames x 9 atoms: one or two bins
    assert re.search(r"calibration fitted on split:val .*: forces: (std x|isotonic)", text)
    for key in ("forces.mae", "forces.rmse", "energy.mae"):
        assert d[key] == pytest.approx(d["uncalibrated"][key], rel=1e-12)
    (samples / "calibration.json").unlink()


def _write_rmd17(path, z=None, labels=True, frames=3):
    src = np.load(bundled_path("rmd17_ethanol_test"))
    d = {"nuclear_charges": src["nuclear_charges"] if z is None else np.asarray(z),
         "coords": src["coords"][:frames]}
    if labels:
        d.update(energies=src["energies"][:frames], forces=src["forces"][:frames])
    np.savez(path, **d)
    return path


@pytest.mark.slow
def test_cli_errors(run, tmp_path, capsys):
    samples = str(run / "samples")

    def fails(argv, *words):
        rc = bnn_eval(argv)
        err = capsys.readouterr().err
        assert rc == 2, err
        assert err.startswith("bnn-eval: error:")
        for w in words:
            assert w in err, (w, err)

    fails([str(tmp_path / "nothing"), "--data", "split:test"], "does not exist", "RUN_DIR/samples")
    (tmp_path / "empty").mkdir()
    fails([str(tmp_path / "empty"), "--data", "split:test"], "no sample_XXX.pt")
    fails([samples, "--data", "split:test", "--k", "9"], "k = 9", "wrote 4 sample(s)", "--k 4")
    fails([samples, "--data", "split:test", "--k", "0"], "at least 1")
    fails([samples, "--data", str(tmp_path / "missing.npz")], "does not exist")
    fails([samples, "--data", "split:bogus"], "split:test")
    fails([samples, "--data", "bundled:nope"], "unknown bundled dataset")
    fails([samples, "--data", "split:test", "--calibrate-on", "split:val", "--no-calibration"], "contradict")
    fails([samples, "--data", "split:test", "--nece-width", "0", "1"], "must be positive")
    fails([samples, "--data", "split:test", "--auc-threshold", "0.05 eV/nope"], "--auc-threshold", "length unit")
    fails([samples, "--data", "split:test", "--auc-threshold", "low"], "'low' is not a number")
    fails([samples, "--data", "split:test", "--auc-threshold", "-1"], "positive")
    (tmp_path / "afile").write_text("")
    fails([samples, "--data", "split:test", "--json", str(tmp_path / "afile" / "m.json")], "afile", "check the path")
    # no labels
    import ase.io
    atoms = bundled_dataset("rmd17_ethanol_test").subset([0, 1])
    ase.io.write(tmp_path / "nolabels.xyz", [atoms.to_ase(0), atoms.to_ase(1)])
    fails([samples, "--data", str(tmp_path / "nolabels.xyz")], "no reference forces and no energies")
    # an element the model does not know (N)
    z = np.load(bundled_path("rmd17_ethanol_test"))["nuclear_charges"].copy()
    z[z == 8] = 7
    fails([samples, "--data", str(_write_rmd17(tmp_path / "n.npz", z=z))], "element(s) N", "['H', 'C', 'O']")
    # split:test without split.json next to the samples
    import shutil
    shutil.copytree(run / "samples", tmp_path / "lonely" / "samples")
    fails([str(tmp_path / "lonely" / "samples"), "--data", "split:test"], "split.json", "data file instead")
    # a broken calibration file
    (tmp_path / "lonely" / "samples" / "calibration.json").write_text('{"format": 7}')
    fails([str(tmp_path / "lonely" / "samples"), "--data", "bundled:rmd17_ethanol_test"], "calibration format 7")


def test_energies_only_data_reports_null_forces(run, tmp_path):
    from bnnmd.data import AtomicDataset

    full = bundled_dataset("rmd17_ethanol_test").subset([0, 1, 2])
    ds = AtomicDataset(full.atomic_numbers, full.positions, full.n_atoms, energy=full.energy)
    res = evaluate(run / "samples", ds)
    assert res["forces.mae"] is None and res["forces.auc"] is None
    assert np.isfinite(res["energy.mll"])
    assert "forces" in res.table() and json.loads(res.to_json())["forces.mll"] is None
    with pytest.raises(EvaluationError, match="no reference forces"):
        evaluate(run / "samples", AtomicDataset(full.atomic_numbers, full.positions, full.n_atoms))


def test_calibrate_python_api(run):
    cal = calibrate(run / "samples", "split:val", save=False)
    assert set(cal.maps) == {"forces", "energy"} and all(m.kind == "scale" for m in cal.maps.values())
    assert not (run / "samples" / "calibration.json").exists()
    res = evaluate(run / "samples", "split:val", calibration=cal)
    assert res["forces.mll"] == pytest.approx(cal.metrics_after["forces.mll"], rel=1e-9)
    assert res["uncalibrated"]["forces.mll"] == pytest.approx(cal.metrics_before["forces.mll"], rel=1e-9)


def test_auc_threshold_with_units(run, tmp_path, capsys):
    """--auc-threshold takes a value and a force unit; the threshold is reported in the data's units."""
    out = tmp_path / "m.json"
    assert bnn_eval([str(run / "samples"), "--data", "split:val", "--json", str(out), "--no-calibration",
                     "--auc-threshold", "0.05 eV/A"]) == 0
    text = capsys.readouterr().out
    d = json.loads(out.read_text())
    assert d["forces.auc_threshold"] == pytest.approx(0.05 * 23.060548012069493, rel=1e-9)  # kcal/mol/A data
    assert "ROC-AUC |error| > 1.153 kcal/mol/A" in text
    assert bnn_eval([str(run / "samples"), "--data", "split:val", "--json", str(out), "--no-calibration",
                     "--auc-threshold", "1.153027400603"]) == 0
    assert json.loads(out.read_text())["forces.auc"] == d["forces.auc"]
