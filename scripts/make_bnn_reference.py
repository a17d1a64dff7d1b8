"""Make the NUTS reference posterior of chapter 7's Bayesian neural network.

Run from anywhere::

    python scripts/make_bnn_reference.py

It regenerates chapter 7's two-moons data from ``SEED``, runs NumPyro's NUTS
on the talk's network (tanh hidden layers of 4 and 3 units, soft-Laplace
priors) with NumPyro's default trajectory cap and a long warm-up, and writes
``data/bnn_nuts_reference.nc``: an ArviZ ``InferenceData`` (NetCDF, float32)
with the weight draws (``posterior``), the sampler's statistics
(``sample_stats``), the labels (``observed_data``) and the inputs
(``constant_data``). The settings that made it are stored in the file's
attributes, together with the convergence numbers the script computed, so
that ``tests/test_reference_data.py`` can check the file against this
script and chapter 7 can check its data against the file.

The run is deterministic (fixed keys, CPU): running the script again gives
the same draws. It takes minutes; the chapter loads the file instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
import warnings
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import numpyro
from flax import nnx

from companion import bnn, convert, data, mcmc

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing", FutureWarning)
    import arviz as az

# The data: chapter 7 regenerates them from these settings (read back from
# the file's attributes) and checks them against the stored hash.
SEED = 7
NUM_DATA = 1_000
NOISE = 0.2
FRACTIONS = (0.6, 0.2, 0.2)
HIDDEN_LAYERS = (4, 3)
PRIOR_SCALE = 1.0

# The sampler: NumPyro's default trajectory cap (2**10 - 1 leapfrog steps), a
# long warm-up, a high target acceptance (smaller steps, fewer divergences)
# and enough chains for R-hat to see disagreement between them.
NUM_WARMUP = 1_000
NUM_SAMPLES = 1_000
NUM_CHAINS = 8
MAX_TREE_DEPTH = 10
TARGET_ACCEPT = 0.95

OUTPUT = Path(__file__).resolve().parents[1] / "data" / "bnn_nuts_reference.nc"


def make_data(seed: int = SEED):
    """The training data and the sampler's key: ``(split, key_nuts)``.

    One key per use, split from ``jax.random.key(seed)``: the moons, the
    train/validation/test shuffle, the sampler.
    """
    key_data, key_split, key_nuts = jax.random.split(jax.random.key(seed), 3)
    x, y = data.make_moons(key_data, num_obs=NUM_DATA, noise=NOISE)
    split = data.train_val_test_split(key_split, x, y, fractions=FRACTIONS)
    return split, key_nuts


def make_model():
    """The talk's network as a NumPyro model (the MLP's initial weights do
    not matter: every weight is a latent variable)."""
    mlp = bnn.MLP(din=2, dout=1, hidden_layers=list(HIDDEN_LAYERS), rngs=nnx.Rngs(0))
    return bnn.build_model(mlp, prior_scale=PRIOR_SCALE)


def file_name(site: str) -> str:
    """NetCDF (HDF5) names cannot hold ``/``: ``nn/layers.0.kernel`` is stored
    as ``nn.layers.0.kernel``."""
    return site.replace("/", ".", 1)


def site_name(name: str) -> str:
    """The model's site name of a stored variable (inverse of :func:`file_name`)."""
    return name.replace(".", "/", 1)


def data_hash(*arrays) -> str:
    """SHA-256 of the arrays' bytes (dtype and shape included)."""
    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def prediction_diagnostics(idata, x) -> dict[str, float]:
    """R-hat and bulk ESS of the predicted probability at the points ``x``
    (the quantity a classifier is judged by), over all chains."""
    model = make_model()
    weights = {
        site_name(name): np.asarray(value)
        for name, value in convert.flatten_draws(idata).items()
    }
    num_chains = idata.posterior.sizes["chain"]
    predictive = numpyro.infer.Predictive(
        model, posterior_samples=weights, return_sites=["p"]
    )
    probs = np.asarray(predictive(jax.random.key(0), x)["p"])
    probs = probs.reshape(num_chains, -1, probs.shape[-1])
    dataset = az.convert_to_dataset({"p": probs})
    rhat = np.asarray(az.rhat(dataset)["p"])
    ess = np.asarray(az.ess(dataset)["p"])
    return {
        "rhat_p_test_median": float(np.median(rhat)),
        "rhat_p_test_max": float(rhat.max()),
        "share_rhat_p_test_above_1_01": float((rhat > 1.01).mean()),
        "ess_p_test_median": float(np.median(ess)),
        "ess_p_test_min": float(ess.min()),
    }


def main(
    output: Path = OUTPUT,
    num_warmup: int = NUM_WARMUP,
    num_samples: int = NUM_SAMPLES,
    num_chains: int = NUM_CHAINS,
    max_tree_depth: int = MAX_TREE_DEPTH,
    target_accept: float = TARGET_ACCEPT,
) -> az.InferenceData:
    """Run NUTS on the data of :func:`make_data`, write ``output`` and return
    what was written. The defaults make the book's reference; other values
    (the command line's options) make shorter runs to compare with it."""
    split, key_nuts = make_data()
    model = make_model()
    start = time.perf_counter()
    idata, timing = mcmc.timed_nuts(
        key_nuts,
        model,
        split.x_train,
        split.y_train,
        num_warmup=num_warmup,
        num_samples=num_samples,
        num_chains=num_chains,
        max_tree_depth=max_tree_depth,
        target_accept_prob=target_accept,
    )
    wall_s = time.perf_counter() - start
    weights = [name for name in idata.posterior.data_vars if name != "p"]
    stats = idata.sample_stats
    reference = az.from_dict(
        posterior={
            file_name(name): idata.posterior[name].values.astype(np.float32)
            for name in weights
        },
        sample_stats={
            "diverging": stats["diverging"].values.astype(bool),
            "n_steps": stats["n_steps"].values.astype(np.int32),
            "acceptance_rate": stats["acceptance_rate"].values.astype(np.float32),
            "lp": stats["lp"].values.astype(np.float32),
        },
        observed_data={"y": np.asarray(split.y_train, dtype=np.int32)},
        constant_data={"x": np.asarray(split.x_train, dtype=np.float32)},
    )
    print(f"NUTS: set-up {timing.setup_s:.1f} s, run {timing.run_s:.1f} s", flush=True)
    rhat_weights = np.concatenate([np.ravel(v) for v in az.rhat(reference).values()])
    attrs = {
        "seed": SEED,
        "num_data": NUM_DATA,
        "noise": NOISE,
        "fractions": list(FRACTIONS),
        "hidden_layers": list(HIDDEN_LAYERS),
        "prior_scale": PRIOR_SCALE,
        "num_warmup": num_warmup,
        "num_samples": num_samples,
        "num_chains": num_chains,
        "max_tree_depth": max_tree_depth,
        "target_accept": target_accept,
        "train_sha256": data_hash(split.x_train, split.y_train),
        "test_sha256": data_hash(split.x_test, split.y_test),
        "jax_version": jax.__version__,
        "numpyro_version": numpyro.__version__,
        "arviz_version": az.__version__,
        "setup_s": timing.setup_s,
        "run_s": timing.run_s,
        "wall_s": wall_s,
        "num_divergent": int(stats["diverging"].values.sum()),
        "share_at_max_tree_depth": float(
            (stats["n_steps"].values >= 2**max_tree_depth - 1).mean()
        ),
        "rhat_weights_median": float(np.median(rhat_weights)),
        **prediction_diagnostics(reference, split.x_test),
    }
    reference.posterior.attrs.update(attrs)
    for key, value in attrs.items():
        print(f"{key}: {value}", flush=True)
    # Write beside the target, then rename: a reader of the old file (a
    # chapter being run) neither blocks the write nor sees half a file.
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    reference.to_netcdf(str(partial))
    os.replace(partial, output)
    return reference


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    parser.add_argument("--num-warmup", type=int, default=NUM_WARMUP)
    parser.add_argument("--num-samples", type=int, default=NUM_SAMPLES)
    parser.add_argument("--num-chains", type=int, default=NUM_CHAINS)
    parser.add_argument("--max-tree-depth", type=int, default=MAX_TREE_DEPTH)
    parser.add_argument("--target-accept", type=float, default=TARGET_ACCEPT)
    args = parser.parse_args()
    main(
        args.output,
        args.num_warmup,
        args.num_samples,
        args.num_chains,
        args.max_tree_depth,
        args.target_accept,
    )
