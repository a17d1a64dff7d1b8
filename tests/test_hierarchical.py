"""Tests of companion.hierarchical: simulation, sufficient statistics and the
exact posterior against a dense linear-algebra reference and NumPyro's log
density."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest
from numpyro.infer.util import log_density

from companion import hierarchical


@pytest.fixture(scope="module")
def small():
    data = hierarchical.simulate(jax.random.key(3), 500, 6, num_features=2)
    return data, 6


def _dense_posterior(data, num_groups, noise_scale, coef_scale, group_scale):
    """Reference: precision = prior precision + Z^T Z / s^2 with Z = [X, onehot]."""
    x = np.asarray(data.x, np.float64)
    onehot = np.eye(num_groups)[data.group]
    z = np.concatenate([x, onehot], axis=1)
    prior = np.concatenate(
        [np.full(x.shape[1], coef_scale**-2), np.full(num_groups, group_scale**-2)]
    )
    precision = np.diag(prior) + z.T @ z / noise_scale**2
    cov = np.linalg.inv(precision)
    mean = cov @ z.T @ np.asarray(data.y, np.float64) / noise_scale**2
    return mean, cov, precision


@pytest.mark.parametrize("scales", [(1.0, 1.0, 0.5), (0.7, 2.0, 0.1)])
def test_exact_posterior_matches_dense_linear_algebra(small, scales):
    data, g = small
    noise, coef, group = scales
    stats = hierarchical.sufficient_statistics(data.x, data.group, data.y, g)
    post = hierarchical.exact_posterior(
        stats, noise_scale=noise, coef_scale=coef, group_scale=group
    )
    mean, cov, precision = _dense_posterior(data, g, noise, coef, group)
    d = data.x.shape[1]
    np.testing.assert_allclose(post.coef_mean, mean[:d], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(post.group_mean, mean[d:], rtol=1e-9, atol=1e-12)
    sd = np.sqrt(np.diag(cov))
    np.testing.assert_allclose(post.coef_sd, sd[:d], rtol=1e-9)
    np.testing.assert_allclose(post.group_sd, sd[d:], rtol=1e-9)
    np.testing.assert_allclose(post.coef_precision, np.diag(precision)[:d], rtol=1e-12)
    np.testing.assert_allclose(post.group_precision, np.diag(precision)[d:], rtol=1e-12)
    optimum = hierarchical.mean_field_optimum(post)
    np.testing.assert_allclose(
        optimum["group_effect_auto_scale"], np.diag(precision)[d:] ** -0.5, rtol=1e-12
    )
    # The mean-field scales are never wider than the marginal ones.
    assert np.all(optimum["coef_auto_scale"] <= post.coef_sd + 1e-15)


def test_posterior_mean_maximises_the_log_joint(small):
    """The exact posterior mean is the mode of the Gaussian posterior: the
    gradient of NumPyro's log joint of the model vanishes there."""
    data, g = small
    post = hierarchical.exact_posterior(
        hierarchical.sufficient_statistics(data.x, data.group, data.y, g)
    )
    jax.config.update("jax_enable_x64", True)
    try:

        def log_joint(coef, effect):
            params = {"coef": coef, "group_effect": effect}
            return log_density(
                hierarchical.model,
                (
                    jnp.asarray(data.x, jnp.float64),
                    data.group,
                    jnp.asarray(data.y, jnp.float64),
                ),
                {"num_data": 500, "num_groups": g},
                params,
            )[0]

        grads = jax.grad(log_joint, argnums=(0, 1))(
            jnp.asarray(post.coef_mean), jnp.asarray(post.group_mean)
        )
    finally:
        jax.config.update("jax_enable_x64", False)
    for grad in grads:
        np.testing.assert_allclose(np.asarray(grad), 0.0, atol=1e-3)


def test_sufficient_statistics_do_not_depend_on_the_chunking(small):
    data, g = small
    whole = hierarchical.sufficient_statistics(data.x, data.group, data.y, g)
    chunked = hierarchical.sufficient_statistics(
        data.x, data.group, data.y, g, chunk_rows=37
    )
    for a, b in zip(whole, chunked, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-9)
    assert whole.count.sum() == 500


def test_simulate_is_reproducible_and_writes_memmaps(tmp_path):
    key = jax.random.key(0)
    a = hierarchical.simulate(key, 2_500, 10, chunk_rows=1_000)
    b = hierarchical.simulate(
        key, 2_500, 10, out=str(tmp_path / "data"), chunk_rows=1_000
    )
    assert isinstance(b.x, np.memmap) and b.x.shape == (2_500, 3)
    for name in ("x", "group", "y", "coef", "group_effect"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    c = hierarchical.simulate(jax.random.key(1), 2_500, 10)
    assert not np.array_equal(a.y, c.y)
    assert a.x.dtype == np.float32 and a.group.dtype == np.int32
    assert a.group.min() >= 0 and a.group.max() < 10
    # Zipf-like group sizes: the largest group is several times the median.
    counts = np.bincount(a.group, minlength=10)
    assert counts.max() > 2 * np.median(counts)
    # The data follow the model: residuals have the noise's scale.
    residual = a.y - a.x @ a.coef - a.group_effect[a.group]
    assert abs(residual.std() - 1.0) < 0.05


def test_model_with_a_learned_pooling_scale_has_that_site():
    x, group, y = jnp.zeros((4, 3)), jnp.zeros(4, jnp.int32), jnp.zeros(4)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(hierarchical.model, 0)).get_trace(
        x, group, y, num_data=40, num_groups=5, group_scale=None
    )
    assert tr["group_scale"]["type"] == "sample"
    assert tr["group_effect"]["value"].shape == (5,)
    assert float(tr["y"]["scale"]) == 10.0


def test_bad_input_is_rejected(small):
    data, g = small
    with pytest.raises(ValueError, match="num_rows"):
        hierarchical.simulate(jax.random.key(0), 0, 3)
    with pytest.raises(ValueError, match="noise_scale"):
        hierarchical.simulate(jax.random.key(0), 10, 3, noise_scale=-1.0)
    with pytest.raises(TypeError, match="rng_key"):
        hierarchical.simulate(0, 10, 3)
    with pytest.raises(ValueError, match="group must lie"):
        hierarchical.sufficient_statistics(data.x, data.group, data.y, 2)
    with pytest.raises(ValueError, match="group and y must have shape"):
        hierarchical.sufficient_statistics(data.x, data.group[:-1], data.y, g)
    with pytest.raises(TypeError, match="group must hold integers"):
        hierarchical.sufficient_statistics(data.x, data.y, data.y, g)
    with pytest.raises(TypeError, match="stats"):
        hierarchical.exact_posterior((1, 2))
    with pytest.raises(TypeError, match="posterior"):
        hierarchical.mean_field_optimum({})


def _kl_diag_to_dense(mu, s, mean, cov):
    """KL(N(mu, diag(s^2)) || N(mean, cov)), dense reference."""
    precision = np.linalg.inv(cov)
    d = mu - mean
    return 0.5 * (
        np.sum(np.diag(precision) * s**2)
        + d @ precision @ d
        - len(mu)
        + np.linalg.slogdet(cov)[1]
        - np.sum(np.log(s**2))
    )


def test_grade_is_the_exact_excess_kl_over_the_best_mean_field_guide(small):
    data, g = small
    scales = dict(noise_scale=0.8, coef_scale=2.0)
    stats = hierarchical.sufficient_statistics(data.x, data.group, data.y, g)
    post = hierarchical.exact_posterior(stats, group_scale=0.3, **scales)
    best = hierarchical.mean_field_optimum(post)
    zero = hierarchical.grade(best, stats, post, **scales)
    assert abs(zero.excess_kl) < 1e-9
    np.testing.assert_allclose(zero.coef_ratio, 1.0)
    rng = np.random.default_rng(0)
    fitted = {
        k: v * np.exp(0.2 * rng.standard_normal(v.shape))
        if "scale" in k
        else v + 0.1 * rng.standard_normal(v.shape)
        for k, v in best.items()
    }
    graded = hierarchical.grade(fitted, stats, post, **scales)
    mean, cov, _ = _dense_posterior(data, g, 0.8, 2.0, 0.3)
    mu = np.concatenate([fitted["coef_auto_loc"], fitted["group_effect_auto_loc"]])
    s = np.concatenate([fitted["coef_auto_scale"], fitted["group_effect_auto_scale"]])
    s_best = np.concatenate([best["coef_auto_scale"], best["group_effect_auto_scale"]])
    expected = _kl_diag_to_dense(mu, s, mean, cov) - _kl_diag_to_dense(
        mean, s_best, mean, cov
    )
    np.testing.assert_allclose(graded.excess_kl, expected, rtol=1e-8)
    d = data.x.shape[1]
    np.testing.assert_allclose(
        graded.group_error, (mu[d:] - mean[d:]) / np.sqrt(np.diag(cov))[d:], rtol=1e-9
    )
    with pytest.raises(ValueError, match="missing"):
        hierarchical.grade({"coef_auto_loc": 0}, stats, post)
    with pytest.raises(ValueError, match="shapes"):
        hierarchical.grade({**best, "coef_auto_loc": np.zeros(5)}, stats, post)
