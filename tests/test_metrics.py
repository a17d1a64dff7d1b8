"""Tests of companion.metrics against scikit-learn, draw by draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import binom, norm
from sklearn.calibration import calibration_curve
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from companion import metrics


@pytest.fixture(scope="module")
def draws():
    """Labels and 30 draws of probabilities for 200 points, loosely informative."""
    key_y, key_p = jax.random.split(jax.random.key(0))
    y = jax.random.bernoulli(key_y, 0.4, (200,)).astype(jnp.int32)
    logits = 1.5 * (2 * y - 1) + 2.0 * jax.random.normal(key_p, (30, 200))
    return np.asarray(y), np.asarray(jax.nn.sigmoid(logits))


def test_auc_matches_sklearn_for_every_draw(draws):
    y, p = draws
    ours = metrics.auc(y, p)
    assert ours.shape == (30,)
    expected = [roc_auc_score(y, row) for row in p]
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    np.testing.assert_allclose(metrics.auc(y, p[0]), expected[0], rtol=1e-5)


def test_auc_on_many_points_does_not_overflow():
    # num_pos * num_neg = 2.5e9 > 2**31: an int32 product turns negative
    key_y, key_s = jax.random.split(jax.random.key(2))
    y = jax.random.bernoulli(key_y, 0.5, (100_000,)).astype(jnp.int32)
    scores = y + 1.5 * jax.random.normal(key_s, (100_000,))
    expected = roc_auc_score(np.asarray(y), np.asarray(scores))
    np.testing.assert_allclose(metrics.auc(y, scores), expected, rtol=1e-4)


def test_auc_counts_ties_as_half_and_handles_extra_axes():
    y = np.array([0, 1, 0, 1, 1, 0])
    scores = np.array([0.2, 0.2, 0.5, 0.5, 0.9, 0.1])  # ties across classes
    np.testing.assert_allclose(metrics.auc(y, scores), roc_auc_score(y, scores))
    stacked = np.stack([scores, 1 - scores, np.round(scores)])[None]  # (1, 3, 6)
    ours = metrics.auc(y, stacked)
    assert ours.shape == (1, 3)
    np.testing.assert_allclose(
        ours[0], [roc_auc_score(y, s) for s in stacked[0]], rtol=1e-6
    )


def test_log_loss_matches_sklearn(draws):
    y, p = draws
    np.testing.assert_allclose(
        metrics.log_loss(y, p), [sk_log_loss(y, row) for row in p], rtol=1e-5
    )


@pytest.mark.parametrize("num_bins", [5, 10, 17])
def test_reliability_bins_match_calibration_curve(draws, num_bins):
    y, p = draws
    mean_p = p.mean(0)
    # put some predictions exactly on inner bin edges: they go to the lower bin
    mean_p[:3] = [0.2, 0.4, 0.6]
    bins = metrics.reliability_bins(y, mean_p, num_bins=num_bins)
    prob_true, prob_pred = calibration_curve(
        y, mean_p, n_bins=num_bins, strategy="uniform"
    )
    filled = np.asarray(bins.counts) > 0
    assert bins.counts.shape == (num_bins,) and int(bins.counts.sum()) == 200
    np.testing.assert_allclose(np.asarray(bins.prob_true)[filled], prob_true, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(bins.prob_pred)[filled], prob_pred, rtol=1e-5)
    assert np.isnan(np.asarray(bins.prob_true)[~filled]).all()
    np.testing.assert_allclose(bins.edges, np.linspace(0, 1, num_bins + 1))
    # the expected calibration error from sklearn's bins and our counts
    weights = np.asarray(bins.counts)[filled] / 200
    ece = np.sum(weights * np.abs(prob_true - prob_pred))
    np.testing.assert_allclose(
        metrics.expected_calibration_error(y, mean_p, num_bins), ece, rtol=1e-5
    )


def test_a_calibrated_forecast_has_a_small_calibration_error():
    key_p, key_y = jax.random.split(jax.random.key(1))
    p = jax.random.uniform(key_p, (20_000,))
    y = jax.random.bernoulli(key_y, p).astype(jnp.int32)
    # labels drawn from p itself: only sampling noise, ≈ 0.01 with 10 bins
    assert float(metrics.expected_calibration_error(y, p)) < 0.02
    assert float(metrics.expected_calibration_error(y, p**3)) > 0.1


@pytest.mark.parametrize(
    ("fn", "y", "scores", "match"),
    [
        (metrics.auc, [0, 1, 2], [0.1, 0.2, 0.3], r"labels in \{0, 1\}"),
        (metrics.auc, [1, 1, 1], [0.1, 0.2, 0.3], "both classes"),
        (metrics.auc, [0, 1, 1], [0.1, 0.2], r"shape \(\.\.\., 3\)"),
        (metrics.auc, [[0, 1]], [0.1, 0.2], "1-D"),
        (metrics.log_loss, [0, 1], [0.1, 1.2], r"probs must lie in \[0, 1\]"),
        (metrics.log_loss, [0, 1, 1], [[0.1, 0.2]], r"shape \(\.\.\., 3\)"),
        (metrics.reliability_bins, [0, 1], [[0.1, 0.2]], "probs must be 1-D"),
        (metrics.reliability_bins, [0, 0.5], [0.1, 0.2], r"labels in \{0, 1\}"),
    ],
)
def test_bad_inputs_are_rejected(fn, y, scores, match):
    with pytest.raises(ValueError, match=match):
        fn(np.asarray(y), np.asarray(scores))


def test_reliability_bins_reject_a_bad_bin_count():
    with pytest.raises(ValueError, match="num_bins"):
        metrics.reliability_bins(np.array([0, 1]), np.array([0.1, 0.9]), num_bins=0)


def _wilson_by_root_finding(k, n, level):
    """The Wilson interval straight from its definition: the shares q with
    (k/n - q)² <= z² q (1 - q) / n, found by root finding on each side."""
    z = norm.ppf((1 + level) / 2)
    phat = k / n

    def score(q):
        return (phat - q) ** 2 - z**2 * q * (1 - q) / n

    tiny = 1e-12  # step off the double root at 0 (k = 0) or 1 (k = n)
    lower = 0.0 if k == 0 else brentq(score, 0.0, min(phat, 1 - tiny))
    upper = 1.0 if k == n else brentq(score, max(phat, tiny), 1.0)
    return lower, upper


@pytest.mark.parametrize(("num_bins", "level"), [(5, 0.9), (10, 0.95), (17, 0.99)])
def test_reliability_curve_matches_calibration_curve_and_wilson(draws, num_bins, level):
    y, p = draws
    mean_p = p.mean(0)
    mean_p[:4] = [0.0, 0.2, 0.6, 1.0]  # edges and ends go where sklearn puts them
    curve = metrics.reliability_curve(y, mean_p, num_bins, level=level)
    prob_true, prob_pred = calibration_curve(
        y, mean_p, n_bins=num_bins, strategy="uniform"
    )
    filled = curve.counts > 0
    np.testing.assert_allclose(curve.prob_true[filled], prob_true, rtol=1e-6)
    np.testing.assert_allclose(curve.prob_pred[filled], prob_pred, rtol=1e-6)
    assert curve.level == level and int(curve.counts.sum()) == len(y)
    assert np.isnan(curve.lower[~filled]).all() and np.isnan(curve.upper[~filled]).all()
    for b in np.flatnonzero(filled):
        n = int(curve.counts[b])
        k = int(np.rint(curve.prob_true[b] * n))
        expected = _wilson_by_root_finding(k, n, level)
        np.testing.assert_allclose(
            [curve.lower[b], curve.upper[b]], expected, atol=1e-9
        )
        assert curve.lower[b] <= curve.prob_true[b] <= curve.upper[b]


def test_wilson_interval_at_the_ends_and_its_coverage():
    # one bin of 20 points, all negative / all positive
    y0, y1, p = np.zeros(20, int), np.ones(20, int), np.full(20, 0.05)
    z2 = norm.ppf(0.975) ** 2
    none = metrics.reliability_curve(y0, p, num_bins=1)
    assert none.lower[0] == 0.0 and np.isclose(none.upper[0], z2 / (20 + z2))
    every = metrics.reliability_curve(y1, p, num_bins=1)
    assert every.upper[0] == 1.0 and np.isclose(every.lower[0], 20 / (20 + z2))
    # exactly, for any count: the interval always contains the share
    for n in range(1, 60):
        for labels in (np.zeros(n, int), np.ones(n, int)):
            c = metrics.reliability_curve(labels, np.full(n, 0.5), 1, level=0.95)
            assert c.lower[0] <= c.prob_true[0] <= c.upper[0]
    # exact coverage of the true share, summed over the binomial outcomes
    n, share, level = 40, 0.3, 0.9
    covered = []
    for k in range(n + 1):
        labels = np.r_[np.ones(k, int), np.zeros(n - k, int)]
        c = metrics.reliability_curve(labels, np.full(n, 0.5), 1, level=level)
        covered.append(c.lower[0] <= share <= c.upper[0])
    coverage = binom.pmf(np.arange(n + 1), n, share) @ np.array(covered)
    assert 0.86 < coverage < 0.94


def test_calibration_check_matches_a_direct_resampling_loop():
    key_p, key_y = jax.random.split(jax.random.key(3))
    p = jax.random.beta(key_p, 0.5, 0.5, (300,))
    y = jax.random.bernoulli(key_y, p**1.5).astype(jnp.int32)
    key, num_bins, num_resamples = jax.random.key(4), 7, 12
    check = metrics.calibration_check(
        key, y, p, num_bins, num_resamples=num_resamples, level=0.8
    )
    # the same draws, one resample at a time, through the public functions
    y_host, p_host = np.asarray(y), np.asarray(p)
    key_null, key_boot = jax.random.split(key)
    null, boot, shares = [], [], []
    for k_null, k_boot in zip(
        jax.random.split(key_null, num_resamples),
        jax.random.split(key_boot, num_resamples),
        strict=True,
    ):
        y_star = np.asarray(jax.random.bernoulli(k_null, p), dtype=int)
        null.append(metrics.expected_calibration_error(y_star, p_host, num_bins))
        shares.append(metrics.reliability_bins(y_star, p_host, num_bins).prob_true)
        idx = np.asarray(jax.random.randint(k_boot, (300,), 0, 300))
        boot.append(
            metrics.expected_calibration_error(y_host[idx], p_host[idx], num_bins)
        )
    np.testing.assert_allclose(check.ece_null, null, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        [check.ece_low, check.ece_high], np.quantile(boot, [0.1, 0.9]), rtol=1e-4
    )
    np.testing.assert_allclose(
        [check.band_lower, check.band_upper],
        np.quantile(np.array(shares), [0.1, 0.9], axis=0),
        rtol=1e-4,
    )
    assert check.ece == pytest.approx(
        metrics.expected_calibration_error(y, p, num_bins), rel=1e-9
    )
    expected_p = (1 + np.sum(np.array(null) >= check.ece)) / (1 + num_resamples)
    assert check.p_value == pytest.approx(expected_p)
    assert check.level == 0.8 and check.ece_null.shape == (num_resamples,)


def test_calibration_check_tells_calibrated_from_miscalibrated():
    key_p, key_y = jax.random.split(jax.random.key(1))
    p = jax.random.uniform(key_p, (20_000,))
    y = jax.random.bernoulli(key_y, p).astype(jnp.int32)
    calibrated = metrics.calibration_check(jax.random.key(2), y, p, num_resamples=200)
    assert calibrated.p_value > 0.05
    assert calibrated.ece_null.min() < calibrated.ece < calibrated.ece_null.max()
    curve = metrics.reliability_bins(y, p)
    inside = (curve.prob_true >= calibrated.band_lower) & (
        curve.prob_true <= calibrated.band_upper
    )
    assert inside.sum() >= 8  # about 95% of 10 bins
    # the band is about ±1.96 sd of a bin's share under calibration
    bin_ids = np.searchsorted(curve.edges[1:-1], np.asarray(p, dtype=np.float64))
    pn = np.asarray(p, dtype=np.float64)
    sd = np.sqrt(np.bincount(bin_ids, pn * (1 - pn))) / curve.counts
    np.testing.assert_allclose(
        (calibrated.band_upper - calibrated.band_lower) / (2 * 1.96 * sd), 1, atol=0.2
    )
    # forecasts pushed towards 0: far outside the noise, in every bin but the ends
    bad = metrics.calibration_check(jax.random.key(2), y, p**3, num_resamples=200)
    assert bad.p_value == 1 / 201
    assert bad.ece_low > 0.1 > bad.ece_null.max()
    shares = metrics.reliability_bins(y, p**3).prob_true
    assert (shares > bad.band_upper)[1:-1].all()


def test_calibration_check_is_reproducible():
    y = np.array([0, 1] * 50)
    p = np.linspace(0.01, 0.99, 100)
    first = metrics.calibration_check(jax.random.key(0), y, p, num_resamples=10)
    again = metrics.calibration_check(jax.random.key(0), y, p, num_resamples=10)
    other = metrics.calibration_check(jax.random.key(1), y, p, num_resamples=10)
    np.testing.assert_array_equal(first.ece_null, again.ece_null)
    assert first.ece_low == again.ece_low
    assert not np.array_equal(first.ece_null, other.ece_null)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"level": 0.0}, ValueError, "level"),
        ({"level": 1.0}, ValueError, "level"),
        ({"level": float("nan")}, ValueError, "level"),
        ({"level": True}, ValueError, "level"),
        ({"level": "0.9"}, ValueError, "level"),
        ({"num_resamples": 0}, ValueError, "num_resamples"),
        ({"num_resamples": 2.5}, ValueError, "num_resamples"),
        ({"num_bins": 0}, ValueError, "num_bins"),
        ({"rng_key": 0}, TypeError, "rng_key"),
        ({"probs": np.array([[0.1, 0.9]])}, ValueError, "probs must be 1-D"),
        ({"probs": np.array([0.1, 1.5])}, ValueError, r"probs must lie in \[0, 1\]"),
        ({"y_true": np.array([0, 2])}, ValueError, r"labels in \{0, 1\}"),
        ({"y_true": np.array([0, 1, 1])}, ValueError, r"shape \(\.\.\., 3\)"),
    ],
)
def test_calibration_check_and_curve_reject_bad_input(kwargs, error, match):
    args = {
        "rng_key": jax.random.key(0),
        "y_true": np.array([0, 1]),
        "probs": np.array([0.1, 0.9]),
    } | kwargs
    with pytest.raises(error, match=match):
        metrics.calibration_check(**args)
    if "rng_key" not in kwargs and "num_resamples" not in kwargs:
        args.pop("rng_key")
        with pytest.raises(error, match=match):
            metrics.reliability_curve(**args)
