"""Studies that serve one chapter each: many fits, one table. The only module
of the package that imports pandas.

- :func:`recovery_study` (chapter 3): the talk's Gamma example over a grid
  of true concentrations and data sizes, each fit compared with the exact
  posterior (`companion.gamma`).
- :func:`compare_guides` (chapter 10): several autoguides fitted to one model
  (the Bayesian neural network), their cost and predictive quality side by
  side.

Used in chapters 3 and 10.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from jaxtyping import Array, Float, Int
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoGuide

from companion import gamma, mcmc, metrics, predictive
from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._checks import check_positive as _check_positive

__all__ = ["compare_guides", "recovery_study"]


def recovery_study(
    rng_key: jax.Array,
    concentrations: Sequence[float],
    sizes: Sequence[int],
    num_steps: int = 1_000,
    *,
    num_particles: int = 10,
    learning_rate: float = 0.005,
    interval: float = 0.94,
    num_psis_particles: int | None = 100_000,
    prior_scale: float = gamma.PRIOR_SCALE,
) -> pd.DataFrame:
    """Simulate data for every true concentration and data size, fit the
    guide, and compare it with the exact posterior.

    One row per (concentration, size): the exact and approximate posterior
    mean and standard deviation, the central ``interval`` of each and whether
    it covers the truth, the error of the mean in exact posterior
    standard deviations, the ratio of standard deviations, and the Pareto k̂
    of the importance weights with the relative effective sample size of the
    smoothed weights (``psis_ess``, 1 when all weights are equal), from
    :func:`companion.gamma.psis` with ``num_psis_particles`` draws in
    float64 (``None`` skips both, leaving NaN).

    Used in chapter 3.
    """
    _check_key(rng_key)
    if len(concentrations) == 0 or len(sizes) == 0:
        raise ValueError("concentrations and sizes must be non-empty sequences")
    if not 0.0 < interval < 1.0:
        raise ValueError(f"interval must lie in (0, 1), got {interval!r}")
    for concentration in concentrations:
        _check_positive("concentrations", concentration)
    for size in sizes:
        _check_count("sizes", size)
    if num_psis_particles is not None:
        _check_count("num_psis_particles", num_psis_particles, minimum=10)
    svi = gamma.make_svi(num_particles, learning_rate)
    rows = []
    keys = jax.random.split(rng_key, len(concentrations) * len(sizes))
    cells = [(c, n) for c in concentrations for n in sizes]
    for key, (concentration, size) in zip(keys, cells, strict=True):
        key_data, key_fit, key_psis = jax.random.split(key, 3)
        z = gamma.simulate(key_data, float(concentration), int(size))
        result = gamma.fit(key_fit, z, num_steps, svi=svi, prior_scale=prior_scale)
        grid = gamma.default_grid(z, prior_scale=prior_scale)
        exact_mean, exact_sd = gamma.posterior_moments(z, grid, prior_scale)
        exact_lower, exact_upper = gamma.exact_interval(z, interval, grid, prior_scale)
        q_mean, q_sd = gamma.approximation_moments(result.params)
        q = gamma.approximation(result.params)
        tail = (1.0 - interval) / 2.0
        lower, upper = (float(q.icdf(jnp.asarray(p))) for p in (tail, 1.0 - tail))
        k_hat, ess = (
            (np.nan, np.nan)
            if num_psis_particles is None
            else gamma.psis(key_psis, result.params, z, num_psis_particles, prior_scale)
        )
        rows.append(
            {
                "true_concentration": float(concentration),
                "num_obs": int(size),
                "exact_mean": exact_mean,
                "exact_sd": exact_sd,
                "exact_lower": exact_lower,
                "exact_upper": exact_upper,
                "exact_covers_truth": exact_lower <= concentration <= exact_upper,
                "q_mean": q_mean,
                "q_sd": q_sd,
                "q_lower": lower,
                "q_upper": upper,
                "q_covers_truth": lower <= concentration <= upper,
                "mean_error_in_sd": (q_mean - exact_mean) / exact_sd,
                "sd_ratio": q_sd / exact_sd,
                "pareto_k": k_hat,
                "psis_ess": ess,
            }
        )
    return pd.DataFrame(rows)


def compare_guides(
    rng_key: jax.Array,
    model: Callable[..., Any],
    guides: Mapping[str, AutoGuide],
    x_train: Float[Array, "n_train d"],
    y_train: Int[Array, " n_train"],
    x_test: Float[Array, "n_test d"],
    y_test: Int[Array, " n_test"],
    *,
    num_steps: int | Mapping[str, int],
    optimizer: Any = None,
    num_samples: int = 500,
) -> pd.DataFrame:
    """Fit every guide to ``model(x_train, y_train)`` and score it.

    ``num_steps`` and ``optimizer`` (default ``optax.adam(0.01)``) are either
    one value for every guide or a mapping from guide name to value, for
    guides that need their own (a Laplace approximation needs its optimum
    reached, hence often more steps, before its Hessian is positive definite).

    One row per guide: ``num_steps``, ``num_params`` (variational parameters, counted
    scalar by scalar), ``setup_s`` and ``run_s`` (see
    :func:`companion.mcmc.timed_svi`), ``final_loss`` (the mean loss per
    training observation over the last tenth of the steps; for
    `AutoLaplaceApproximation` this is the MAP objective, not an ELBO),
    ``test_log_loss`` (held-out negative log predictive density per
    observation, of the posterior predictive mean probability), ``test_auc``
    (of that probability) and ``mean_pred_sd`` (mean over test points of the
    posterior standard deviation of ``p``). Predictions use
    ``num_samples`` draws from :func:`companion.predictive.sample_posterior`
    (the guide's own ``sample_posterior``, which gives the Laplace guide its
    Gaussian) pushed through ``model``'s site ``p``. A
    guide whose draws are all identical (a Laplace approximation at a point
    whose Hessian is not positive definite, where NumPyro falls back to the
    point itself) gets a ``RuntimeWarning``.

    Used in chapter 10.
    """
    _check_key(rng_key)
    if not isinstance(guides, Mapping) or not guides:
        raise ValueError("guides must be a non-empty mapping of name -> AutoGuide")
    for guide_name, guide in guides.items():
        if not isinstance(guide, AutoGuide):
            raise TypeError(
                f"guides[{guide_name!r}] must be a NumPyro AutoGuide, got "
                f"{type(guide).__name__}"
            )
    steps = _per_guide("num_steps", num_steps, guides)
    for guide_name, value in steps.items():
        _check_count(f"num_steps[{guide_name!r}]", value)
    _check_count("num_samples", num_samples)
    optimizers = _per_guide(
        "optimizer", optax.adam(0.01) if optimizer is None else optimizer, guides
    )
    rows = []
    keys = jax.random.split(rng_key, len(guides))
    for key, (guide_name, guide) in zip(keys, guides.items(), strict=True):
        key_fit, key_draw, key_pred = jax.random.split(key, 3)
        svi = SVI(model, guide, optimizers[guide_name], Trace_ELBO())
        result, timing = mcmc.timed_svi(
            key_fit, svi, steps[guide_name], x_train, y_train
        )
        tail = max(1, steps[guide_name] // 10)
        draws = predictive.sample_posterior(
            key_draw, guide, result.params, x_train, y_train, num_samples=num_samples
        )
        p = predictive.predict(key_pred, model, draws, x_test, return_sites=["p"])["p"]
        p_mean = p.mean(axis=0)
        if all(bool(jnp.all(v == v[0])) for v in draws.values()):
            warnings.warn(
                f"guides[{guide_name!r}] gives identical draws: for a Laplace "
                "approximation the Hessian at the optimum was not positive "
                "definite (train longer, or use another guide)",
                RuntimeWarning,
                stacklevel=2,
            )
        rows.append(
            {
                "guide": guide_name,
                "num_steps": steps[guide_name],
                "num_params": int(
                    sum(np.size(v) for v in jax.tree.leaves(result.params))
                ),
                "setup_s": timing.setup_s,
                "run_s": timing.run_s,
                "final_loss": float(np.mean(result.losses[-tail:])) / x_train.shape[0],
                "test_log_loss": float(metrics.log_loss(y_test, p_mean)),
                "test_auc": float(metrics.auc(y_test, p_mean)),
                "mean_pred_sd": float(p.std(axis=0).mean()),
            }
        )
    return pd.DataFrame(rows).set_index("guide")


def _per_guide(name: str, value: Any, guides: Mapping[str, Any]) -> dict[str, Any]:
    """``value`` for every guide, or the guide's entry when ``value`` is a mapping."""
    if not isinstance(value, Mapping):
        return dict.fromkeys(guides, value)
    missing = [g for g in guides if g not in value]
    if missing:
        raise ValueError(
            f"{name} must have an entry for every guide; missing {missing}"
        )
    return {g: value[g] for g in guides}
