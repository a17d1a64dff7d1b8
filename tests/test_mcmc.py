"""Tests of companion.mcmc: NUTS runs (MCMC and compiled, timed), timed
HMC-family kernels (HMCECS included), timed SVI, SVI draws as InferenceData,
and flattening draws for prediction."""

import subprocess
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.contrib.ecs_proxies import taylor_proxy
from numpyro.infer import HMCECS, NUTS, SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLaplaceApproximation, AutoNormal

from companion import convert, mcmc, predictive

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing", FutureWarning)
    import arviz as az


def model(y):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def test_run_nuts_returns_inference_data_close_to_the_conjugate_posterior():
    y = 2.0 + jax.random.normal(jax.random.key(0), (50,))
    idata = mcmc.run_nuts(
        jax.random.key(1), model, y, num_warmup=300, num_samples=500, num_chains=2
    )
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.groups())
    assert idata.posterior["loc"].dims == ("chain", "draw")
    assert idata.posterior["loc"].shape == (2, 500)
    # Conjugate posterior: precision 1/100 + 50, mean = sum(y) / precision.
    precision = 1 / 100 + 50
    mean, sd = float(y.sum()) / precision, precision**-0.5
    draws = np.asarray(idata.posterior["loc"])
    assert draws.mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(200))
    assert draws.std() == pytest.approx(sd, rel=0.15)


def test_run_nuts_is_reproducible():
    y = jnp.ones(5)
    a = mcmc.run_nuts(
        jax.random.key(3), model, y, num_warmup=50, num_samples=50, num_chains=1
    )
    b = mcmc.run_nuts(
        jax.random.key(3), model, y, num_warmup=50, num_samples=50, num_chains=1
    )
    np.testing.assert_array_equal(a.posterior["loc"], b.posterior["loc"])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_samples": 0}, "num_samples"),
        ({"num_warmup": -1}, "num_warmup"),
        ({"num_chains": 1.5}, "num_chains"),
        ({"chain_method": "threads"}, "chain_method"),
        ({"target_accept_prob": 1.0}, "target_accept_prob"),
    ],
)
def test_bad_input_is_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mcmc.run_nuts(jax.random.key(0), model, jnp.ones(3), **kwargs)


# --------------------------------------------------------------------------
# timed_nuts, timed_svi, svi_to_inference_data, flatten_draws


Y = 2.0 + jax.random.normal(jax.random.key(0), (50,))
PRECISION = 1 / 100 + 50
POST_MEAN, POST_SD = float(Y.sum()) / PRECISION, PRECISION**-0.5


@pytest.fixture(scope="module")
def timed_run():
    return mcmc.timed_nuts(
        jax.random.key(1), model, Y, num_warmup=300, num_samples=400, num_chains=3
    )


def test_timed_nuts_returns_inference_data_close_to_the_conjugate_posterior(
    timed_run,
):
    idata, timing = timed_run
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.groups())
    assert idata.posterior["loc"].dims == ("chain", "draw")
    assert idata.posterior["loc"].shape == (3, 400)
    for stat in ("diverging", "n_steps", "acceptance_rate", "lp"):
        assert idata.sample_stats[stat].shape == (3, 400)
    np.testing.assert_array_equal(idata.observed_data["y"], np.asarray(Y))
    draws = np.asarray(idata.posterior["loc"])
    # Monte Carlo error of the mean with at least ~300 effective draws.
    assert draws.mean() == pytest.approx(POST_MEAN, abs=4 * POST_SD / np.sqrt(300))
    assert draws.std() == pytest.approx(POST_SD, rel=0.15)
    # The chains differ (one key each) and are not stuck.
    assert not np.allclose(draws[0], draws[1])
    assert float(idata.sample_stats["acceptance_rate"].mean()) > 0.5
    assert timing.setup_s > 0 and timing.run_s > 0
    assert timing.total_s == pytest.approx(timing.setup_s + timing.run_s)


def test_timed_nuts_keeps_deterministic_sites_and_keyword_data():
    def model_kw(y=None):
        loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
        numpyro.deterministic("twice", 2 * loc)
        with numpyro.plate("data", y.shape[0]):
            numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)

    idata, _ = mcmc.timed_nuts(
        jax.random.key(2),
        model_kw,
        y=Y[:10],
        num_warmup=50,
        num_samples=60,
        num_chains=1,
        max_tree_depth=3,
    )
    assert idata.posterior["loc"].shape == (1, 60)
    np.testing.assert_allclose(
        idata.posterior["twice"], 2 * idata.posterior["loc"], rtol=1e-6
    )
    # max_tree_depth=3 caps a trajectory at 2**3 - 1 leapfrog steps.
    assert int(idata.sample_stats["n_steps"].max()) <= 7


def test_timed_svi_matches_the_conjugate_posterior():
    # A decaying learning rate, so that the last iterate sits at the optimum.
    schedule = optax.exponential_decay(0.05, transition_steps=500, decay_rate=0.1)
    svi = SVI(model, AutoNormal(model), optax.adam(schedule), Trace_ELBO())
    result, timing = mcmc.timed_svi(jax.random.key(3), svi, 2_000, Y)
    assert result.losses.shape == (2_000,)
    assert float(result.params["loc_auto_loc"]) == pytest.approx(
        POST_MEAN, abs=0.1 * POST_SD
    )
    assert float(result.params["loc_auto_scale"]) == pytest.approx(POST_SD, rel=0.2)
    assert timing.run_s > 0


def custom_guide(y):
    loc = numpyro.param("q_loc", 0.0)
    scale = numpyro.param("q_scale", 1.0, constraint=dist.constraints.positive)
    numpyro.sample("loc", dist.Normal(loc, scale))


@pytest.mark.parametrize("kind", ["custom", "autonormal", "laplace"])
def test_svi_to_inference_data_has_the_layout_and_moments_of_the_guide(kind):
    if kind == "custom":
        guide = custom_guide
        params = {"q_loc": jnp.array(1.5), "q_scale": jnp.array(0.3)}
        mean, sd = 1.5, 0.3
    elif kind == "autonormal":
        guide = AutoNormal(model)
        numpyro.handlers.seed(guide, 0)(Y)  # set up the prototype, as svi.init does
        params = {"loc_auto_loc": jnp.array(1.5), "loc_auto_scale": jnp.array(0.3)}
        mean, sd = 1.5, 0.3
    else:
        guide = AutoLaplaceApproximation(model)
        numpyro.handlers.seed(guide, 0)(Y)
        params = {"auto_loc": jnp.array([POST_MEAN])}
        mean, sd = POST_MEAN, POST_SD  # Gaussian model: Laplace is exact
    idata = convert.svi_to_inference_data(
        jax.random.key(4), guide, params, Y, num_samples=2_000, num_chains=2
    )
    assert set(idata.groups()) == {"posterior"}
    assert list(idata.posterior.data_vars) == ["loc"]
    assert idata.posterior["loc"].dims == ("chain", "draw")
    assert idata.posterior["loc"].shape == (2, 2_000)
    draws = np.asarray(idata.posterior["loc"])
    assert draws.mean() == pytest.approx(mean, abs=4 * sd / np.sqrt(4_000))
    assert draws.std() == pytest.approx(sd, rel=0.05)
    # Independent draws: R-hat is 1 up to noise.
    assert float(az.rhat(idata)["loc"]) == pytest.approx(1.0, abs=0.01)


def test_svi_to_inference_data_draws_are_sample_posteriors():
    # One way to draw from a guide: the same key gives the same draws as
    # companion.predictive.sample_posterior, chain after chain.
    guide = AutoLaplaceApproximation(model)
    numpyro.handlers.seed(guide, 0)(Y)
    params = {"auto_loc": jnp.array([POST_MEAN])}
    key = jax.random.key(5)
    idata = convert.svi_to_inference_data(
        key, guide, params, Y, num_samples=50, num_chains=2
    )
    draws = predictive.sample_posterior(key, guide, params, Y, num_samples=100)
    np.testing.assert_array_equal(
        np.asarray(idata.posterior["loc"]).ravel(), np.asarray(draws["loc"])
    )


def test_flatten_draws_merges_chain_and_draw_chain_by_chain():
    values = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    idata = az.from_dict(posterior={"w": values, "b": values[..., 0]})
    flat = convert.flatten_draws(idata, ["w"])
    assert list(flat) == ["w"]
    np.testing.assert_array_equal(flat["w"], values.reshape(10, 3))
    assert set(convert.flatten_draws(idata)) == {"w", "b"}


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (
            lambda: mcmc.timed_nuts(jax.random.key(0), model, Y, num_samples=0),
            "num_samples",
        ),
        (
            lambda: mcmc.timed_nuts(jax.random.key(0), model, Y, max_tree_depth=0),
            "max_tree_depth",
        ),
        (
            lambda: mcmc.timed_nuts(
                jax.random.key(0), model, Y, target_accept_prob=0.0
            ),
            "target_accept_prob",
        ),
        (
            lambda: mcmc.run_nuts(jax.random.key(0), model, Y, max_tree_depth=1.5),
            "max_tree_depth",
        ),
        (
            lambda: mcmc.timed_svi(
                jax.random.key(0),
                SVI(model, custom_guide, optax.adam(0.1), Trace_ELBO()),
                0,
                Y,
            ),
            "num_steps",
        ),
        (
            lambda: convert.svi_to_inference_data(
                jax.random.key(0), custom_guide, {}, Y, num_samples=0
            ),
            "num_samples",
        ),
        (
            lambda: convert.svi_to_inference_data(
                jax.random.key(0), custom_guide, {}, Y, num_samples=5, num_chains=0
            ),
            "num_chains",
        ),
        (
            lambda: convert.flatten_draws(
                az.from_dict(posterior={"w": np.zeros((1, 2))}), ["v"]
            ),
            "var_names",
        ),
    ],
)
def test_bad_input_to_the_new_functions_is_rejected(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_wrong_types_are_rejected():
    with pytest.raises(TypeError, match="rng_key"):
        mcmc.timed_nuts(0, model, Y)
    with pytest.raises(TypeError, match="svi"):
        mcmc.timed_svi(jax.random.key(0), "svi", 10, Y)
    with pytest.raises(TypeError, match="params"):
        convert.svi_to_inference_data(
            jax.random.key(0), custom_guide, None, Y, num_samples=5
        )
    with pytest.raises(TypeError, match="idata"):
        convert.flatten_draws({"w": np.zeros(3)})


def test_importing_companion_is_silent_on_a_fresh_machine(tmp_path):
    # ArviZ 0.23 warns about its 1.0 refactor once a day, remembered in the
    # user cache; on a fresh machine (CI) the import must still not warn.
    import os
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", "import companion"],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "XDG_CACHE_HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"},
    )
    assert completed.returncode == 0, completed.stderr[-2000:]


# --------------------------------------------------------------------------
# timed_mcmc: any HMC-family kernel, HMCECS included


def subsampled_model(y, subsample_size=100):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", y.shape[0], subsample_size=subsample_size):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=numpyro.subsample(y, 0))


Y_BIG = 2.0 + jax.random.normal(jax.random.key(5), (2_000,))
BIG_PRECISION = 1 / 100 + Y_BIG.shape[0]
BIG_MEAN, BIG_SD = float(Y_BIG.sum()) / BIG_PRECISION, BIG_PRECISION**-0.5


def test_timed_mcmc_with_a_nuts_kernel_is_timed_nuts():
    settings = {"num_warmup": 60, "num_samples": 50, "num_chains": 2}
    a, _ = mcmc.timed_nuts(jax.random.key(4), model, Y, max_tree_depth=5, **settings)
    b, _ = mcmc.timed_mcmc(
        jax.random.key(4), NUTS(model, max_tree_depth=5), Y, **settings
    )
    np.testing.assert_array_equal(a.posterior["loc"], b.posterior["loc"])
    np.testing.assert_array_equal(a.sample_stats["n_steps"], b.sample_stats["n_steps"])
    assert "subsample_acceptance" not in b.sample_stats


@pytest.fixture(scope="module")
def hmcecs_run():
    proxy = taylor_proxy({"loc": jnp.asarray(BIG_MEAN)}, degree=2)
    kernel = HMCECS(NUTS(subsampled_model), num_blocks=10, proxy=proxy)
    return mcmc.timed_mcmc(
        jax.random.key(6), kernel, Y_BIG, num_warmup=300, num_samples=600
    )


def test_timed_mcmc_runs_hmcecs_to_the_conjugate_posterior(hmcecs_run):
    idata, timing = hmcecs_run
    assert idata.posterior["loc"].shape == (1, 600)
    assert "data" not in idata.posterior  # the subsample indices are dropped
    for stat in ("diverging", "n_steps", "acceptance_rate", "lp"):
        assert idata.sample_stats[stat].shape == (1, 600)
    acceptance = np.asarray(idata.sample_stats["subsample_acceptance"])
    assert acceptance.shape == (1, 600) and np.all(
        (0 <= acceptance) & (acceptance <= 1)
    )
    draws = np.asarray(idata.posterior["loc"])
    # The full-data conjugate posterior, from mini-batches of 100 of 2,000.
    assert draws.mean() == pytest.approx(BIG_MEAN, abs=4 * BIG_SD / np.sqrt(100))
    assert draws.std() == pytest.approx(BIG_SD, rel=0.2)
    assert timing.setup_s > 0 and timing.run_s > 0


def test_timed_mcmc_is_reproducible_with_hmcecs(hmcecs_run):
    proxy = taylor_proxy({"loc": jnp.asarray(BIG_MEAN)}, degree=2)
    kernel = HMCECS(NUTS(subsampled_model), num_blocks=10, proxy=proxy)
    again, _ = mcmc.timed_mcmc(
        jax.random.key(6), kernel, Y_BIG, num_warmup=300, num_samples=600
    )
    np.testing.assert_array_equal(
        hmcecs_run[0].posterior["loc"], again.posterior["loc"]
    )


def test_timed_mcmc_rejects_bad_input():
    kernel = HMCECS(NUTS(subsampled_model), num_blocks=10)
    with pytest.raises(TypeError, match="rng_key"):
        mcmc.timed_mcmc(0, NUTS(model), Y)
    with pytest.raises(TypeError, match="kernel"):
        mcmc.timed_mcmc(jax.random.key(0), model, Y)
    with pytest.raises(ValueError, match="num_chains"):
        mcmc.timed_mcmc(jax.random.key(0), kernel, Y_BIG, num_chains=2)
    with pytest.raises(ValueError, match="num_warmup"):
        mcmc.timed_mcmc(jax.random.key(0), NUTS(model), Y, num_warmup=-1)
    with pytest.raises(ValueError, match="num_samples"):
        mcmc.timed_mcmc(jax.random.key(0), NUTS(model), Y, num_samples=0)


# --------------------------------------------------------------------------
# timed_svi_fits: several seeds, one compiled program


def test_timed_svi_fits_are_the_fits_of_timed_svi_with_each_key():
    svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
    fits, timing = mcmc.timed_svi_fits(jax.random.key(8), svi, 300, 3, Y)
    assert fits.losses.shape == (3, 300)
    assert fits.params["loc_auto_loc"].shape == (3,)
    assert timing.setup_s > 0 and timing.run_s > 0
    for i, key in enumerate(jax.random.split(jax.random.key(8), 3)):
        single, _ = mcmc.timed_svi(key, svi, 300, Y)
        np.testing.assert_allclose(fits.losses[i], single.losses, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(
            fits.params["loc_auto_loc"][i], single.params["loc_auto_loc"], rtol=1e-4
        )
    # different seeds, different starting points: the fits differ
    assert len(set(np.asarray(fits.losses[:, 0]).tolist())) == 3


def test_timed_svi_fits_rejects_bad_input():
    svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
    with pytest.raises(ValueError, match="num_fits"):
        mcmc.timed_svi_fits(jax.random.key(0), svi, 10, 0, Y)
    with pytest.raises(ValueError, match="num_steps"):
        mcmc.timed_svi_fits(jax.random.key(0), svi, 0, 2, Y)
    with pytest.raises(TypeError, match="svi"):
        mcmc.timed_svi_fits(jax.random.key(0), "svi", 10, 2, Y)
    with pytest.raises(TypeError, match="rng_key"):
        mcmc.timed_svi_fits(0, svi, 10, 2, Y)


def test_importing_mcmc_leaves_arviz_until_an_inference_data_is_built():
    # chapters 9 and 10 time SVI with this module and never need ArviZ
    code = (
        "import sys, jax, numpyro.distributions as dist, numpyro\n"
        "from companion import mcmc\n"
        "assert 'arviz' not in sys.modules, 'arviz at import'\n"
        "def model():\n"
        "    numpyro.sample('x', dist.Normal())\n"
        "idata = mcmc.run_nuts(jax.random.key(0), model, num_warmup=5, num_samples=5)\n"
        "assert 'arviz' in sys.modules and type(idata).__name__ == 'InferenceData'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
