"""Make chapter 7's cost study: how the time and accuracy of NUTS, SVI (full
batch and mini-batch) and HMCECS grow with the data, on the Gamma model.

Run from anywhere::

    python scripts/make_cost_study.py [--batch 1000] [--b2 0.9]
        [--num-warmup 500] [--num-samples 1000]
        [--nuts-sizes 1000 10000 100000] [--hmcecs-sizes 10000 100000]
        [--output data/cost_study.json]

Thirteen fits, each at a new data size and so compiled afresh: about a
minute on a 2-core CPU, most of it compiling, which is why chapter 7 loads
the results instead of running them (the study measures exactly that cost).
The file holds the settings, the machine and library versions it ran on,
and one row per fit: set-up (initialising and compiling), run and total
seconds from ``mcmc.timed_svi`` and ``mcmc.timed_mcmc``, and the posterior
mean and standard deviation against the exact posterior by quadrature for
the same data. ``tests/test_cost_study.py`` checks the file against this
script's settings and runs the study at tiny sizes; the exercises of
chapter 7 rerun it with other options.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
import optax
from jax.experimental.compilation_cache import compilation_cache
from numpyro.contrib.ecs_proxies import taylor_proxy
from numpyro.infer import HMCECS, NUTS, SVI, Trace_ELBO

from companion import gamma, mcmc, scaling
from companion._provenance import machine

OUTPUT = Path(__file__).resolve().parents[1] / "data" / "cost_study.json"

# Chapter 7's settings: the Gamma model of chapter 3 at growing n.
SETTINGS = {
    "seed": 7,
    "true_concentration": 2.5,
    "svi_steps": 5_000,
    "learning_rate": 0.05,  # decaying to 0 along a cosine
    "b2": 0.9,  # Adam's second-moment decay (its default is 0.999)
    "batch": 1_000,
    "blocks": 100,  # HMCECS: each draw proposes new indices for one block
    "num_warmup": 500,
    "num_samples": 1_000,
    "sizes": {
        "NUTS": [10**3, 10**4, 10**5],
        "SVI full batch": [10**2, 10**3, 10**4, 10**5, 10**6],
        "SVI mini-batch": [10**4, 10**5, 10**6],
        "HMCECS": [10**4, 10**5],  # after the mini-batch SVI fits it starts from
    },
}


def gamma_minibatch_model(z, subsample_size=None, replace=True):
    """The Gamma model of chapter 3 with its plate subsampled."""
    concentration = numpyro.sample("concentration", dist.HalfNormal(1.0))
    with scaling.subsample_plate(
        "data", z.shape[0], subsample_size, replace=replace
    ) as idx:
        numpyro.sample("z", dist.Gamma(concentration, 1.0), obs=z[idx])


def gamma_minibatch_guide(z, subsample_size=None, replace=True):
    gamma.guide()  # the talk's log-normal guide; it needs no data


def cost_study(settings: dict) -> list[dict]:
    """One row per method and size, in the order of ``settings["sizes"]``
    (HMCECS last: it starts from the mini-batch SVI fit of the same size)."""
    s = settings
    schedule = optax.cosine_decay_schedule(s["learning_rate"], s["svi_steps"])
    svi_cost = SVI(
        gamma_minibatch_model,
        gamma_minibatch_guide,
        optax.adam(schedule, b2=s["b2"]),
        Trace_ELBO(),
    )
    rng_key, key_big = jax.random.split(jax.random.key(s["seed"]))
    largest = max(max(sizes) for sizes in s["sizes"].values())
    z_big = gamma.simulate(key_big, s["true_concentration"], largest)
    # JAX initialises its compiler at the first compilation: pay that here,
    # so that it does not land on the first fit.
    jax.jit(lambda v: jnp.tanh(v) @ v).lower(jnp.ones((2, 2))).compile()
    rows, minibatch_fits = [], {}
    for method, method_sizes in s["sizes"].items():
        for n in method_sizes:
            z_n = z_big[:n]
            rng_key, key = jax.random.split(rng_key)
            steps_per_draw = float("nan")
            if method in ("NUTS", "HMCECS"):
                if method == "NUTS":
                    kernel, model_args = NUTS(gamma.model), {"z": z_n}
                else:  # the Taylor expansion is taken at the SVI fit's median
                    centre = jnp.exp(minibatch_fits[n]["concentration_loc"])
                    kernel = HMCECS(
                        NUTS(gamma_minibatch_model),
                        num_blocks=s["blocks"],
                        proxy=taylor_proxy({"concentration": centre}, degree=2),
                    )
                    model_args = {
                        "z": z_n,
                        "subsample_size": s["batch"],
                        "replace": False,
                    }
                idata_n, timing = mcmc.timed_mcmc(
                    key,
                    kernel,
                    num_warmup=s["num_warmup"],
                    num_samples=s["num_samples"],
                    **model_args,
                )
                post_mean = float(idata_n.posterior["concentration"].mean())
                post_sd = float(idata_n.posterior["concentration"].std())
                steps_per_draw = float(idata_n.sample_stats["n_steps"].mean())
            else:
                batch = None if method == "SVI full batch" else s["batch"]
                fit_n, timing = mcmc.timed_svi(
                    key, svi_cost, s["svi_steps"], z_n, batch
                )
                post_mean, post_sd = gamma.approximation_moments(fit_n.params)
                if batch:
                    minibatch_fits[n] = fit_n.params
            n_mean, n_sd = gamma.posterior_moments(z_n)  # grid adapts to the width
            rows.append(
                {
                    "method": method,
                    "n": n,
                    "setup (s)": timing.setup_s,
                    "run (s)": timing.run_s,
                    "total (s)": timing.total_s,
                    "mean error (sd)": (post_mean - n_mean) / n_sd,
                    "relative error of mean": abs(post_mean - n_mean) / n_mean,
                    "sd ratio": post_sd / n_sd,
                    "leapfrog steps per draw": steps_per_draw,
                }
            )
            print(f"{method:15} n={n:>9,}  total {timing.total_s:6.2f} s", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=SETTINGS["batch"])
    parser.add_argument("--b2", type=float, default=SETTINGS["b2"])
    parser.add_argument("--num-warmup", type=int, default=SETTINGS["num_warmup"])
    parser.add_argument("--num-samples", type=int, default=SETTINGS["num_samples"])
    parser.add_argument("--nuts-sizes", type=int, nargs="+")
    parser.add_argument("--hmcecs-sizes", type=int, nargs="+")
    parser.add_argument("--seed", type=int, default=SETTINGS["seed"])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    settings = {
        **SETTINGS,
        "seed": args.seed,
        "batch": args.batch,
        "b2": args.b2,
        "num_warmup": args.num_warmup,
        "num_samples": args.num_samples,
        "sizes": {
            **SETTINGS["sizes"],
            "NUTS": args.nuts_sizes or SETTINGS["sizes"]["NUTS"],
            "HMCECS": args.hmcecs_sizes or SETTINGS["sizes"]["HMCECS"],
        },
    }
    missing = set(settings["sizes"]["HMCECS"]) - set(
        settings["sizes"]["SVI mini-batch"]
    )
    if missing:
        parser.error(f"--hmcecs-sizes need mini-batch SVI fits at {sorted(missing)}")
    # The study measures what a first run costs, compilation included: no
    # programs read back from the persistent cache that companion sets up.
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    start = time.perf_counter()
    rows = cost_study(settings)
    stored = {
        "settings": settings,
        "machine": {**machine(), "study_s": time.perf_counter() - start},
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
