"""Peak memory and time of posterior prediction: NumPyro's `Predictive`,
sequential and vectorised, against the companion's, one-shot and batched.

Four ways to run the chapter-4 Bayesian neural network once per posterior
draw on a grid over the input plane (chapters 6 and 9 draw such maps), on
the same posterior draws:

- ``Predictive`` (NumPyro's default, ``parallel=False``): one draw at a
  time, a sequential ``lax.map`` over the draws;
- ``Predictive(parallel=True)``: all draws at once, one ``vmap``;
- `companion.predictive.posterior_predictive` with ``batch_size=None``
  ("all"): all draws at once, one ``vmap``;
- the same with ``batch_size=b``: ``b`` draws at a time (``jax.lax.map``
  with ``batch_size``: a loop over batches, ``vmap`` inside one).

Every configuration is compiled (``jax.jit``) and draws the posterior
samples from the guide with the same key, so all return the same numbers
(compared element by element with the companion's one-shot output).

Each configuration runs in a fresh Python process, so that nothing allocated
by one configuration (XLA buffers, compiled programs, the allocator's cache)
is counted in another; the parent reads that process's own peak resident
memory from the operating system when it ends (``os.wait4``, whose
``ru_maxrss`` is per child, where ``RUSAGE_CHILDREN`` would only give the
largest over all children so far). A ``baseline`` process does everything
except the prediction (imports, model, guide, posterior draws), so the
memory that prediction itself adds is the difference. (On Linux a child's
``ru_maxrss`` starts from the resident memory of the parent at ``fork``, so
the parent stays small: it imports no JAX.)

Times are measured inside the worker: the first call (compiling included)
and the best of ``--repeats`` further calls (compiled run only).

The guide's parameters come from ``svi.init`` (no training): the cost of a
prediction does not depend on their values.

    python benchmarks/bench_predictive.py [--grid-points 300] [--draws 500]
        [--batch-sizes 100 20 5] [--repeats 3]

Record what it prints, with the machine, in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

PEAK_RSS_UNIT = 1024 if sys.platform != "darwin" else 1  # ru_maxrss: KiB on Linux
# NumPyro's Predictive, default (sequential) and parallel=True.
PREDICTIVE = ("predictive-sequential", "predictive-parallel")
LABELS = {
    "predictive-sequential": "Predictive (default)",
    "predictive-parallel": "Predictive(parallel=True)",
    "one-shot": "all",
}


def worker(args: argparse.Namespace) -> None:
    """One configuration, in this (fresh) process; prints one JSON line."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import optax
    from flax import nnx
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from companion import bnn, data, predictive

    x, y = data.make_moons(jax.random.key(0), 600, 0.2)
    mlp = bnn.MLP(2, 1, [4, 3], rngs=nnx.Rngs(0))
    model = bnn.build_model(mlp)
    guide = AutoNormal(model)
    svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
    params = svi.get_params(svi.init(jax.random.key(1), x, y))
    grid = data.make_grid(x, num_points=args.grid_points).points
    result = {"grid": int(grid.shape[0]), "draws": args.draws}
    if args.config == "baseline":
        samples = predictive.sample_posterior(
            jax.random.key(2), guide, params, grid, num_samples=args.draws
        )
        jax.block_until_ready(samples)
        print(json.dumps(result))
        return

    if args.config in PREDICTIVE:
        from numpyro.infer import Predictive

        parallel = args.config == "predictive-parallel"

        @jax.jit
        def numpyro_predictive(key, samples, grid):
            return Predictive(
                model, posterior_samples=samples, return_sites=["p"], parallel=parallel
            )(key, grid)["p"]

        def call():
            # The keys posterior_predictive uses: the first half for the guide.
            key_guide, key_model = jax.random.split(jax.random.key(2))
            samples = predictive.sample_posterior(
                key_guide, guide, params, grid, num_samples=args.draws
            )
            return jax.block_until_ready(numpyro_predictive(key_model, samples, grid))

    else:
        batch_size = None if args.config == "one-shot" else int(args.config)

        def call():
            return companion_predictive(batch_size)

    def companion_predictive(batch_size):
        out = predictive.posterior_predictive(
            jax.random.key(2),
            model,
            guide,
            params,
            grid,
            num_samples=args.draws,
            batch_size=batch_size,
            return_sites=["p"],
        )["p"]
        return jax.block_until_ready(out)

    start = time.perf_counter()
    out = call()
    result["first_call_s"] = time.perf_counter() - start
    runs = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        call()
        runs.append(time.perf_counter() - start)
    result["run_s"] = min(runs)
    result["shape"] = list(out.shape)
    np.save(args.save, np.asarray(out))
    print(json.dumps(result))


def run_config(config: str, args: argparse.Namespace, save: str) -> dict:
    """Run one configuration in a fresh process; add its peak RSS in MiB.

    The worker saves its output to ``save`` (a ``.npy`` file) so that the
    parent can compare configurations after the worker's memory is gone."""
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker",
        config,
        "--grid-points",
        str(args.grid_points),
        "--draws",
        str(args.draws),
        "--repeats",
        str(args.repeats),
        "--save",
        save,
    ]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as proc:
        stdout = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not stdout.strip():
        raise RuntimeError(f"configuration {config!r} failed ({proc.returncode})")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mib"] = usage.ru_maxrss * PEAK_RSS_UNIT / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid-points", type=int, default=300)
    parser.add_argument("--draws", type=int, default=500)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[100, 20, 5])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", metavar="CONFIG", help=argparse.SUPPRESS)
    parser.add_argument("--save", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        args.config = args.worker
        worker(args)
        return

    for name in ("grid_points", "draws", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1")
    if any(b < 1 for b in args.batch_sizes):
        parser.error("--batch-sizes must be positive")
    batch_sizes = list(dict.fromkeys(args.batch_sizes))  # once each, in order
    configs = ["baseline", *PREDICTIVE, "one-shot", *map(str, batch_sizes)]
    compared = [config for config in configs if config not in ("baseline", "one-shot")]
    with tempfile.TemporaryDirectory() as tmp:
        saves = {config: os.path.join(tmp, f"{config}.npy") for config in configs}
        results = {
            config: run_config(config, args, saves[config]) for config in configs
        }
        reference = np.load(saves["one-shot"])
        for config in compared:
            results[config]["max_abs_diff"] = float(
                np.max(np.abs(np.load(saves[config]) - reference))
            )
    base = results["baseline"]["peak_rss_mib"]
    one = results["one-shot"]
    max_diff = max(results[str(b)]["max_abs_diff"] for b in batch_sizes)

    print(
        f"posterior predictive of the chapter-4 BNN: {args.draws} draws x "
        f"{one['grid']:,} grid points ({args.grid_points}^2), output "
        f"{one['shape']} float32 = {4 * args.draws * one['grid'] / 2**20:.0f} MiB"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.platform()}; JAX backend: "
        f"{os.environ.get('JAX_PLATFORMS', 'cpu')}"
    )
    print(f"baseline process (no prediction): peak RSS {base:,.0f} MiB")
    print(
        "largest difference from the one-shot output, over all batch sizes: "
        f"{max_diff:.1e} (probabilities in [0, 1]; float32 rounding only); "
        "Predictive default and parallel=True: "
        + ", ".join(f"{results[c]['max_abs_diff']:.1e}" for c in PREDICTIVE)
    )
    header = (
        f"{'method (batch_size)':>26} {'peak RSS':>10} {'above base':>11} {'mem ratio':>10} "
        f"{'run (s)':>8} {'time ratio':>11} {'1st call (s)':>13}"
    )
    print(header)
    print("-" * len(header))
    above_one = one["peak_rss_mib"] - base
    for config in configs[1:]:
        r = results[config]
        above = r["peak_rss_mib"] - base
        print(
            f"{LABELS.get(config, config):>26} "
            f"{r['peak_rss_mib']:>8,.0f}Mi {above:>9,.0f}Mi "
            f"{above / above_one if above_one > 0 else float('nan'):>10.2f} "
            f"{r['run_s']:>8.3f} "
            f"{r['run_s'] / one['run_s']:>11.2f} {r['first_call_s']:>13.2f}"
        )
    print(
        "Predictive: numpyro.infer.Predictive, default parallel=False (a "
        "sequential lax.map over the draws) and parallel=True (one vmap); all "
        "and numbers: companion.predictive.posterior_predictive with batch_size="
        "None (one vmap) and with that many draws at a time.\n"
        "mem ratio: memory above the baseline, relative to 'all'; time ratio: "
        "compiled run time relative to 'all'."
    )


if __name__ == "__main__":
    main()
