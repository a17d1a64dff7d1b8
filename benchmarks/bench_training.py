"""Speed of `companion.training.fit` against the alternatives, side by side.

On the same SVI problems, the chapter-5 Bayesian neural network on two moons
and the chapter-3 Gamma model, this times, in one process and after a
warm-up: a bare `jit`-compiled `lax.scan` of `svi.update` (the limit), `fit`
without and with validation (early stopping off), `svi.run` with and without
its progress bar, and the talk's per-step loop. It prints steps per second,
each method's ratio to the limit, and compile time separately.

    python benchmarks/bench_training.py [--steps 5000] [--repeats 3] [--problems bnn gamma]

Record what it prints, with the machine, in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import time
from collections.abc import Callable

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import optax
from flax import nnx
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from tqdm import tqdm

from companion import bnn, data, gamma, training


def bnn_problem() -> tuple[SVI, tuple, tuple]:
    """The chapter-5 set-up: two moons, MLP [4, 3], AutoNormal, Adam(0.01)."""
    x, y = data.make_moons(jax.random.key(0), 1_000, 0.2)
    x_train, y_train, x_val, y_val = x[:800], y[:800], x[800:], y[800:]
    mlp = bnn.MLP(2, 1, [4, 3], rngs=nnx.Rngs(0))
    model = bnn.build_model(mlp)
    svi = SVI(model, AutoNormal(model), optax.adam(0.01), Trace_ELBO())
    return svi, (x_train, y_train), (x_val, y_val)


def gamma_problem() -> tuple[SVI, tuple, tuple]:
    """The chapter-3 set-up: the talk's model and guide, 10 particles, Adam(0.005).

    The Gamma model takes its data by keyword; wrap it positionally so every
    method below calls it the same way.
    """
    z = gamma.simulate(jax.random.key(0), 2.5, 1_000)

    def model(z):
        gamma.model(z=z)

    def guide(z):
        gamma.guide(z=z)

    svi = SVI(model, guide, optax.adam(0.005), Trace_ELBO(num_particles=10))
    return svi, (z[:800],), (z[800:],)


def bare_scan(svi: SVI, num_steps: int) -> Callable:
    """The limit: one compiled scan of svi.update, nothing else."""

    @jax.jit
    def run(state, *args):
        def body(state, _):
            return svi.update(state, *args)

        return jax.lax.scan(body, state, None, length=num_steps)

    def call(key, train, val):
        state = svi.init(key, *train)
        state, losses = run(state, *train)
        return jax.block_until_ready(losses)

    return call


def fit_method(svi: SVI, num_steps: int, with_val: bool) -> Callable:
    def call(key, train, val):
        result = training.fit(
            svi,
            key,
            num_steps,
            *train,
            val_args=val if with_val else None,
            progress_bar=False,
        )
        return result.losses

    return call


def svi_run(svi: SVI, num_steps: int, progress_bar: bool) -> Callable:
    def call(key, train, val):
        with contextlib.redirect_stderr(io.StringIO()):  # the bar is drawn, not shown
            result = svi.run(key, num_steps, *train, progress_bar=progress_bar)
        return jax.block_until_ready(result.losses)

    return call


def talk_loop(
    svi: SVI, num_steps: int, train: tuple, val: tuple, hoisted: bool = False
) -> Callable:
    """The talk's custom loop: ``jax.jit(body_fn)`` called at every step, a
    host transfer and a validation loss at every step (without its early
    stopping, to time whole runs). As in the talk, ``body_fn`` closes over the
    training data and is defined once, so ``jax.jit`` finds it in its cache;
    what each step pays is the wrapping, the dispatch and the host transfers.
    With ``hoisted=True`` the two functions are jitted once, before the loop:
    the best a per-step Python loop can do."""

    def body_fn(svi_state, _):
        return svi.update(svi_state, *train)

    def get_val_loss(svi_state, *val):
        return svi.evaluate(svi_state, *val)

    jitted_body, jitted_val = jax.jit(body_fn), jax.jit(get_val_loss)
    n_train, n_val = train[0].shape[0], val[0].shape[0]

    def call(key, train_args, val_args):
        svi_state = svi.init(key, *train_args)
        train_losses, val_losses = [], []
        with tqdm(range(1, num_steps + 1), disable=True) as t:
            for _ in t:
                step = jitted_body if hoisted else jax.jit(body_fn)
                svi_state, train_loss = step(svi_state, None)
                norm_train = jax.device_get(train_loss) / n_train
                train_losses.append(jax.device_get(train_loss))
                evaluate = jitted_val if hoisted else jax.jit(get_val_loss)
                val_loss = evaluate(svi_state, *val_args)
                norm_val = jax.device_get(val_loss) / n_val
                val_losses.append(jax.device_get(val_loss))
                t.set_postfix_str(
                    f"train: {norm_train:.4f}, val: {norm_val:.4f}", refresh=False
                )
        return np.asarray(train_losses)

    return call


def time_method(call: Callable, train, val, repeats: int) -> tuple[float, float]:
    """First call (compile + run) and the best of ``repeats`` warm calls."""
    start = time.perf_counter()
    call(jax.random.key(1), train, val)
    first = time.perf_counter() - start
    best = np.inf
    for r in range(repeats):
        start = time.perf_counter()
        call(jax.random.key(2 + r), train, val)
        best = min(best, time.perf_counter() - start)
    return first, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5_000)
    parser.add_argument(
        "--talk-steps",
        type=int,
        default=1_000,
        help="steps for the talk's loop (it is slow; reported per step)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--problems", nargs="+", choices=["bnn", "gamma"], default=["bnn", "gamma"]
    )
    args = parser.parse_args()
    problems = {
        "bnn": ("BNN (chapter 5)", bnn_problem),
        "gamma": ("Gamma (chapter 3)", gamma_problem),
    }

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"jax {jax.__version__} on {jax.devices()[0].platform}"
    )
    for name, problem in (problems[p] for p in args.problems):
        svi, train, val = problem()
        n = args.steps
        methods = {
            "bare jit(lax.scan) [limit]": (bare_scan(svi, n), n),
            "fit, no validation": (fit_method(svi, n, with_val=False), n),
            "fit, validation each chunk": (fit_method(svi, n, with_val=True), n),
            "svi.run(progress_bar=False)": (svi_run(svi, n, progress_bar=False), n),
            "svi.run(progress_bar=True)": (svi_run(svi, n, progress_bar=True), n),
            "talk's per-step loop": (
                talk_loop(svi, args.talk_steps, train, val),
                args.talk_steps,
            ),
            "per-step loop, jit hoisted": (
                talk_loop(svi, args.talk_steps, train, val, hoisted=True),
                args.talk_steps,
            ),
        }
        print(
            f"\n{name}: {n:,} steps ({args.talk_steps:,} for the talk's loop), "
            f"best of {args.repeats} warm runs"
        )
        print(
            f"{'method':32s} {'steps/s':>10s} {'x limit':>8s} {'first call s':>13s} {'compile s':>10s}"
        )
        limit = None
        for label, (call, steps) in methods.items():
            first, best = time_method(call, train, val, args.repeats)
            rate = steps / best
            limit = limit or rate
            print(
                f"{label:32s} {rate:10,.0f} {rate / limit:8.2f} {first:13.2f} "
                f"{max(first - best, 0.0):10.2f}"
            )


if __name__ == "__main__":
    main()
