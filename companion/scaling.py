"""SVI at scale: mini-batches, several devices and several processes.

- :func:`subsample_plate` (defined in `companion.bnn`, whose model uses it)
  is ``numpyro.plate(name, size, subsample_size)`` whose mini-batch indices
  are one vectorised draw per step; NumPyro's own draw (without
  replacement) is, on a CPU, a sequential loop of ``subsample_size`` swaps
  in a copy of ``arange(size)``. :func:`build_minibatch_model` is the talk's
  Bayesian neural network on top of it, `companion.bnn.build_model` with
  ``subsample_size``. Either way NumPyro scales the mini-batch
  log-likelihood by ``size / subsample_size``, so the loss stays an unbiased
  estimate of the full-data loss (negative ELBO).
- :func:`loss_estimates` draws many loss estimates at fixed parameters, to
  check that claim.
- :func:`make_mesh`, :func:`shard_data`, :func:`replicate` and
  :func:`data_parallel_fit` run the same SVI code on one device or many with
  `jax.sharding`: the data (all on the devices) split along the batch axis,
  the parameters replicated, and XLA adding the cross-device sums. For data
  that stay on the host, :func:`companion.streaming.fit` takes a mesh too.
- :func:`run_processes` starts several Python processes of one script, joined
  by `jax.distributed.initialize` through a coordinator on a free local port
  (:func:`free_port`): several hosts, simulated on one machine.

Used in chapter 7 (mini-batch SVI) and chapter 9 (scaling in production).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int
from numpyro.infer import SVI, Trace_ELBO

from companion import bnn, training
from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._checks import check_positive as _check_positive
from companion._compile import cached_jit as _cached_jit
from companion.bnn import subsample_plate

__all__ = [
    "build_minibatch_model",
    "data_parallel_fit",
    "free_port",
    "loss_estimates",
    "make_mesh",
    "replicate",
    "run_processes",
    "shard_data",
    "subsample_plate",
]

BATCH_AXIS = "batch"


# --------------------------------------------------------------------------
# Mini-batches.


def build_minibatch_model(
    mlp: bnn.MLP,
    *,
    subsample_size: int | None = None,
    replace: bool = True,
    prior_scale: float = 1.0,
    name: str = "nn",
) -> Callable[..., None]:
    """The talk's Bayesian neural network on mini-batches of
    ``subsample_size`` rows: :func:`companion.bnn.build_model` with
    ``subsample_size`` (one model factory; this name stays for chapter 9).

    Used in chapter 9.
    """
    return bnn.build_model(
        mlp,
        prior_scale=prior_scale,
        name=name,
        subsample_size=subsample_size,
        replace=replace,
    )


def loss_estimates(
    rng_key: jax.Array,
    model: Callable[..., Any],
    guide: Callable[..., Any],
    params: dict[str, Any],
    *args: Any,
    num_estimates: int,
    num_particles: int = 1,
    **kwargs: Any,
) -> Float[Array, " num_estimates"]:
    """``num_estimates`` independent estimates of the loss (negative ELBO,
    `Trace_ELBO` with ``num_particles``) of ``guide`` with parameters
    ``params`` (constrained, as ``result.params``), one per key, in one
    compiled ``vmap``.

    With a mini-batch model every estimate uses a new mini-batch, so their
    mean estimates the expected loss over mini-batches, which equals the
    full-batch expected loss: the ``n / subsample_size`` scaling makes the
    mini-batch log-likelihood unbiased.

    Used in chapter 9.
    """
    _check_key(rng_key)
    _check_count("num_estimates", num_estimates)
    _check_count("num_particles", num_particles)
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict (result.params), got {params!r}")
    elbo = Trace_ELBO(num_particles=num_particles)

    def estimate(keys, params, call_args, call_kwargs):
        return jax.vmap(
            lambda key: elbo.loss(key, params, model, guide, *call_args, **call_kwargs)
        )(keys)

    # one compiled estimator per guide, model and settings, reused across calls
    # (a chapter that scores several fits of one guide compiles once)
    run = _cached_jit(
        guide, ("loss_estimates", model, num_particles), estimate, args, kwargs
    )
    return run(jax.random.split(rng_key, num_estimates), params)


# --------------------------------------------------------------------------
# Several devices.


def make_mesh(
    devices: list[jax.Device] | None = None, axis_name: str = BATCH_AXIS
) -> Mesh:
    """A one-dimensional `jax.sharding.Mesh` over ``devices`` (default: all of
    `jax.devices()`), with one axis named ``axis_name`` for the data.

    The axis is of type ``Auto``: the compiler decides how to split the
    computation from the shardings of the inputs, so code written for one
    device runs unchanged.

    Used by :func:`data_parallel_fit` (mentioned in chapter 9).

    Example:
        >>> make_mesh().shape["batch"] == len(jax.devices())
        True
    """
    devices = jax.devices() if devices is None else list(devices)
    if not devices or not all(isinstance(d, jax.Device) for d in devices):
        raise ValueError(
            f"devices must be a non-empty list of jax devices, got {devices!r}"
        )
    if not isinstance(axis_name, str) or not axis_name:
        raise ValueError(f"axis_name must be a non-empty str, got {axis_name!r}")
    return Mesh(np.array(devices), (axis_name,), axis_types=(AxisType.Auto,))


def shard_data(*arrays: Array, mesh: Mesh) -> tuple[Array, ...]:
    """Place each array on ``mesh`` split along its first (batch) axis, an
    equal block of rows per device (`NamedSharding` with
    ``PartitionSpec(axis)``).

    Raises ``ValueError`` when the number of devices does not divide the
    number of rows, or when the arrays differ in their number of rows.

    Used by :func:`data_parallel_fit` (mentioned in chapter 9).

    Example:
        >>> (x,) = shard_data(jnp.zeros((8, 2)), mesh=make_mesh())
        >>> x.sharding.spec
        P('batch',)
    """
    _check_mesh(mesh)
    if not arrays:
        raise ValueError("shard_data needs at least one array")
    (axis,) = mesh.axis_names
    num_devices = mesh.shape[axis]
    rows = {np.shape(a)[0] if np.ndim(a) else None for a in arrays}
    if None in rows:
        raise ValueError("arrays must have a leading batch axis, got a scalar")
    if len(rows) != 1:
        raise ValueError(f"arrays must share their number of rows, got {sorted(rows)}")
    (num_rows,) = rows
    if num_rows % num_devices:
        raise ValueError(
            f"the batch of {num_rows} rows cannot be split evenly over the mesh's "
            f"{num_devices} devices: the device count must divide the batch "
            f"(drop {num_rows % num_devices} rows, or change subsample/batch size)"
        )
    sharding = NamedSharding(mesh, PartitionSpec(axis))
    return tuple(jax.device_put(jnp.asarray(a), sharding) for a in arrays)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Copy every array of ``tree`` to every device of ``mesh``
    (`NamedSharding` with an empty ``PartitionSpec``): how parameters and the
    optimiser state live in data-parallel training.

    Used by :func:`data_parallel_fit` (mentioned in chapter 9).
    """
    _check_mesh(mesh)
    return jax.device_put(tree, NamedSharding(mesh, PartitionSpec()))


def data_parallel_fit(
    svi: SVI,
    rng_key: jax.Array,
    num_steps: int,
    x: Float[Array, "n d"],
    y: Int[Array, " n"],
    *,
    mesh: Mesh | None = None,
    **fit_kwargs: Any,
) -> training.FitResult:
    """Data-parallel SVI: :func:`companion.training.fit` with ``x`` and ``y``
    sharded along the batch axis of ``mesh`` (default :func:`make_mesh` over
    all devices) and the initial SVI state replicated.

    The training code is the same as on one device: the loss is a sum over
    observations, so each device evaluates the likelihood of its own rows and
    XLA inserts the sum across devices (an all-reduce) for the loss and its
    gradient; every device then takes the same optimiser step on its copy of
    the parameters. On one device the result is that of ``training.fit``; on
    several it agrees up to the order of floating-point sums.

    Raises ``ValueError`` (from :func:`shard_data`) when the device count does
    not divide the number of rows. ``fit_kwargs`` go to
    :func:`companion.training.fit` (``progress_bar``, ``chunk_size``, ...).

    Mentioned in chapter 9, for data that fit on the devices whole (the
    chapter streams mini-batches with :func:`companion.streaming.fit`).
    """
    if not isinstance(svi, SVI):
        raise TypeError(f"svi must be a numpyro.infer.SVI, got {type(svi).__name__}")
    _check_key(rng_key)
    _check_count("num_steps", num_steps)
    if "init_state" in fit_kwargs:
        raise ValueError("data_parallel_fit builds init_state itself; do not pass it")
    mesh = make_mesh() if mesh is None else mesh
    x_sharded, y_sharded = shard_data(x, y, mesh=mesh)
    # Initialise on the unsharded data: svi.init runs the model op by op, and
    # every eager op on sharded arrays would compile a program of its own.
    state = replicate(svi.init(rng_key, x, y), mesh)
    x, y = x_sharded, y_sharded
    return training.fit(svi, rng_key, num_steps, x, y, init_state=state, **fit_kwargs)


# --------------------------------------------------------------------------
# Several processes.


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the operating system's
    choice), for a local `jax.distributed` coordinator. Used in chapter 9."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_processes(
    script: str | os.PathLike[str],
    num_processes: int = 1,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
) -> list[str]:
    """Run ``num_processes`` copies of the Python file ``script`` at the same
    time, each with the command-line arguments ``args``, and return what each
    printed (its standard output), in process order.

    Each process gets the environment of this one, updated with ``env``, plus
    ``PROCESS_ID`` (0, 1, ...), ``NUM_PROCESSES`` and ``COORDINATOR_ADDRESS``
    (``127.0.0.1:<port>``, a :func:`free_port`): what the script passes to
    `jax.distributed.initialize` so that the processes form one JAX program
    over all their devices, as processes on several hosts would (there each
    host starts one, with the first host's address and its own id). No
    communication happens here: JAX does it.

    Raises ``RuntimeError`` with the end of its standard error if a process
    fails or outlasts ``timeout`` seconds (then all are stopped).

    Used in chapter 9, through ``scripts/make_multidevice_runs.py``.

    Example:
        >>> import pathlib, tempfile
        >>> script = pathlib.Path(tempfile.mkdtemp()) / "hello.py"
        >>> _ = script.write_text("import os; print(os.environ['PROCESS_ID'])")
        >>> run_processes(script, 2)
        ['0\\n', '1\\n']
    """
    script = os.fspath(script)
    if not os.path.isfile(script):
        raise ValueError(f"script must be the path of a Python file, got {script!r}")
    _check_count("num_processes", num_processes)
    if env is not None and (
        not isinstance(env, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise TypeError(f"env must be a mapping of str to str, got {env!r}")
    if (
        isinstance(args, str)
        or not isinstance(args, Sequence)
        or not all(isinstance(a, str) for a in args)
    ):
        raise TypeError(f"args must be a sequence of str, got {args!r}")
    _check_positive("timeout", timeout)
    shared = {
        **os.environ,
        **(env or {}),
        "NUM_PROCESSES": str(num_processes),
        "COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}",
    }
    procs = [
        subprocess.Popen(
            [sys.executable, script, *args],
            env={**shared, "PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(num_processes)
    ]
    outputs = []
    try:
        for i, proc in enumerate(procs):
            try:
                stdout, stderr = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise RuntimeError(
                    f"process {i} of {script} ran longer than {timeout} s"
                ) from None
            if proc.returncode != 0:
                raise RuntimeError(
                    f"process {i} of {script} failed ({proc.returncode}):\n"
                    f"{stderr[-3000:]}"
                )
            outputs.append(stdout)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return outputs


# --------------------------------------------------------------------------
# Input checks, before any tracing.


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
        raise ValueError(
            f"mesh must be a one-axis jax.sharding.Mesh (make_mesh()), got {mesh!r}"
        )
