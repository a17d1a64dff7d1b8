"""Tests of companion.metrics against scikit-learn, draw by draw."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.metrics import log_loss as sk_log_loss

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


def test_brier_and_log_loss_match_sklearn(draws):
    y, p = draws
    np.testing.assert_allclose(
        metrics.brier_score(y, p), [brier_score_loss(y, row) for row in p], rtol=1e-5
    )
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
        (metrics.brier_score, [0, 1], [0.1, 1.2], r"probs must lie in \[0, 1\]"),
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
