"""Make chapter 10's comparison of variational families on the talk's
Bayesian neural network: ``AutoNormal``, ``AutoLowRankMultivariateNormal``,
``AutoMultivariateNormal`` and ``AutoIAFNormal``, each fitted by SVI and
scored on held-out points with ``studies.compare_guides``.

Run from anywhere::

    python scripts/make_guide_comparison.py [--num-steps 3000] [--num-draws 400]
        [--rank 5] [--output data/guide_comparison.json]

Four guides are four first calls of ``svi.init`` (each runs the model and
the guide operation by operation) and four SVI programs to compile: about
half a minute on a 2-core CPU, most of it compiling, more than the rest of
chapter 10 together, which is why the chapter loads the table instead of
running it. The data, the network and the keys are chapter 10's, derived
from its seed in the same order, so the chapter's Laplace approximation
and ensemble are fitted to the same 600 training points; the file records a
fingerprint of those points, which the chapter checks.

The file holds the settings, the machine and library versions it ran on,
and one row per guide: steps, variational parameters, set-up and run
seconds (``mcmc.timed_svi``, compilation in the set-up, no persistent
compilation cache), the training loss per observation over the last tenth
of the steps, and the test log loss, AUC and mean predictive standard
deviation of the posterior predictive mean. ``tests/test_guide_comparison.py``
checks the file against this script's settings and runs the comparison at a
tiny size.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import optax
from flax import nnx
from jax.experimental.compilation_cache import compilation_cache
from numpyro.infer.autoguide import (
    AutoIAFNormal,
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
)

from companion import bnn, data, studies
from companion._provenance import machine

OUTPUT = Path(__file__).resolve().parents[1] / "data" / "guide_comparison.json"

# Chapter 10's settings.
SETTINGS = {
    "seed": 10,
    "hidden_layers": [4, 3],
    "num_obs": 1_000,
    "num_train": 600,
    "noise": 0.2,
    "num_steps": 3_000,
    # warm-up + cosine: from init to peak in warmup_steps, then down to end
    "learning_rate": {"init": 0.001, "peak": 0.02, "warmup_steps": 200, "end": 0.0001},
    "num_draws": 400,
    "rank": 5,
    "iaf": {"num_flows": 2, "hidden_dims": [32, 32]},
}


def chapter_setup(settings: dict) -> dict:
    """Chapter 10's network, data and keys, from its seed in the chapter's
    order: the model, the training and test split, and the comparison's key."""
    rng_key = jax.random.key(settings["seed"])
    rng_key, key_mlp = jax.random.split(rng_key)
    mlp = bnn.MLP(
        din=2,
        dout=1,
        hidden_layers=settings["hidden_layers"],
        rngs=nnx.Rngs(key_mlp),
    )
    # the chapter splits six keys here: the next rng_key, then data,
    # comparison, Laplace, draws and ensemble
    _, key_data, key_compare, *_ = jax.random.split(rng_key, 6)
    x, y = data.make_moons(
        key_data, num_obs=settings["num_obs"], noise=settings["noise"]
    )
    n = settings["num_train"]
    return {
        "model": bnn.build_model(mlp),
        "train": (x[:n], y[:n]),
        "test": (x[n:], y[n:]),
        "key": key_compare,
    }


def fingerprint(x_train, y_train) -> dict:
    """What the chapter checks to know it has the same training points."""
    return {
        "num_train": int(x_train.shape[0]),
        "x_sum": float(x_train.sum()),
        "num_ones": int(y_train.sum()),
    }


def guide_comparison(settings: dict) -> tuple[list[dict], dict]:
    """One row per guide (in the order below) and the training data's
    fingerprint."""
    setup = chapter_setup(settings)
    model = setup["model"]
    lr = settings["learning_rate"]
    schedule = optax.warmup_cosine_decay_schedule(
        lr["init"], lr["peak"], lr["warmup_steps"], settings["num_steps"], lr["end"]
    )
    guides = {
        "AutoNormal": AutoNormal(model),
        "AutoLowRankMultivariateNormal": AutoLowRankMultivariateNormal(
            model, rank=settings["rank"]
        ),
        "AutoMultivariateNormal": AutoMultivariateNormal(model),
        "AutoIAFNormal": AutoIAFNormal(model, **settings["iaf"]),
    }
    table = studies.compare_guides(
        setup["key"],
        model,
        guides,
        *setup["train"],
        *setup["test"],
        num_steps=settings["num_steps"],
        optimizer=optax.adam(schedule),
        num_samples=settings["num_draws"],
    )
    rows = [{"guide": name, **row} for name, row in table.to_dict("index").items()]
    return rows, fingerprint(*setup["train"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-steps", type=int, default=SETTINGS["num_steps"])
    parser.add_argument("--num-draws", type=int, default=SETTINGS["num_draws"])
    parser.add_argument("--rank", type=int, default=SETTINGS["rank"])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    settings = {
        **SETTINGS,
        "num_steps": args.num_steps,
        "num_draws": args.num_draws,
        "rank": args.rank,
    }
    # The set-up column is what a first run costs, compilation included: no
    # programs read back from the persistent cache that companion sets up.
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    start = time.perf_counter()
    rows, data_fingerprint = guide_comparison(settings)
    stored = {
        "settings": settings,
        "machine": {
            **machine(xla_flags=os.environ.get("XLA_FLAGS", "")),
            "comparison_s": time.perf_counter() - start,
        },
        "data": data_fingerprint,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
