"""Tests of companion.mcmc.run_nuts."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

from companion import mcmc


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
