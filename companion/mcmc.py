"""NUTS runs returned as ArviZ ``InferenceData``, so that MCMC and SVI results
go through the same summaries and plots.

Introduced in chapter 3 (Gamma recovery, NUTS as the reference); used in
chapter 7 (SVI vs MCMC).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal

import jax
from numpyro.infer import MCMC, NUTS

with warnings.catch_warnings():
    # arviz 0.23 announces its 1.0 refactor at import; the book pins arviz < 1.0.
    warnings.filterwarnings("ignore", "ArviZ is undergoing", FutureWarning)
    import arviz as az

__all__ = ["run_nuts"]


def run_nuts(
    rng_key: jax.Array,
    model: Callable[..., Any],
    *args: Any,
    num_warmup: int = 500,
    num_samples: int = 1_000,
    num_chains: int = 4,
    chain_method: Literal["sequential", "parallel", "vectorized"] = "sequential",
    target_accept_prob: float = 0.8,
    progress_bar: bool = False,
    **kwargs: Any,
) -> az.InferenceData:
    """Run NUTS (Hoffman & Gelman, 2014) on ``model(*args, **kwargs)`` and return an
    ArviZ ``InferenceData`` with ``posterior``, ``sample_stats`` and
    ``observed_data`` groups (``chain`` × ``draw`` dimensions).

    ``chain_method="parallel"`` runs one chain per device (see chapter 8 for
    several devices); with fewer devices than chains NumPyro falls back to
    sequential chains.

    Used in chapter 3 (reference posterior) and chapter 7.

    Example:
        >>> import numpyro, numpyro.distributions as dist, jax.numpy as jnp
        >>> def model(y):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> idata = run_nuts(
        ...     jax.random.key(0),
        ...     model,
        ...     jnp.ones(20),
        ...     num_chains=2,
        ...     num_warmup=200,
        ...     num_samples=200,
        ... )
        >>> idata.posterior["loc"].shape
        (2, 200)
    """
    if not callable(model):
        raise TypeError(f"model must be callable, got {type(model).__name__}")
    for name, value in (
        ("num_warmup", num_warmup),
        ("num_samples", num_samples),
        ("num_chains", num_chains),
    ):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if chain_method not in ("sequential", "parallel", "vectorized"):
        raise ValueError(
            "chain_method must be 'sequential', 'parallel' or 'vectorized', "
            f"got {chain_method!r}"
        )
    if not 0.0 < target_accept_prob < 1.0:
        raise ValueError(
            f"target_accept_prob must lie in (0, 1), got {target_accept_prob!r}"
        )
    if chain_method == "parallel" and jax.local_device_count() < num_chains:
        chain_method = "sequential"  # what NumPyro would do, without its warning
    mcmc = MCMC(
        NUTS(model, target_accept_prob=target_accept_prob),
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        chain_method=chain_method,
        progress_bar=progress_bar,
    )
    mcmc.run(rng_key, *args, **kwargs)
    return az.from_numpyro(mcmc)
