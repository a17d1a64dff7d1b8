"""Tests of companion.predictive: batching does not change the draws, the
results agree with numpyro's Predictive and with closed forms, bad inputs are
rejected."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro.infer import Predictive
from numpyro.infer.autoguide import AutoLaplaceApproximation, AutoNormal

from companion import bnn, predictive


def linear_model(x, y=None, noise=1.0):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0))
    mean = numpyro.deterministic("mean", w * x)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(mean, noise), obs=y)


LINEAR_GUIDE = AutoNormal(linear_model)
# AutoNormal's parameters for q(w) = Normal(1, 0.1)
LINEAR_PARAMS = {"w_auto_loc": jnp.array(1.0), "w_auto_scale": jnp.array(0.1)}
X = jnp.linspace(-2.0, 2.0, 9)


@pytest.fixture(scope="module", autouse=True)
def _init_linear_guide():
    # AutoNormal builds its prototype on its first call; y must be observed
    # then, or it would become a latent site of the guide
    numpyro.handlers.seed(LINEAR_GUIDE, 0)(X, jnp.zeros_like(X))


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batching_does_not_change_the_draws(batch_size):
    key = jax.random.key(0)
    kwargs = {"num_samples": 40, "return_sites": ["mean", "y"]}
    whole = predictive.posterior_predictive(
        key, linear_model, LINEAR_GUIDE, LINEAR_PARAMS, X, **kwargs
    )
    batched = predictive.posterior_predictive(
        key,
        linear_model,
        LINEAR_GUIDE,
        LINEAR_PARAMS,
        X,
        batch_size=batch_size,
        **kwargs,
    )
    assert set(batched) == {"mean", "y"}
    for site in ("mean", "y"):
        assert batched[site].shape == (40, 9)
        np.testing.assert_allclose(batched[site], whole[site], rtol=1e-6, atol=1e-6)


def test_agrees_with_the_guide_and_numpyro_predictive_on_the_same_draws():
    key_guide, key_model = jax.random.split(jax.random.key(1))
    samples = predictive.sample_posterior(
        key_guide, LINEAR_GUIDE, LINEAR_PARAMS, X, num_samples=30
    )
    # an autoguide draws through its own sample_posterior
    expected = LINEAR_GUIDE.sample_posterior(
        key_guide, LINEAR_PARAMS, X, sample_shape=(30,)
    )
    np.testing.assert_allclose(samples["w"], expected["w"], rtol=1e-6)
    ours = predictive.predict(key_model, linear_model, samples, X, batch_size=8)
    # Predictive's default sites: the unobserved sample "y" and the deterministic "mean"
    assert set(ours) == {"mean", "y"}
    model_predictive = Predictive(linear_model, posterior_samples=samples)
    theirs = jax.jit(model_predictive)(key_model, X)
    # the deterministic site depends on the draws only, not on the keys
    np.testing.assert_allclose(ours["mean"], theirs["mean"], rtol=1e-6)
    np.testing.assert_allclose(ours["mean"], samples["w"][:, None] * X, rtol=1e-6)


def test_predictive_moments_match_the_closed_form():
    # w ~ N(1, 0.1²), y = w x + N(0, 1): E[y] = x, Var[y] = 0.01 x² + 1
    out = predictive.posterior_predictive(
        jax.random.key(2),
        linear_model,
        LINEAR_GUIDE,
        LINEAR_PARAMS,
        X,
        num_samples=8000,
        batch_size=1000,
    )
    y = np.asarray(out["y"], dtype=np.float64)
    sd = np.sqrt(0.01 * np.asarray(X) ** 2 + 1.0)
    # standard errors: sd / sqrt(8000) ≈ 0.012 for the mean, ≈ 1% for the sd
    np.testing.assert_allclose(y.mean(0), X, atol=5 * 0.012)
    np.testing.assert_allclose(y.std(0), sd, rtol=0.05)


def test_non_array_arguments_are_passed_through():
    out = predictive.posterior_predictive(
        jax.random.key(3),
        linear_model,
        LINEAR_GUIDE,
        LINEAR_PARAMS,
        X,
        num_samples=2000,
        batch_size=500,
        return_sites=["y"],
        noise=0.01,
    )
    resid = out["y"] - out["y"].mean(0)
    # with noise 0.01: Var[y] = 0.1² x² + 0.01², not 0.1² x² + 1
    sd = jnp.sqrt(0.01 * X**2 + 0.01**2)
    np.testing.assert_allclose(resid.std(0), sd, rtol=0.1)


def test_bnn_grid_predictions_batched_and_unbatched_agree():
    mlp = bnn.MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))
    model, guide = bnn.build_model(mlp), bnn.build_guide(mlp)
    shapes = bnn.param_shapes(mlp)
    keys = jax.random.split(jax.random.key(5), len(shapes))
    params = {}
    for key, (site, shape) in zip(keys, shapes.items(), strict=True):
        params[f"{site}_loc"] = jax.random.normal(key, shape)
        params[f"{site}_scale"] = jnp.full(shape, 0.3)
    grid = jax.random.normal(jax.random.key(6), (300, 2))
    runs = [
        predictive.posterior_predictive(
            jax.random.key(7),
            model,
            guide,
            params,
            grid,
            num_samples=50,
            batch_size=batch_size,
            return_sites=["p"],
        )["p"]
        for batch_size in (None, 16)
    ]
    assert runs[0].shape == (50, 300)
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-6, atol=1e-7)
    assert float(runs[0].std(0).mean()) > 0.01  # the draws differ


def test_a_laplace_guide_predicts_with_its_gaussian_spread():
    # Laplace is exact on the linear-Gaussian model: q(w) = N(m, s²) with
    # 1/s² = 1 + Σx² and m = s² Σxy, so the site mean = w x has sd s |x|.
    # Drawn through Predictive, AutoLaplaceApproximation gives its Delta: the
    # MAP point every time, sd 0.
    y_obs = 0.7 * X + jnp.linspace(-0.5, 0.5, X.shape[0])
    guide = AutoLaplaceApproximation(linear_model)
    numpyro.handlers.seed(guide, 0)(X, y_obs)  # set up on the data, as svi.init
    precision = 1.0 + float(jnp.sum(X**2))
    post_mean, post_sd = float(jnp.sum(X * y_obs)) / precision, precision**-0.5
    params = {"auto_loc": jnp.array([post_mean])}
    out = predictive.posterior_predictive(
        jax.random.key(10),
        linear_model,
        guide,
        params,
        X,
        num_samples=4_000,
        batch_size=1_000,
        return_sites=["mean"],
    )
    # standard error of an sd from 4,000 normal draws: about 1.1%
    np.testing.assert_allclose(
        out["mean"].std(0), post_sd * jnp.abs(X), rtol=0.05, atol=1e-6
    )
    standard_error = post_sd * jnp.abs(X) / 4_000**0.5
    assert bool(
        jnp.all(jnp.abs(out["mean"].mean(0) - post_mean * X) <= 4 * standard_error)
    )
    # the draws are the guide's own sample_posterior, latent sites only
    key = jax.random.key(11)
    draws = predictive.sample_posterior(key, guide, params, X, num_samples=4_000)
    assert set(draws) == {"w"}
    theirs = guide.sample_posterior(key, params, X, sample_shape=(4_000,))
    np.testing.assert_allclose(draws["w"], theirs["w"], rtol=1e-6)
    assert float(draws["w"].std()) == pytest.approx(post_sd, rel=0.05)


def test_autoguide_draws_are_latent_sites_only_and_unset_guides_are_refused():
    # AutoNormal draws through its sample_posterior; the model's deterministic
    # site is not a latent variable and is left out.
    draws = predictive.sample_posterior(
        jax.random.key(12), LINEAR_GUIDE, LINEAR_PARAMS, X, num_samples=3_000
    )
    assert set(draws) == {"w"}
    assert float(draws["w"].mean()) == pytest.approx(1.0, abs=4 * 0.1 / 3_000**0.5)
    assert float(draws["w"].std()) == pytest.approx(0.1, rel=0.05)
    with pytest.raises(ValueError, match=r"svi\.init"):
        predictive.sample_posterior(
            jax.random.key(0), AutoNormal(linear_model), {}, X, num_samples=3
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"num_samples": 5, "batch_size": 0}, ValueError, "batch_size"),
        ({"num_samples": 5, "return_sites": "y"}, ValueError, "return_sites"),
    ],
)
def test_posterior_predictive_rejects_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        predictive.posterior_predictive(
            jax.random.key(0), linear_model, LINEAR_GUIDE, LINEAR_PARAMS, X, **kwargs
        )


def test_bad_keys_and_samples_are_rejected():
    with pytest.raises(TypeError, match="rng_key"):
        predictive.posterior_predictive(
            0, linear_model, LINEAR_GUIDE, LINEAR_PARAMS, X, num_samples=3
        )
    with pytest.raises(ValueError, match="leading"):
        predictive.predict(
            jax.random.key(0),
            linear_model,
            {"w": jnp.zeros(3), "v": jnp.zeros(4)},
            X,
        )
    with pytest.raises(ValueError, match="non-empty dict"):
        predictive.predict(jax.random.key(0), linear_model, {}, X)


@pytest.mark.parametrize("batch_size", [None, 1, 7])
@pytest.mark.parametrize("parallel", [False, True])
def test_predict_gives_predictives_draws_key_for_key(batch_size, parallel):
    # Draw i uses the i-th of jax.random.split(rng_key, num_draws), as in
    # Predictive: the sampled site y agrees too, not only the deterministic one.
    samples = {"w": jax.random.normal(jax.random.key(8), (30,))}
    key = jax.random.key(9)
    ours = predictive.predict(key, linear_model, samples, X, batch_size=batch_size)
    theirs = jax.jit(Predictive(linear_model, samples, parallel=parallel))(key, X)
    assert set(ours) == set(theirs) == {"mean", "y"}
    for site in ("mean", "y"):
        np.testing.assert_allclose(ours[site], theirs[site], rtol=1e-6, atol=1e-6)


def test_predictive_is_sequential_by_default_and_vectorised_with_parallel():
    # What the chapter says of NumPyro's Predictive: parallel=False (the
    # default) loops over the draws (a lax.map, i.e. a scan of one draw per
    # iteration), parallel=True vectorises them (no loop).
    samples = {"w": jnp.zeros(30)}

    def loops(**kwargs):
        jaxpr = jax.make_jaxpr(Predictive(linear_model, samples, **kwargs))(
            jax.random.key(0), X
        )
        return [e for e in jaxpr.eqns if e.primitive.name == "scan"]

    (scan,) = loops()
    assert scan.params["length"] == 30
    assert loops(parallel=True) == []
