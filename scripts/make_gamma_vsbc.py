"""Make chapter 3's multi-seed VSBC reference: how often the calibration
check detects the 1,000-step bias of the talk's Gamma guide.

Run from anywhere::

    python scripts/make_gamma_vsbc.py

It calls NumPyro's ``vsbc_diagnostic`` with chapter 3's settings (the talk's
model and guide, ``Trace_ELBO(num_particles=10)``, ``optax.adam(0.005)``,
1,000 SVI steps, 1,000 guide draws, data sets of 100 observations, 100
simulations) once for each seed in ``SEEDS``, and writes
``data/gamma_vsbc.json``: the settings, and for every run its KS statistic
and p-value, the 100 calibration probabilities ``p = Pr_q(α < α*)``, the
true concentrations ``α*`` the run drew from the prior, and how many of each
simulated data set's observations are exactly zero (a ``Gamma(α)`` draw
below float32's smallest number, possible when ``α`` is below about 0.1).

``vsbc_diagnostic`` does not return ``α*``; the script redraws it with
NumPyro's own recipe (the key split of NumPyro 0.22's ``vsbc_diagnostic``)
and checks the recipe: for a few simulations it fits the guide to the
redrawn data itself and requires its ``Pr_q(α < α*)`` to match the stored
``p``. ``tests/test_gamma.py`` checks the file against this script's
settings, and chapter 3 loads it. The run is deterministic on CPU and takes
a few minutes.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import numpyro
import optax
from numpyro.handlers import seed, trace
from numpyro.infer import Trace_ELBO
from numpyro.infer.calibration import vsbc_diagnostic
from scipy import stats

from companion import gamma

OUTPUT = Path(__file__).resolve().parents[1] / "data" / "gamma_vsbc.json"

# Chapter 3's settings (the talk's), and the seeds of the independent runs.
SETTINGS = {
    "seeds": list(range(20)),
    "num_simulations": 100,
    "num_svi_steps": 1_000,
    "num_samples": 1_000,
    "num_obs": 100,
    "num_particles": 10,
    "learning_rate": 0.005,
    "prior_scale": gamma.PRIOR_SCALE,
}


def run_vsbc(seed_value: int) -> dict:
    """One ``vsbc_diagnostic`` run with chapter 3's settings under
    ``jax.random.key(seed_value)``, plus the true concentrations it drew."""
    key = jax.random.key_data(jax.random.key(seed_value))  # raw key, as NumPyro needs
    result = vsbc_diagnostic(
        key,
        gamma.model,
        gamma.guide,
        optax.adam(SETTINGS["learning_rate"]),
        Trace_ELBO(num_particles=SETTINGS["num_particles"]),
        observed_sites=["z"],
        num_simulations=SETTINGS["num_simulations"],
        num_svi_steps=SETTINGS["num_svi_steps"],
        num_samples=SETTINGS["num_samples"],
        num_obs=SETTINGS["num_obs"],
    )
    truths, data = redraw_simulations(key)
    return {
        "seed": seed_value,
        "ks_stat": float(result.ks_stats["concentration"]),
        "ks_pvalue": float(result.ks_pvalues["concentration"]),
        "probabilities": [
            float(p) for p in np.asarray(result.probabilities["concentration"])
        ],
        "true_concentrations": [float(f"{t:.7g}") for t in truths],
        "num_zero_observations": [int((d == 0).sum()) for d in data],
        "_data": data,  # for the recipe check only, not written
    }


def redraw_simulations(key: jax.Array) -> tuple[np.ndarray, list[np.ndarray]]:
    """The prior draws of ``vsbc_diagnostic`` (NumPyro 0.22): the key is split
    into (rest, discover), rest into (rest, prior), prior into one key per
    simulation, and each seeds one run of the model without data."""
    rest, _ = jax.random.split(key)
    _, key_prior = jax.random.split(rest)
    keys = jax.random.split(key_prior, SETTINGS["num_simulations"])
    truths, data = [], []
    for k in keys:
        model_trace = trace(seed(gamma.model, k)).get_trace(num_obs=SETTINGS["num_obs"])
        truths.append(float(model_trace["concentration"]["value"]))
        data.append(np.asarray(model_trace["z"]["value"]))
    return np.array(truths), data


def check_recipe(run: dict, num_checks: int = 4) -> None:
    """Refit the guide to a few redrawn data sets whose truth lies where the
    1,000-step fit is unbiased (0.5 to 3) and compare ``Pr_q(α < α*)``."""
    truths = np.array(run["true_concentrations"])
    chosen = np.flatnonzero((truths > 0.5) & (truths < 3.0))[:num_checks]
    assert chosen.size == num_checks, "too few simulations to check the recipe"
    for i, index in enumerate(chosen):
        fitted = gamma.fit(
            jax.random.key(10_000 + i), run["_data"][index], SETTINGS["num_svi_steps"]
        )
        loc = float(fitted.params["concentration_loc"])
        scale = float(fitted.params["concentration_scale"])
        mine = stats.norm.cdf((np.log(truths[index]) - loc) / scale)
        theirs = run["probabilities"][index]
        assert abs(mine - theirs) < 0.1, (index, mine, theirs)


def main() -> None:
    warnings.filterwarnings("ignore", message="Found non-auxiliary vars")
    runs = []
    start = time.perf_counter()
    for seed_value in SETTINGS["seeds"]:
        run = run_vsbc(seed_value)
        if seed_value == SETTINGS["seeds"][0]:
            check_recipe(run)
        del run["_data"]
        runs.append(run)
        print(
            f"seed {seed_value:>2}: KS p-value {run['ks_pvalue']:.4f} "
            f"({time.perf_counter() - start:.0f} s)",
            flush=True,
        )
    OUTPUT.parent.mkdir(exist_ok=True)
    payload = {
        "script": "scripts/make_gamma_vsbc.py",
        "versions": {"jax": jax.__version__, "numpyro": numpyro.__version__},
        "settings": SETTINGS,
        "runs": runs,
    }
    OUTPUT.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main()
