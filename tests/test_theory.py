"""Tests of companion.theory: every closed form against an independent
computation (SciPy's multivariate normal, quadrature, NumPy formulas), Monte
Carlo estimates against closed forms with stated tolerances, bad inputs.

Exact identities are checked in float64 (``jax.enable_x64``) at rtol 1e-5 or
tighter; references are computed in NumPy/SciPy float64.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from numpyro.infer.util import log_density
from scipy import integrate, optimize, stats

from companion import gaussians, gradients, theory


@pytest.fixture(autouse=True)
def _float64():
    """Every test here runs in float64 (``jax.enable_x64``), local to this module."""
    with jax.enable_x64(True):
        yield


# (prior_loc, prior_scale, noise_scale, num_obs, data seed)
PARAMETER_SETS = [
    (0.0, 1.0, 1.0, 1, 0),
    (0.5, 2.0, 1.5, 12, 1),
    (-3.0, 0.3, 2.0, 40, 2),
    (10.0, 5.0, 0.5, 200, 3),
]
IDS = [f"n={p[3]}" for p in PARAMETER_SETS]


def _data(prior_loc, prior_scale, noise_scale, num_obs, seed, dim=None):
    rng = np.random.default_rng(seed)
    shape = (num_obs,) if dim is None else (num_obs, dim)
    theta = rng.normal(prior_loc, prior_scale, size=shape[1:])
    return theta + noise_scale * rng.normal(size=shape)


def _log_joint_np(theta, y, prior_loc, prior_scale, noise_scale):
    """log p(y | θ) + log p(θ), the literal sum over observations; θ scalar
    or a vector of values (NumPy, without SciPy's per-call overhead)."""
    theta = np.asarray(theta, dtype=np.float64)
    log_lik = _norm_logpdf(y[:, None], theta[None], noise_scale).sum(0)
    return (log_lik + _norm_logpdf(theta, prior_loc, prior_scale)).reshape(theta.shape)


def _norm_logpdf(x, loc, scale):
    return -0.5 * np.log(2 * np.pi * scale**2) - (x - loc) ** 2 / (2 * scale**2)


def _quadrature(y, prior_loc, prior_scale, noise_scale):
    """log p(D), posterior mean and posterior sd by brute-force 1-D quadrature."""
    # Locate the mode on a wide grid (vectorised literal log joint), then
    # integrate around it with adaptive quadrature.
    grid = np.linspace(
        min(prior_loc - 20 * prior_scale, y.min() - 10),
        max(prior_loc + 20 * prior_scale, y.max() + 10),
        20_001,
    )
    log_joint = _log_joint_np(grid, y, prior_loc, prior_scale, noise_scale)
    mode, top = grid[np.argmax(log_joint)], log_joint.max()
    width = 1.0 / np.sqrt(1 / prior_scale**2 + len(y) / noise_scale**2)

    def moment(power):
        def integrand(t):
            log_f = _log_joint_np(t, y, prior_loc, prior_scale, noise_scale)
            return t**power * np.exp(log_f - top)

        value, _ = integrate.quad(
            integrand, mode - 40 * width, mode + 40 * width, epsabs=0, epsrel=1e-10
        )
        return value

    m0, m1, m2 = moment(0), moment(1), moment(2)
    mean = m1 / m0
    return np.log(m0) + top, mean, np.sqrt(m2 / m0 - mean**2)


# --------------------------------------------------------------------------
# Closed forms against independent computations.


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=IDS)
def test_log_evidence_is_the_multivariate_normal_marginal_of_y(params):
    prior_loc, prior_scale, noise_scale, n, _ = params
    y = _data(*params)
    cov = prior_scale**2 * np.ones((n, n)) + noise_scale**2 * np.eye(n)
    expected = stats.multivariate_normal(np.full(n, prior_loc), cov).logpdf(y)
    got = theory.normal_log_evidence(y, prior_loc, prior_scale, noise_scale)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=IDS)
def test_posterior_and_evidence_match_quadrature(params):
    prior_loc, prior_scale, noise_scale, _, _ = params
    y = _data(*params)
    log_evidence, mean, sd = _quadrature(y, prior_loc, prior_scale, noise_scale)
    loc, scale = theory.normal_posterior(y, prior_loc, prior_scale, noise_scale)
    got = theory.normal_log_evidence(y, prior_loc, prior_scale, noise_scale)
    np.testing.assert_allclose(float(got), log_evidence, rtol=1e-8)
    np.testing.assert_allclose(float(loc), mean, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(float(scale), sd, rtol=1e-6)
    assert jnp.shape(loc) == jnp.shape(scale) == ()


def test_independent_coordinates_sum_and_stack():
    y = _data(0.5, 2.0, 1.5, 7, 4, dim=3)
    loc, scale = theory.normal_posterior(y, 0.5, 2.0, 1.5)
    got = theory.normal_log_evidence(y, 0.5, 2.0, 1.5)
    columns = [theory.normal_posterior(y[:, j], 0.5, 2.0, 1.5) for j in range(3)]
    elbo = theory.normal_elbo(y, loc, scale, 0.5, 2.0, 1.5)
    cov = 4.0 * np.ones((7, 7)) + 2.25 * np.eye(7)
    expected = sum(
        stats.multivariate_normal(np.full(7, 0.5), cov).logpdf(y[:, j])
        for j in range(3)
    )
    assert loc.shape == scale.shape == (3,)
    np.testing.assert_allclose(loc, [c[0] for c in columns], rtol=1e-12)
    np.testing.assert_allclose(scale, [c[1] for c in columns], rtol=1e-12)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)
    np.testing.assert_allclose(float(elbo), expected, rtol=1e-10)


@pytest.mark.parametrize(
    ("loc_q", "scale_q", "loc_p", "scale_p"),
    [
        (0.0, 1.0, 0.0, 1.0),
        (1.0, 0.5, -0.5, 2.0),
        (3.0, 2.0, 0.0, 0.7),
        (0.1, 0.05, 0.0, 1.0),
    ],
)
def test_kl_normal_matches_numerical_integration(loc_q, scale_q, loc_p, scale_p):
    q, p = stats.norm(loc_q, scale_q), stats.norm(loc_p, scale_p)
    expected, _ = integrate.quad(
        lambda t: q.pdf(t) * (q.logpdf(t) - p.logpdf(t)),
        loc_q - 30 * scale_q,
        loc_q + 30 * scale_q,
        epsabs=1e-13,
        epsrel=1e-12,
    )
    got = gaussians.kl_normal(loc_q, scale_q, loc_p, scale_p)
    np.testing.assert_allclose(float(got), expected, rtol=1e-8, atol=1e-12)


def test_kl_normal_broadcasts_elementwise():
    loc_q = np.array([[0.0], [1.0]])  # (2, 1)
    scale_q = np.array([0.5, 1.0, 2.0])  # (3,)
    got = gaussians.kl_normal(loc_q, scale_q, 0.0, 1.0)
    expected = [
        [float(gaussians.kl_normal(m, s, 0.0, 1.0)) for s in scale_q] for m in (0, 1)
    ]
    assert got.shape == (2, 3)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def _kl_mvn_np(loc_q, cov_q, loc_p, cov_p):
    k = len(loc_q)
    inv_p = np.linalg.inv(cov_p)
    diff = loc_p - loc_q
    return 0.5 * (
        np.trace(inv_p @ cov_q)
        + diff @ inv_p @ diff
        - k
        + np.linalg.slogdet(cov_p)[1]
        - np.linalg.slogdet(cov_q)[1]
    )


def test_kl_mvn_matches_numpy_formula_and_1d_quadrature():
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    cov_q, cov_p = a @ a.T + 0.5 * np.eye(3), b @ b.T + 0.5 * np.eye(3)
    loc_q, loc_p = rng.normal(size=3), rng.normal(size=3)
    got = gaussians.kl_mvn(loc_q, cov_q, loc_p, cov_p)
    same = gaussians.kl_mvn(loc_p, cov_p, loc_p, cov_p)
    one_d = gaussians.kl_mvn([1.0], [[0.25]], [-0.5], [[4.0]])
    np.testing.assert_allclose(
        float(got), _kl_mvn_np(loc_q, cov_q, loc_p, cov_p), rtol=1e-10
    )
    assert abs(float(same)) < 1e-12
    q, p = stats.norm(1.0, 0.5), stats.norm(-0.5, 2.0)
    expected, _ = integrate.quad(
        lambda t: q.pdf(t) * (q.logpdf(t) - p.logpdf(t)), -15, 17
    )
    np.testing.assert_allclose(float(one_d), expected, rtol=1e-8)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.9, -0.95])
def test_mean_field_optimum_minimises_reverse_kl(rho):
    loc = np.array([1.0, -2.0])
    sd = np.array([0.5, 3.0])
    cov = np.array([[1.0, rho], [rho, 1.0]]) * np.outer(sd, sd)

    def objective(log_scale):
        return _kl_mvn_np(loc, np.diag(np.exp(2 * log_scale)), loc, cov)

    best = optimize.minimize(
        objective, np.log(sd), method="BFGS", options={"gtol": 1e-12}
    )
    got_loc, got_scale = gaussians.mean_field_optimum(loc, cov)
    np.testing.assert_allclose(got_loc, loc)
    np.testing.assert_allclose(got_scale, np.exp(best.x), rtol=1e-5)
    # Under-dispersed by exactly sqrt(1 - rho^2) for a 2-D Gaussian.
    np.testing.assert_allclose(got_scale / sd, np.sqrt(1 - rho**2), rtol=1e-10)


# --------------------------------------------------------------------------
# The ELBO: closed form, identity, and NumPyro's Monte Carlo estimate.


def _over_keys(fn, keys):
    """``fn`` mapped over ``keys``, compiled once (eager vmap is slow here)."""
    return jax.jit(jax.vmap(fn))(keys)


def _random_q(seed, num, loc_center):
    rng = np.random.default_rng(seed)
    return loc_center + rng.normal(0, 3, size=num), np.exp(
        rng.uniform(-4, 1.5, size=num)
    )


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=IDS)
def test_elbo_matches_gauss_hermite_expectation(params):
    prior_loc, prior_scale, noise_scale, _, _ = params
    y = _data(*params)
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)
    weights = weights / weights.sum()
    for q_loc, q_scale in zip(*_random_q(7, 5, y.mean()), strict=True):
        theta = q_loc + q_scale * nodes
        log_joint = np.array(
            [_log_joint_np(t, y, prior_loc, prior_scale, noise_scale) for t in theta]
        )
        expected = weights @ (log_joint - stats.norm.logpdf(theta, q_loc, q_scale))
        got = theory.normal_elbo(y, q_loc, q_scale, prior_loc, prior_scale, noise_scale)
        expected_ll = theory.normal_expected_log_likelihood(
            y, q_loc, q_scale, noise_scale
        )
        np.testing.assert_allclose(float(got), expected, rtol=1e-9)
        ll = weights @ np.array(
            [stats.norm.logpdf(y, t, noise_scale).sum() for t in theta]
        )
        np.testing.assert_allclose(float(expected_ll), ll, rtol=1e-9)


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=IDS)
def test_log_evidence_is_elbo_plus_kl_to_posterior_for_many_q(params):
    prior_loc, prior_scale, noise_scale, _, _ = params
    y = _data(*params)
    q_locs, q_scales = _random_q(8, 50, y.mean())
    log_evidence = theory.normal_log_evidence(y, prior_loc, prior_scale, noise_scale)
    loc, scale = theory.normal_posterior(y, prior_loc, prior_scale, noise_scale)
    elbos = jax.jit(
        jax.vmap(
            lambda m, s: theory.normal_elbo(
                y, m, s, prior_loc, prior_scale, noise_scale
            )
        )
    )(jnp.asarray(q_locs), jnp.asarray(q_scales))
    kls = gaussians.kl_normal(q_locs, q_scales, loc, scale)
    at_posterior = theory.normal_elbo(
        y, loc, scale, prior_loc, prior_scale, noise_scale
    )
    np.testing.assert_allclose(elbos + kls, np.full(50, float(log_evidence)), rtol=1e-9)
    assert np.all(np.asarray(elbos) < float(log_evidence))
    np.testing.assert_allclose(float(at_posterior), float(log_evidence), rtol=1e-12)


@pytest.mark.parametrize("params", PARAMETER_SETS, ids=IDS)
def test_elbo_is_concave_in_loc_and_log_scale(params):
    """The gap log p(D) - ELBO = KL(q ‖ posterior) is convex in (loc, log scale):
    the ELBO's Hessian there is diag(-1/τ_n², -2 scale²/τ_n²), τ_n the posterior
    scale, negative definite everywhere (chapter 2's single-peak landscape)."""
    prior_loc, prior_scale, noise_scale, _, _ = params
    y = _data(*params)
    _, post_scale = theory.normal_posterior(y, prior_loc, prior_scale, noise_scale)

    def elbo(v):
        return theory.normal_elbo(
            y, v[0], jnp.exp(v[1]), prior_loc, prior_scale, noise_scale
        )

    q_locs, q_scales = _random_q(9, 20, y.mean())
    points = jnp.stack([q_locs, np.log(q_scales)], axis=1)
    hessians = jax.jit(jax.vmap(jax.hessian(elbo)))(points)
    tau2 = float(post_scale) ** 2
    expected = np.zeros((20, 2, 2))
    expected[:, 0, 0] = -1.0 / tau2
    expected[:, 1, 1] = -2.0 * q_scales**2 / tau2
    np.testing.assert_allclose(hessians, expected, rtol=1e-8, atol=1e-10)


def test_trace_elbo_converges_to_the_closed_form():
    """NumPyro's Trace_ELBO loss is the negative ELBO; with S particles its
    error is within 5 standard errors, sd/sqrt(S), of the closed form."""
    y = _data(0.5, 2.0, 1.5, 12, 1)
    q_loc, q_scale, num_particles = 0.2, 0.8, 20_000
    params = {"theta_loc": jnp.asarray(q_loc), "theta_scale": jnp.asarray(q_scale)}
    loss = jax.jit(Trace_ELBO(num_particles=num_particles).loss, static_argnums=(2, 3))(
        jax.random.key(0),
        params,
        theory.normal_model,
        theory.normal_guide,
        y,
        0.5,
        2.0,
        1.5,
    )
    exact = theory.normal_elbo(y, q_loc, q_scale, 0.5, 2.0, 1.5)
    theta = np.random.default_rng(0).normal(q_loc, q_scale, size=20_000)
    per_draw = _log_joint_np(theta, y, 0.5, 2.0, 1.5)
    per_draw -= stats.norm.logpdf(theta, q_loc, q_scale)
    tolerance = 5 * per_draw.std() / np.sqrt(num_particles)
    assert abs(-float(loss) - float(exact)) < tolerance


def test_trace_elbo_at_the_posterior_is_the_log_evidence_with_one_particle():
    """At q = p(θ|D), log p(y, θ) - log q(θ) = log p(D) for every θ: zero variance."""
    y = _data(-3.0, 0.3, 2.0, 40, 2)
    loc, scale = theory.normal_posterior(y, -3.0, 0.3, 2.0)
    log_evidence = theory.normal_log_evidence(y, -3.0, 0.3, 2.0)
    losses = [
        Trace_ELBO(num_particles=1).loss(
            jax.random.key(seed),
            {"theta_loc": loc, "theta_scale": scale},
            theory.normal_model,
            theory.normal_guide,
            y,
            -3.0,
            0.3,
            2.0,
        )
        for seed in range(3)
    ]
    np.testing.assert_allclose(-np.array(losses), float(log_evidence), rtol=1e-10)


def test_svi_on_the_numpyro_model_finds_the_exact_posterior():
    import optax

    y = jnp.asarray(_data(0.5, 2.0, 1.5, 12, 1), dtype=jnp.float32)
    svi = SVI(theory.normal_model, theory.normal_guide, optax.adam(0.01), Trace_ELBO(8))
    result = svi.run(jax.random.key(0), 3_000, y, 0.5, 2.0, 1.5, progress_bar=False)
    loc, scale = theory.normal_posterior(y, 0.5, 2.0, 1.5)
    assert abs(float(result.params["theta_loc"]) - float(loc)) < 0.15 * float(scale)
    assert abs(float(result.params["theta_scale"]) / float(scale) - 1) < 0.1


def test_normal_model_simulates_num_obs():
    from numpyro.infer import Predictive

    draws = Predictive(theory.normal_model, num_samples=5)(jax.random.key(0), num_obs=7)
    assert draws["theta"].shape == (5,)
    assert draws["y"].shape == (5, 7)


# --------------------------------------------------------------------------
# Monte Carlo estimators against their closed forms.


def test_naive_evidence_relative_error_matches_quadrature_of_second_moment():
    y = _data(0.5, 2.0, 1.5, 5, 1)
    second, _ = integrate.quad(
        lambda t: (
            np.exp(2 * stats.norm.logpdf(y, t, 1.5).sum()) * stats.norm.pdf(t, 0.5, 2.0)
        ),
        -40,
        40,
        epsabs=0,
        epsrel=1e-12,
        points=[y.mean()],
    )
    evidence = np.exp(
        stats.multivariate_normal(
            np.full(5, 0.5), 4 * np.ones((5, 5)) + 2.25 * np.eye(5)
        ).logpdf(y)
    )
    expected = np.sqrt((second / evidence**2 - 1) / 10)
    got = theory.naive_evidence_relative_error(y, 0.5, 2.0, 1.5, 10)
    np.testing.assert_allclose(float(got), expected, rtol=1e-7)


def test_naive_log_evidence_is_unbiased_with_the_predicted_spread():
    """Over R repeats with S samples each, the estimates p̂/p(D) average to 1
    within 5 standard errors, and their sd matches the closed form to 5%."""
    y = _data(0.0, 1.0, 1.0, 3, 9, dim=2)
    num_samples, repeats = 20, 40_000
    keys = jax.random.split(jax.random.key(0), repeats)
    estimates = _over_keys(
        lambda k: theory.naive_log_evidence(k, y, 0.0, 1.0, 1.0, num_samples), keys
    )
    ratio = np.exp(
        np.asarray(estimates) - float(theory.normal_log_evidence(y, 0.0, 1.0, 1.0))
    )
    relative_error = float(
        theory.naive_evidence_relative_error(y, 0.0, 1.0, 1.0, num_samples)
    )
    assert abs(ratio.mean() - 1) < 5 * relative_error / np.sqrt(repeats)
    np.testing.assert_allclose(ratio.std(), relative_error, rtol=0.05)


def test_naive_log_evidence_uses_the_literal_likelihood_and_is_reproducible():
    y = _data(0.5, 2.0, 1.5, 12, 1)
    got = theory.naive_log_evidence(jax.random.key(3), y, 0.5, 2.0, 1.5, 50)
    again = theory.naive_log_evidence(jax.random.key(3), y, 0.5, 2.0, 1.5, 50)
    theta = 0.5 + 2.0 * jax.random.normal(jax.random.key(3), (50,))
    log_lik = np.array([stats.norm.logpdf(y, t, 1.5).sum() for t in np.asarray(theta)])
    expected = np.log(np.mean(np.exp(log_lik)))
    assert float(got) == float(again)
    np.testing.assert_allclose(float(got), expected, rtol=1e-10)


def test_naive_relative_error_grows_with_data_and_dimension():
    by_n = [
        float(
            theory.naive_evidence_relative_error(
                _data(0.0, 1.0, 1.0, n, 0), 0.0, 1.0, 1.0, 100
            )
        )
        for n in (1, 10, 100)
    ]
    by_d = [
        float(
            theory.naive_evidence_relative_error(
                _data(0.0, 1.0, 1.0, 5, 0, dim=d), 0.0, 1.0, 1.0, 100
            )
        )
        for d in (1, 4, 16)
    ]
    assert by_n[0] < by_n[1] < by_n[2]
    assert by_d[0] < by_d[1] < by_d[2]


@pytest.mark.parametrize(
    "estimator", [gradients.elbo_grad_reparam, gradients.elbo_grad_score]
)
def test_gradient_estimators_are_unbiased(estimator):
    """Means over many draws are within 5 standard errors of jax.grad of the
    closed-form ELBO, itself checked against central finite differences."""
    y = _data(0.5, 2.0, 1.5, 12, 1)
    args = (0.5, 2.0, 1.5)
    q_loc, q_scale, repeats = 0.3, 0.5, 50_000
    exact = jax.grad(theory.normal_elbo, argnums=(1, 2))(y, q_loc, q_scale, *args)
    keys = jax.random.split(jax.random.key(0), repeats)
    draws = _over_keys(lambda k: estimator(k, y, q_loc, q_scale, *args), keys)

    def elbo(m, s):
        return float(theory.normal_elbo(y, m, s, *args))

    h = 1e-5
    finite = (
        (elbo(q_loc + h, q_scale) - elbo(q_loc - h, q_scale)) / (2 * h),
        (elbo(q_loc, q_scale + h) - elbo(q_loc, q_scale - h)) / (2 * h),
    )
    np.testing.assert_allclose(np.array(exact), finite, rtol=1e-6)
    for draw, true in zip(draws, exact, strict=True):
        draw = np.asarray(draw)
        assert draw.shape == (repeats,)
        assert abs(draw.mean() - float(true)) < 5 * draw.std() / np.sqrt(repeats)


def test_reparameterised_gradient_has_lower_variance_and_averages_particles():
    y = _data(0.5, 2.0, 1.5, 12, 1)
    keys = jax.random.split(jax.random.key(1), 5_000)
    args = (y, 0.3, 0.5, 0.5, 2.0, 1.5)
    reparam = _over_keys(lambda k: gradients.elbo_grad_reparam(k, *args), keys)
    score = _over_keys(lambda k: gradients.elbo_grad_score(k, *args), keys)
    assert np.var(reparam[0]) < np.var(score[0])
    assert np.var(reparam[1]) < np.var(score[1])
    averaged = _over_keys(lambda k: gradients.elbo_grad_reparam(k, *args, 10), keys)
    np.testing.assert_allclose(np.var(averaged[0]) * 10, np.var(reparam[0]), rtol=0.1)


@pytest.mark.parametrize(
    ("q_loc", "q_scale"), [(-2.0, 0.5), (0.7, 0.05)], ids=["far", "narrow"]
)
def test_elbo_grad_variance_matches_numpyro_and_companion_estimators(q_loc, q_scale):
    """The exact variances against gradients of NumPyro's Trace_ELBO (KL
    sampled) and TraceMeanField_ELBO (KL in closed form) over 20,000 keys, and
    of elbo_grad_reparam. A strong prior (its precision larger than the
    likelihood's) keeps the two estimators' variances far apart, so swapping
    them, or dropping the prior's share, fails."""
    prior_loc, prior_scale, noise_scale, num_obs, seed = PARAMETER_SETS[2]
    y = _data(prior_loc, prior_scale, noise_scale, num_obs, seed)
    args = (prior_loc, prior_scale, noise_scale)
    keys = jax.random.split(jax.random.key(3), 20_000)
    params = {"theta_loc": q_loc, "theta_scale": q_scale}

    def numpyro_gradients(elbo):
        def one(k):
            grads = jax.grad(
                lambda p: (
                    -elbo.loss(k, p, theory.normal_model, theory.normal_guide, y, *args)
                )
            )(params)
            return grads["theta_loc"], grads["theta_scale"]

        return _over_keys(one, keys)

    exact_grad = jax.grad(theory.normal_elbo, argnums=(1, 2))(y, q_loc, q_scale, *args)
    sampled = gradients.elbo_grad_variance(y, q_loc, q_scale, *args)
    closed = gradients.elbo_grad_variance(y, q_loc, q_scale, *args, closed_form_kl=True)
    for draws, exact in (
        (numpyro_gradients(Trace_ELBO()), sampled),
        (
            _over_keys(
                lambda k: gradients.elbo_grad_reparam(k, y, q_loc, q_scale, *args), keys
            ),
            sampled,
        ),
        (numpyro_gradients(TraceMeanField_ELBO()), closed),
    ):
        for draw, variance, mean in zip(draws, exact, exact_grad, strict=True):
            draw = np.asarray(draw)
            np.testing.assert_allclose(draw.var(), float(variance), rtol=0.1)
            assert abs(draw.mean() - float(mean)) < 5 * draw.std() / np.sqrt(draw.size)
    # The strong prior: the closed-form KL removes most of the noise.
    assert float(closed[0]) < 0.5 * float(sampled[0])


def test_elbo_grad_variance_formulas_and_averaging():
    """Closed-form corner cases: at the exact posterior the sampled-KL loc
    variance is the posterior precision; with the KL in closed form it is
    (n/noise_scale²)² q_scale²; num_samples divides both variances."""
    prior_loc, prior_scale, noise_scale, num_obs, seed = PARAMETER_SETS[1]
    y = _data(prior_loc, prior_scale, noise_scale, num_obs, seed)
    args = (prior_loc, prior_scale, noise_scale)
    loc, scale = theory.normal_posterior(y, *args)
    var_loc, _ = gradients.elbo_grad_variance(y, float(loc), float(scale), *args)
    np.testing.assert_allclose(float(var_loc), 1 / float(scale) ** 2, rtol=1e-10)
    var_loc, var_scale = gradients.elbo_grad_variance(
        y, 0.3, 0.5, *args, closed_form_kl=True
    )
    np.testing.assert_allclose(
        float(var_loc), (num_obs / noise_scale**2) ** 2 * 0.25, rtol=1e-10
    )
    np.testing.assert_allclose(
        float(var_scale),
        (num_obs / noise_scale**2) ** 2 * ((0.3 - y.mean()) ** 2 + 2 * 0.25),
        rtol=1e-10,
    )
    averaged = gradients.elbo_grad_variance(y, 0.3, 0.5, *args, 7, closed_form_kl=True)
    np.testing.assert_allclose(np.array(averaged) * 7, [var_loc, var_scale], rtol=1e-12)


def test_functions_work_under_jit_and_vmap_in_float32():
    with jax.enable_x64(False):
        _jit_and_vmap()


def _jit_and_vmap():
    y = jnp.asarray(_data(0.5, 2.0, 1.5, 12, 1), dtype=jnp.float32)
    elbo = jax.jit(lambda m, s: theory.normal_elbo(y, m, s, 0.5, 2.0, 1.5))
    grid = jax.vmap(jax.vmap(elbo, in_axes=(0, None)), in_axes=(None, 0))(
        jnp.linspace(-1, 1, 4), jnp.linspace(0.1, 1, 3)
    )
    assert grid.shape == (3, 4)
    assert np.all(np.isfinite(grid))
    assert jax.jit(theory.normal_log_evidence)(y, 0.5, 2.0, 1.5).shape == ()


# --------------------------------------------------------------------------
# Bad inputs, rejected before any tracing with the argument named.

Y = np.array([0.1, -0.4, 1.2])


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: theory.normal_posterior(Y, 0.0, 0.0, 1.0), "prior_scale must be > 0"),
        (lambda: theory.normal_posterior(Y, 0.0, 1.0, -1.0), "noise_scale must be > 0"),
        (
            lambda: theory.normal_posterior(np.array([]), 0.0, 1.0, 1.0),
            "y must hold at least one",
        ),
        (
            lambda: theory.normal_posterior(np.zeros((2, 2, 2)), 0.0, 1.0, 1.0),
            r"y must have shape",
        ),
        (
            lambda: theory.normal_posterior(np.array([1.0, np.nan]), 0.0, 1.0, 1.0),
            "y must be finite",
        ),
        (
            lambda: theory.normal_posterior(Y, np.inf, 1.0, 1.0),
            "prior_loc must be finite",
        ),
        (
            lambda: theory.normal_log_evidence(Y, 0.0, 1.0, np.nan),
            "noise_scale must be finite",
        ),
        (
            lambda: theory.normal_log_evidence(np.zeros((0, 3)), 0.0, 1.0, 1.0),
            "y must hold",
        ),
        (lambda: theory.normal_elbo(Y, 0.0, 0.0, 0.0, 1.0, 1.0), "q_scale must be > 0"),
        (
            lambda: theory.normal_elbo(Y, np.zeros(2), 1.0, 0.0, 1.0, 1.0),
            "q_loc must be a scalar or have",
        ),
        (
            lambda: theory.normal_elbo(
                np.zeros((3, 2)), 0.0, np.ones(3), 0.0, 1.0, 1.0
            ),
            "q_scale must be a scalar or have",
        ),
        (
            lambda: theory.normal_expected_log_likelihood(Y, 0.0, 1.0, 0.0),
            "noise_scale must be > 0",
        ),
        (lambda: gaussians.kl_normal(0.0, -1.0, 0.0, 1.0), "scale_q must be > 0"),
        (lambda: gaussians.kl_normal(0.0, 1.0, 0.0, 0.0), "scale_p must be > 0"),
        (lambda: gaussians.kl_normal(np.nan, 1.0, 0.0, 1.0), "loc_q must be finite"),
        (
            lambda: gaussians.kl_normal(np.zeros(2), np.ones(3), 0.0, 1.0),
            "must broadcast",
        ),
        (
            lambda: gaussians.kl_mvn(np.zeros(2), np.eye(3), np.zeros(2), np.eye(2)),
            r"cov_q must have shape \(2, 2\)",
        ),
        (
            lambda: gaussians.kl_mvn(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3)),
            "loc_q and loc_p must have the same shape",
        ),
        (
            lambda: gaussians.kl_mvn(np.zeros(2), np.eye(2), np.zeros(2), -np.eye(2)),
            "cov_p must be positive definite",
        ),
        (
            lambda: gaussians.kl_mvn(
                np.zeros(2), [[1.0, 0.5], [0.0, 1.0]], np.zeros(2), np.eye(2)
            ),
            "cov_q must be symmetric",
        ),
        (lambda: gaussians.mean_field_optimum(0.0, np.eye(1)), r"loc must be a vector"),
        (
            lambda: gaussians.mean_field_optimum(np.zeros(2), [[1.0, 2.0], [2.0, 1.0]]),
            "cov must be positive definite",
        ),
        (
            lambda: theory.naive_log_evidence(jax.random.key(0), Y, 0.0, 1.0, 1.0, 0),
            "num_samples must be an int >= 1",
        ),
        (
            lambda: theory.naive_log_evidence(jax.random.key(0), Y, 0.0, 1.0, 1.0, 2.5),
            "num_samples must be an int >= 1",
        ),
        (
            lambda: theory.naive_evidence_relative_error(Y, 0.0, -2.0, 1.0, 10),
            "prior_scale must be > 0",
        ),
        (
            lambda: theory.normal_model(np.zeros((3, 2))),
            r"y must have shape \(n,\)",
        ),
        (
            lambda: theory.normal_model(num_obs=0),
            "num_obs must be an int >= 1",
        ),
        (
            lambda: gradients.elbo_grad_reparam(
                jax.random.key(0), np.zeros((3, 2)), 0.0, 1.0, 0.0, 1.0, 1.0
            ),
            r"y must have shape \(n,\)",
        ),
        (
            lambda: gradients.elbo_grad_score(
                jax.random.key(0), Y, 0.0, 0.0, 0.0, 1.0, 1.0
            ),
            "q_scale must be > 0",
        ),
        (
            lambda: gradients.elbo_grad_score(
                jax.random.key(0), Y, 0.0, 1.0, 0.0, 1.0, 1.0, True
            ),
            "num_samples must be an int >= 1",
        ),
        (
            lambda: gradients.elbo_grad_variance(Y, 0.0, 1.0, 0.0, 1.0, 1.0, 0),
            "num_samples must be an int >= 1",
        ),
        (
            lambda: gradients.elbo_grad_variance(
                np.zeros((3, 2)), 0.0, 1.0, 0.0, 1.0, 1.0
            ),
            r"y must have shape \(n,\)",
        ),
    ],
)
def test_bad_inputs_are_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_non_numeric_inputs_are_type_errors():
    with pytest.raises(TypeError, match="closed_form_kl must be a bool"):
        gradients.elbo_grad_variance(Y, 0.0, 1.0, 0.0, 1.0, 1.0, closed_form_kl="yes")
    with pytest.raises(TypeError, match="y must hold real numbers"):
        theory.normal_log_evidence(np.array(["a", "b"]), 0.0, 1.0, 1.0)
    with pytest.raises(TypeError, match="prior_scale must hold real numbers"):
        theory.normal_posterior(Y, 0.0, True, 1.0)


def test_normal_log_joint_is_the_numpyro_models_log_density():
    y = jnp.array([0.3, -1.2, 2.0])
    theta = jnp.array([-0.5, 0.0, 1.5])
    expected = [
        log_density(theory.normal_model, (y, 0.2, 1.5, 0.7), {}, {"theta": t})[0]
        for t in theta
    ]
    np.testing.assert_allclose(
        theory.normal_log_joint(y, theta, 0.2, 1.5, 0.7), expected, rtol=1e-6
    )
    with pytest.raises(ValueError, match=r"y must have shape \(n,\)"):
        theory.normal_log_joint(jnp.ones((3, 2)), theta, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match=r"theta must have shape \(S,\)"):
        theory.normal_log_joint(y, 0.5, 0.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="prior_scale must be > 0"):
        theory.normal_log_joint(y, theta, 0.0, -1.0, 1.0)
