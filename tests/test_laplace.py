"""Tests of companion.laplace: the linearised predictive is exact for a model
linear in its latent variables, agrees with Monte Carlo of the nonlinear
model when the covariance is small, reads the Gaussian of a fitted
AutoLaplaceApproximation, and rejects bad inputs."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import (
    AutoLaplaceApproximation,
    AutoMultivariateNormal,
    AutoNormal,
)

from companion import bnn, laplace

A = jnp.array([[1.0, 2.0, -0.5], [0.0, 3.0, 1.0], [1.0, -1.0, 0.2], [0.3, 0.0, 0.0]])
LOC = jnp.array([0.2, -0.1, 0.4])
SCALE_TRIL = jnp.array([[0.5, 0.0, 0.0], [0.2, 0.3, 0.0], [-0.1, 0.4, 0.6]])


def logistic_model(x, y=None):
    """Logistic regression: logits linear in the latent variables."""
    w = numpyro.sample("w", dist.Normal(0.0, 2.0).expand([x.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 2.0))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)


@pytest.fixture(scope="module")
def logistic_fit():
    key_x, key_y, key_fit = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(key_x, (200, 2))
    y = jax.random.bernoulli(key_y, jax.nn.sigmoid(x @ jnp.array([1.5, -1.0]) + 0.3))
    y = y.astype(jnp.int32)
    guide = AutoLaplaceApproximation(logistic_model)
    svi = SVI(logistic_model, guide, optax.adam(0.05), Trace_ELBO())
    result = svi.run(key_fit, 2_000, x, y, progress_bar=False)
    return guide, result.params, x


def test_linearise_is_exact_for_a_linear_function():
    out = laplace.linearise(lambda z: A @ z, LOC, SCALE_TRIL)
    np.testing.assert_allclose(out.mean, A @ LOC, rtol=1e-6)
    np.testing.assert_allclose(out.factor, A @ SCALE_TRIL, rtol=1e-6, atol=1e-7)
    covariance = A @ SCALE_TRIL @ SCALE_TRIL.T @ A.T
    np.testing.assert_allclose(out.variance, jnp.diag(covariance), rtol=1e-6)


def test_linearise_takes_the_jacobian_at_loc():
    def fn(z):
        return jnp.tanh(A @ z) + (A @ z) ** 2

    out = laplace.linearise(fn, LOC, SCALE_TRIL)
    jacobian = jax.jacfwd(fn)(LOC)
    np.testing.assert_allclose(out.mean, fn(LOC), rtol=1e-6)
    np.testing.assert_allclose(out.factor, jacobian @ SCALE_TRIL, rtol=1e-5, atol=1e-6)


def test_glm_predictive_of_a_linear_model_is_the_exact_gaussian_predictive():
    # logits linear in z: the linearised predictive is the exact one, draw by
    # draw, when both use the same key (MultivariateNormal.sample's noise)
    key = jax.random.key(3)
    out = laplace.linearise(lambda z: A @ z, LOC, SCALE_TRIL)
    p = laplace.glm_predictive(key, out, num_samples=500)
    z = dist.MultivariateNormal(LOC, scale_tril=SCALE_TRIL).sample(key, (500,))
    assert p.shape == (500, 4)
    np.testing.assert_allclose(p, jax.nn.sigmoid(z @ A.T), rtol=1e-5, atol=1e-6)


def test_glm_predictive_matches_the_nonlinear_model_for_a_small_covariance():
    def fn(z):
        return 3.0 * jnp.tanh(A @ z + 0.5)

    key = jax.random.key(4)
    small = 0.01 * SCALE_TRIL
    glm = laplace.glm_predictive(
        key, laplace.linearise(fn, LOC, small), num_samples=20_000
    )
    z = dist.MultivariateNormal(LOC, scale_tril=small).sample(key, (20_000,))
    nonlinear = jax.nn.sigmoid(jax.vmap(fn)(z))
    np.testing.assert_allclose(glm.mean(0), nonlinear.mean(0), atol=1e-4)
    np.testing.assert_allclose(glm.std(0), nonlinear.std(0), rtol=0.02, atol=1e-5)
    # ... and not for a large one: the test above can fail
    large = 3.0 * SCALE_TRIL
    glm = laplace.glm_predictive(key, laplace.linearise(fn, LOC, large), num_samples=5)
    z = dist.MultivariateNormal(LOC, scale_tril=large).sample(key, (5,))
    assert float(jnp.max(jnp.abs(glm - jax.nn.sigmoid(jax.vmap(fn)(z))))) > 0.05


def test_probit_predictive_approximates_the_logistic_normal_integral():
    mean = jnp.linspace(-6.0, 6.0, 25)
    for sd in (0.0, 0.5, 2.0, 5.0):
        out = laplace.LinearisedLogits(mean, jnp.full((25, 1), sd))
        probit = laplace.probit_predictive(out)
        # the integral by Gauss-Hermite quadrature
        nodes, weights = np.polynomial.hermite_e.hermegauss(80)
        exact = (
            jax.nn.sigmoid(mean[:, None] + sd * nodes[None]) @ weights
        ) / math.sqrt(2 * math.pi)
        np.testing.assert_allclose(probit, exact, atol=0.02)
        if sd == 0.0:
            np.testing.assert_allclose(probit, jax.nn.sigmoid(mean), rtol=1e-6)
    assert float(laplace.probit_predictive(out)[12]) == 0.5


def test_laplace_gaussian_reads_the_fitted_guide(logistic_fit):
    guide, params, _ = logistic_fit
    loc, scale_tril = laplace.laplace_gaussian(guide, params)
    posterior = guide.get_posterior(params)
    np.testing.assert_allclose(loc, params["auto_loc"])
    np.testing.assert_allclose(scale_tril, posterior.scale_tril, rtol=1e-5, atol=1e-7)
    assert np.all(np.diag(scale_tril) > 0)
    np.testing.assert_allclose(scale_tril, jnp.tril(scale_tril))


def test_logit_function_maps_the_latent_vector_to_the_model_logits(logistic_fit):
    guide, params, x = logistic_fit
    fn = laplace.logit_function(logistic_model, guide, params, x)
    loc, _ = laplace.laplace_gaussian(guide, params)
    sites = guide.median(params)
    np.testing.assert_allclose(fn(loc), x @ sites["w"] + sites["b"], rtol=1e-5)


def test_linearised_laplace_agrees_with_the_guides_own_draws(logistic_fit):
    # logistic regression is linear in its latents: the GLM predictive is the
    # sampled predictive of the guide itself, draw by draw
    guide, params, x = logistic_fit
    key = jax.random.key(7)
    loc, scale_tril = laplace.laplace_gaussian(guide, params)
    fn = laplace.logit_function(logistic_model, guide, params, x)
    out = laplace.linearise(fn, loc, scale_tril)
    p = laplace.glm_predictive(key, out, num_samples=300)
    draws = guide.sample_posterior(key, params, sample_shape=(300,))
    exact = jax.nn.sigmoid(draws["w"] @ x.T + draws["b"][:, None])
    np.testing.assert_allclose(p, exact, rtol=1e-4, atol=1e-5)


def test_linearised_laplace_on_the_bnn_has_the_model_mean_logit():
    mlp = bnn.MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))
    model = bnn.build_model(mlp)
    x = jax.random.normal(jax.random.key(1), (30, 2))
    y = (x[:, 0] > 0).astype(jnp.int32)
    guide = AutoLaplaceApproximation(model)
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(2), x, y))
    # at the initial point the Hessian need not be positive definite: give
    # the Gaussian by hand, around the guide's point
    loc = params["auto_loc"]
    fn = laplace.logit_function(model, guide, params, x)
    out = laplace.linearise(fn, loc, 0.1 * jnp.eye(loc.shape[0]))
    p_map = numpyro.infer.Predictive(
        model, posterior_samples=jax.tree.map(lambda v: v[None], guide.median(params))
    )(jax.random.key(0), x)["p"][0]
    np.testing.assert_allclose(jax.nn.sigmoid(out.mean), p_map, rtol=1e-5, atol=1e-6)
    assert out.factor.shape == (30, loc.shape[0])


def saddle_model():
    u = numpyro.sample("u", dist.Normal(0.0, 1.0))
    numpyro.factor("bump", u**2)  # log joint u**2 / 2: curves the wrong way


def test_degenerate_covariance_is_rejected():
    guide = AutoLaplaceApproximation(saddle_model)
    svi = SVI(saddle_model, guide, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0)))
    with pytest.raises(ValueError, match="not positive definite"):
        laplace.laplace_gaussian(guide, params)


def test_bad_inputs_are_rejected(logistic_fit):
    guide, params, x = logistic_fit
    out = laplace.linearise(lambda z: A @ z, LOC, SCALE_TRIL)
    with pytest.raises(TypeError, match="guide"):
        laplace.laplace_gaussian(AutoNormal(logistic_model), params)
    with pytest.raises(TypeError, match="params"):
        laplace.laplace_gaussian(guide, [1.0])
    with pytest.raises(ValueError, match="set up"):
        laplace.laplace_gaussian(AutoMultivariateNormal(logistic_model), params)
    with pytest.raises(TypeError, match="model"):
        laplace.logit_function(None, guide, params, x)
    with pytest.raises(ValueError, match="site 'z'"):
        laplace.logit_function(logistic_model, guide, params, x, site="z")(
            params["auto_loc"]
        )
    with pytest.raises(TypeError, match="fn"):
        laplace.linearise(None, LOC, SCALE_TRIL)
    with pytest.raises(ValueError, match="loc"):
        laplace.linearise(lambda z: z, jnp.zeros((2, 2)), SCALE_TRIL)
    with pytest.raises(ValueError, match="scale_tril"):
        laplace.linearise(lambda z: z, LOC, jnp.eye(2))
    with pytest.raises(TypeError, match="rng_key"):
        laplace.glm_predictive(0, out, num_samples=3)
    with pytest.raises(ValueError, match="num_samples"):
        laplace.glm_predictive(jax.random.key(0), out, num_samples=0)
    with pytest.raises(TypeError, match="logits"):
        laplace.probit_predictive((out.mean, out.factor))
    with pytest.raises(ValueError, match="one row per input"):
        laplace.probit_predictive(laplace.LinearisedLogits(out.mean, out.factor[:2]))
