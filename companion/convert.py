"""Posterior draws between NumPyro and ArviZ: draws from a fitted guide as
``InferenceData`` in the layout of an MCMC run, so that SVI and MCMC go
through the same summaries and plots, and ``InferenceData`` back to flat
arrays of draws for `numpyro.infer.Predictive` or
`companion.predictive.predict`.

Used in chapter 7 (SVI vs MCMC).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from companion import predictive
from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key

with warnings.catch_warnings():
    # arviz 0.23 announces its 1.0 refactor at import; the book pins arviz < 1.0.
    warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing", FutureWarning)
    import arviz as az

__all__ = ["flatten_draws", "svi_to_inference_data"]


def svi_to_inference_data(
    rng_key: jax.Array,
    guide: Callable[..., Any],
    params: dict[str, Any],
    *args: Any,
    num_samples: int,
    num_chains: int = 1,
    **kwargs: Any,
) -> az.InferenceData:
    """Draws from a fitted guide ``q_φ`` as ArviZ ``InferenceData``, in the
    layout of an MCMC run: a ``posterior`` group with dims ``chain`` ×
    ``draw`` × site shape, ``num_chains`` × ``num_samples`` independent draws.

    The draws come from :func:`companion.predictive.sample_posterior` (with
    the same key, the same draws): NumPyro autoguides draw through their
    ``sample_posterior`` (the only way that gives `AutoLaplaceApproximation`
    its Gaussian rather than the MAP point), any other guide goes through
    `numpyro.infer.Predictive`.
    ``args``/``kwargs`` are what the guide is called with (the model's
    arguments); ``params`` are the variational parameters (``result.params``).
    Internal sites (names starting with ``_``) are dropped.

    The draws are independent, so R-hat is 1 and the ESS the number of draws
    up to Monte Carlo noise: the ArviZ diagnostics say nothing about how good
    the approximation is, only the comparison with a reference does.

    Used in chapter 7.

    Example:
        >>> import numpyro, numpyro.distributions as dist
        >>> def guide():
        ...     loc = numpyro.param("loc", 0.0)
        ...     numpyro.sample("theta", dist.Normal(loc, 1.0))
        >>> idata = svi_to_inference_data(
        ...     jax.random.key(0), guide, {"loc": 1.0}, num_samples=50, num_chains=2
        ... )
        >>> idata.posterior["theta"].dims, idata.posterior["theta"].shape
        (('chain', 'draw'), (2, 50))
    """
    _check_key(rng_key)
    if not callable(guide):
        raise TypeError(f"guide must be callable, got {type(guide).__name__}")
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (result.params), got {params!r}")
    _check_count("num_samples", num_samples)
    _check_count("num_chains", num_chains)
    total = num_samples * num_chains
    draws = predictive.sample_posterior(
        rng_key, guide, params, *args, num_samples=total, **kwargs
    )
    posterior = {
        name: np.asarray(value).reshape(num_chains, num_samples, *value.shape[1:])
        for name, value in draws.items()
        if not name.startswith("_")
    }
    return az.from_dict(posterior=posterior)


def flatten_draws(
    idata: az.InferenceData, var_names: Sequence[str] | None = None
) -> dict[str, Array]:
    """The posterior draws of ``idata`` as a dict of arrays with one leading
    axis of ``chain * draw`` draws (chain by chain), the layout that
    `numpyro.infer.Predictive` and :func:`companion.predictive.predict` take.
    ``var_names=None`` takes every posterior variable.

    Used in chapter 7.

    Example:
        >>> import xarray as xr
        >>> idata = az.from_dict(posterior={"w": np.zeros((2, 5, 3))})
        >>> flatten_draws(idata)["w"].shape
        (10, 3)
    """
    if not isinstance(idata, az.InferenceData) or "posterior" not in idata.groups():
        raise TypeError("idata must be an arviz.InferenceData with a posterior group")
    posterior = idata.posterior
    if var_names is None:
        var_names = list(posterior.data_vars)
    elif isinstance(var_names, str):
        raise ValueError(f"var_names must be a sequence of names, got {var_names!r}")
    missing = [name for name in var_names if name not in posterior]
    if missing:
        raise ValueError(
            f"var_names holds names not in the posterior: {missing}; "
            f"it has {list(posterior.data_vars)}"
        )
    out = {}
    for name in var_names:
        values = posterior[name].transpose("chain", "draw", ...).values
        out[name] = jnp.asarray(values.reshape(-1, *values.shape[2:]))
    return out
