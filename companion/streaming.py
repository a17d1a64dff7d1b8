"""Stochastic VI on data that stay on the host: mini-batches streamed to the
device, one shuffle per epoch.

Everything else in the book puts the whole data set on the device and draws
mini-batch indices inside the model (``x[idx]``). That stops working when the
data do not fit in device memory, or when they live in a file. Here the data
stay in host memory (NumPy arrays or `np.memmap` files) and only the rows of
the next few mini-batches are gathered on the host and moved to the device,
ahead of use, while the device works on the current ones.

- :func:`batch_plate` is the plate a streamed model puts its likelihood in:
  a plate over the ``batch_size`` rows it was given, whose log-likelihood is
  scaled by ``num_data / batch_size`` (no index draw: the rows were chosen on
  the host).
- :func:`fit` runs SVI over the host arrays for a number of epochs: a fresh
  shuffle per epoch, ``num_data // batch_size`` steps per epoch (the last
  partial batch of each shuffle is dropped; a different remainder each
  epoch), either of single rows (exact) or of blocks of contiguous rows
  (``shuffle_block``: much cheaper for the host, exact only for rows stored
  in random order), chunks of steps gathered by a background thread and
  run as compiled scans, optional tail (Polyak-Ruppert) averaging of the
  iterates, and data parallelism over a `jax.sharding.Mesh` of local
  or, after `jax.distributed.initialize`, several processes' devices, each
  process reading only its own part of every batch.

Loss means negative ELBO, to minimise, as in NumPyro.

Introduced in chapter 8 (a hierarchical model at scale); used in chapter 9.
"""

from __future__ import annotations

import collections
import contextlib
import queue
import threading
import time
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from jaxtyping import Array, Float, Int
from numpyro.infer import SVI
from numpyro.infer.svi import SVIState
from tqdm.auto import tqdm

from companion._checks import check_count as _check_count
from companion._checks import check_key as _check_key
from companion._checks import is_int as _is_int
from companion._progress import bar_disabled

__all__ = ["StreamingResult", "batch_plate", "fit"]


# --------------------------------------------------------------------------
# The plate.


@contextlib.contextmanager
def batch_plate(
    name: str, num_data: int, batch_size: int, *, dim: int | None = None
) -> Iterator[Int[Array, " batch_size"]]:
    """A plate over one mini-batch of ``batch_size`` rows out of ``num_data``,
    whose log-likelihood NumPyro scales by ``num_data / batch_size``.

    It is ``numpyro.plate(name, num_data, subsample_size=batch_size)`` with
    the subsample indices fixed to ``arange(batch_size)``: the rows were drawn
    on the host (by :func:`fit`), so the model uses the batch it was given as
    it is and no index is drawn. Averaged over the batches of a partition of
    the data, the scaled mini-batch loss is exactly the full-data loss; over
    random batches it is an unbiased estimate of it. With
    ``batch_size == num_data`` it is the plain full-batch plate (scale 1).

    Used in chapter 8; the primer and chapter 2 show it.

    Example:
        >>> import numpyro.distributions as dist
        >>> def model(y, num_data):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 1))
        ...     with batch_plate("data", num_data, y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
        ...     jnp.zeros(10), num_data=1_000
        ... )
        >>> tr["y"]["value"].shape, float(tr["y"]["scale"])
        ((10,), 100.0)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty str, got {name!r}")
    _check_count("num_data", num_data)
    _check_count("batch_size", batch_size)
    if batch_size > num_data:
        raise ValueError(
            f"batch_size must be at most num_data={num_data}, got {batch_size}"
        )
    indices = jnp.arange(batch_size)
    with (
        numpyro.handlers.substitute(data={name: indices}),
        numpyro.plate(name, num_data, subsample_size=batch_size, dim=dim) as idx,
    ):
        yield idx


# --------------------------------------------------------------------------
# The fit.


class StreamingResult(NamedTuple):
    """What :func:`fit` returns. Used in chapters 8 and 9.

    Attributes:
        params: the constrained parameters after the last step.
        state: the `SVIState` after the last step (pass it back as
            ``init_state``, with ``start_epoch=epochs_run``, to resume).
        losses: the loss (negative ELBO, for the full data: the mini-batch
            log-likelihood is scaled up) of every step of this call.
        epoch_losses: the mean of ``losses`` over each epoch of this call.
        averaged_params: the constrained average of the unconstrained
            iterates from step ``average_from`` on (Polyak-Ruppert tail
            averaging), or ``None`` without ``average_from``.
        num_data: the number of rows, ``N``.
        batch_size: rows per step.
        steps_per_epoch: ``N // batch_size``.
        epochs_run: epochs run so far, counting ``start_epoch``.
        seconds: wall time of the steps of this call (after set-up).
        setup_seconds: wall time of waiting for the first chunk (with a row
            shuffle, the first epoch's permutation and its gathering, done
            while the background thread starts), `svi.init`, and compilation
            (of the full chunks and, when the steps do not divide evenly, the
            last one).
    """

    params: dict[str, Any]
    state: SVIState
    losses: Float[np.ndarray, " num_steps"]
    epoch_losses: Float[np.ndarray, " num_epochs"]
    averaged_params: dict[str, Any] | None
    num_data: int
    batch_size: int
    steps_per_epoch: int
    epochs_run: int
    seconds: float
    setup_seconds: float

    @property
    def rows_per_second(self) -> float:
        """Rows processed per second of run time (after set-up)."""
        return len(self.losses) * self.batch_size / max(self.seconds, 1e-12)


def fit(
    svi: SVI,
    rng_key: jax.Array,
    arrays: Sequence[np.ndarray],
    *,
    batch_size: int,
    num_epochs: int,
    progress_bar: bool = True,
    init_state: SVIState | None = None,
    start_epoch: int = 0,
    steps_per_chunk: int | None = None,
    prefetch: int = 2,
    average_from: int | None = None,
    mesh: Mesh | None = None,
    shuffle_block: int = 1,
    **kwargs: Any,
) -> StreamingResult:
    """Run SVI for ``num_epochs`` over host arrays, one mini-batch per step.

    Each epoch draws a fresh permutation of the ``N`` rows (from
    ``rng_key`` and the epoch's number, so a resumed run reproduces the
    shuffles it would have seen) and takes ``N // batch_size`` consecutive
    batches from it; the remaining ``N % batch_size`` rows of that shuffle are
    dropped, so every step sees exactly ``batch_size`` rows, each row is seen
    at most once per epoch, and over epochs every row is seen equally often
    on average. Each step calls the model and the guide as
    ``(*batch, num_data=N, **kwargs)``; put the likelihood in
    :func:`batch_plate` (``num_data``, the batch's length) so that the loss
    is the full-data loss.

    The rows of ``steps_per_chunk`` consecutive steps are gathered on the
    host into one buffer per array (sorted within each batch, which helps
    `np.memmap` files), put on the device in one transfer and run there as
    one compiled `lax.scan`. A background thread does the gathering and the
    transfers, ``prefetch`` chunks ahead (NumPy's gathers release the GIL),
    so the host prepares the next batches while the device computes. The
    arrays are never copied whole to the device.

    **Block shuffle.** A shuffle of single rows costs the host a random
    read per row and per array, and 4 bytes a row for the epoch's
    permutation; on a fast device or a cheap model that, not the device,
    sets the pace. With ``shuffle_block=B > 1`` the epoch permutes blocks of
    ``B`` contiguous rows instead (rows ``[0, B)``, ``[B, 2B)``, ...; the
    last block shorter), lays them end to end and cuts batches from that:
    the host copies whole blocks (sequential reads, also from a file) and
    the permutation has ``N / B`` entries. Each row is still used at most
    once per epoch (all but the ``N % batch_size`` rows at the end of the
    epoch's sequence), every epoch's order differs, and every row is (but
    for the one shorter block) equally likely to land in any batch, so the
    mini-batch loss stays an unbiased estimate of the full-data loss. What
    changes is its variance: a batch is ``batch_size / B`` blocks rather than
    ``batch_size`` independent rows, the same as row shuffling when the rows
    are stored in random order (as the simulated data of chapter 8), but
    noisier when neighbouring rows are alike (data sorted by store or by
    date): shuffle such a file once on disk, or keep ``shuffle_block=1``.

    Args:
        svi: the `numpyro.infer.SVI` to run.
        rng_key: a JAX PRNG key, for `svi.init` and the shuffles (with
            ``init_state`` it still drives the shuffles: pass the same key to
            resume).
        arrays: host arrays (NumPy arrays or `np.memmap`) with the same
            leading length ``N``; row ``i`` of each belongs together.
        batch_size: rows per step, ``1 <= batch_size <= N``; with a ``mesh``
            a multiple of its number of devices.
        num_epochs: passes over the data, ``>= 1``.
        progress_bar: show a tqdm bar with the epoch and the loss per row.
        init_state: an `SVIState` to resume from (``result.state``).
        start_epoch: the epoch number to start from (``result.epochs_run``
            when resuming), which selects the shuffles.
        steps_per_chunk: steps per compiled chunk (and per transfer to the
            device); default about 256k rows per chunk, at most one epoch.
        prefetch: chunks gathered and sent to the device ahead of use, >= 1.
        average_from: if given, the step of this call (0-based) from which
            the unconstrained parameters are averaged; the result's
            ``averaged_params`` holds the constrained average.
        mesh: a one-axis `jax.sharding.Mesh`: each batch is split along its
            rows over the mesh's devices and the parameters are replicated.
            After `jax.distributed.initialize`, a mesh over all processes'
            devices: every process passes the same ``arrays`` (a shared
            `np.memmap`, say) and the same key, and gathers only the rows of
            its own devices.
        shuffle_block: rows the shuffle keeps together, ``1 <= B <= N``;
            ``1`` (the default) shuffles single rows. Resume with the same
            value: it selects the shuffles.
        **kwargs: further keyword arguments of the model and guide (arrays
            among them are moved to the device once).

    Returns:
        A :class:`StreamingResult`.

    Used in chapter 8 (introduced) and chapter 9.

    Example:
        >>> import numpyro.distributions as dist, optax
        >>> from numpyro.infer import SVI, Trace_ELBO
        >>> from numpyro.infer.autoguide import AutoNormal
        >>> def model(y, num_data):
        ...     loc = numpyro.sample("loc", dist.Normal(0, 10))
        ...     with batch_plate("data", num_data, y.shape[0]):
        ...         numpyro.sample("y", dist.Normal(loc, 1), obs=y)
        >>> y = np.random.default_rng(0).normal(3.0, 1.0, size=10_000)
        >>> svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
        >>> result = fit(
        ...     svi,
        ...     jax.random.key(0),
        ...     (y,),
        ...     batch_size=500,
        ...     num_epochs=20,
        ...     progress_bar=False,
        ... )
        >>> result.losses.shape, round(float(result.params["loc_auto_loc"]), 1)
        ((400,), 3.0)
    """
    if not isinstance(svi, SVI):
        raise TypeError(f"svi must be a numpyro.infer.SVI, got {type(svi).__name__}")
    _check_key(rng_key)
    arrays = _check_arrays(arrays)
    num_data = arrays[0].shape[0]
    _check_count("batch_size", batch_size)
    if batch_size > num_data:
        raise ValueError(
            f"batch_size must be at most the number of rows N={num_data}, "
            f"got {batch_size}"
        )
    _check_count("num_epochs", num_epochs)
    _check_count("prefetch", prefetch)
    _check_count("start_epoch", start_epoch, minimum=0)
    if init_state is not None and not isinstance(init_state, SVIState):
        raise TypeError(
            f"init_state must be an SVIState (result.state), got {init_state!r}"
        )
    if "num_data" in kwargs:
        raise ValueError("num_data is passed by fit (the rows of arrays): drop it")
    steps_per_epoch = num_data // batch_size
    total_steps = num_epochs * steps_per_epoch
    if steps_per_chunk is None:
        steps_per_chunk = max(1, min(steps_per_epoch, _CHUNK_ROWS // batch_size))
    _check_count("steps_per_chunk", steps_per_chunk)
    steps_per_chunk = min(steps_per_chunk, total_steps)
    if average_from is not None and (
        not _is_int(average_from) or not 0 <= average_from < total_steps
    ):
        raise ValueError(
            f"average_from must be an int in [0, {total_steps}) (a step of this "
            f"call), got {average_from!r}"
        )
    if not _is_int(shuffle_block) or not 1 <= shuffle_block <= num_data:
        raise ValueError(
            f"shuffle_block must be an int in [1, N={num_data}] (rows the shuffle "
            f"keeps together; 1 shuffles single rows), got {shuffle_block!r}"
        )
    feed = _Feed(arrays, batch_size, mesh)

    key_init, key_shuffle = jax.random.split(rng_key)
    static = {k: v for k, v in kwargs.items() if not _is_array(v)}
    dynamic = {k: jnp.asarray(v) for k, v in kwargs.items() if _is_array(v)}
    if mesh is not None:
        dynamic = _replicate(dynamic, mesh)
    chunk_lengths = [steps_per_chunk] * (total_steps // steps_per_chunk)
    if total_steps % steps_per_chunk:
        chunk_lengths.append(total_steps % steps_per_chunk)

    def windows(per_window: int) -> Iterator[_Window]:
        return _windows(
            key_shuffle,
            num_data,
            batch_size,
            shuffle_block,
            start_epoch,
            per_window=per_window,
        )

    # A background thread gathers the chunks on the host and puts them on
    # the device, ``prefetch`` ahead; it starts now, so that it overlaps
    # the set-up, and then the device's work.
    prefetcher = _Prefetcher(
        (
            feed.put(chunk)
            for chunk in _chunks(
                (_gather(arrays, w, feed.rows) for w in windows(steps_per_chunk)),
                chunk_lengths,
            )
        ),
        depth=prefetch,
    )
    try:
        start = time.perf_counter()
        chunk = prefetcher.get()
        if init_state is None or getattr(svi, "constrain_fn", None) is None:
            # With init_state, only to set up the SVI object's constraints.
            # On the first batch, whole (every process gathers it).
            if mesh is None:
                first_batch = tuple(x[0] for x in chunk)
            else:
                window = next(windows(1))
                first_batch = tuple(
                    jnp.asarray(x[0]) for x in _gather(arrays, window, slice(None))
                )
            fresh = svi.init(
                key_init, *first_batch, num_data=num_data, **static, **dynamic
            )
        state = fresh if init_state is None else init_state
        if mesh is not None:
            state = _replicate(state, mesh)
        params = svi.optim.get_params(state.optim_state)
        averaging = average_from is not None
        carry = (
            state,
            jax.tree.map(jnp.zeros_like, params) if averaging else None,
            jnp.zeros((), jnp.int32),
        )
        runner = _Runner(svi, num_data, static, averaging)
        for length in sorted(set(chunk_lengths)):  # the last may be shorter
            shaped = tuple(
                jax.ShapeDtypeStruct(
                    (length, *x.shape[1:]), x.dtype, sharding=x.sharding
                )
                for x in chunk
            )
            runner.compiled(carry, shaped, dynamic)
        setup_seconds = time.perf_counter() - start

        losses: list[jax.Array] = []
        in_flight: collections.deque = collections.deque()
        step = 0
        bar = tqdm(
            total=total_steps,
            disable=bar_disabled(progress_bar),
            desc="streaming SVI",
            unit="step",
            mininterval=0.5,
        )
        start = time.perf_counter()
        while chunk is not None:
            length = chunk[0].shape[0]
            carry, chunk_losses = runner.compiled(carry, chunk, dynamic)(
                carry,
                chunk,
                jnp.asarray(step, jnp.int32),
                dynamic,
                _start(average_from),
            )
            losses.append(chunk_losses)
            in_flight.append(chunk_losses)
            if len(in_flight) > prefetch:
                # Bound the chunks queued on the device: memory stays flat.
                in_flight.popleft().block_until_ready()
            step += length
            if progress_bar:
                # The loss of the chunk before, so as not to wait for this one.
                last = float(_host(losses[-2 if len(losses) > 1 else -1])[-1])
                bar.set_postfix(
                    epoch=start_epoch + (step - 1) // steps_per_epoch + 1,
                    loss_per_row=f"{last / num_data:.4g}",
                    refresh=False,
                )
                bar.update(length)
            chunk = prefetcher.get()
        losses = np.concatenate([_host(c) for c in losses])
        seconds = time.perf_counter() - start
        bar.close()
    finally:
        prefetcher.close()

    state, average, _ = carry
    return StreamingResult(
        params=_host_tree(svi.get_params(state)),
        state=state,
        losses=losses,
        epoch_losses=losses.reshape(num_epochs, steps_per_epoch).mean(axis=1),
        averaged_params=(_host_tree(svi.constrain_fn(average)) if averaging else None),
        num_data=num_data,
        batch_size=batch_size,
        steps_per_epoch=steps_per_epoch,
        epochs_run=start_epoch + num_epochs,
        seconds=seconds,
        setup_seconds=setup_seconds,
    )


# --------------------------------------------------------------------------
# Private helpers.


def _check_arrays(arrays: Any) -> tuple[np.ndarray, ...]:
    if isinstance(arrays, np.ndarray) or not isinstance(arrays, tuple | list):
        raise TypeError(
            "arrays must be a tuple of host arrays (NumPy arrays or np.memmap), "
            f"got {type(arrays).__name__}"
        )
    if not arrays:
        raise ValueError("arrays must hold at least one array, got an empty tuple")
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(
                f"arrays[{i}] must be a NumPy array or np.memmap (host memory), "
                f"got {type(a).__name__}"
            )
        if a.ndim < 1:
            raise ValueError(f"arrays[{i}] must have a leading row axis, got a scalar")
    lengths = {a.shape[0] for a in arrays}
    if len(lengths) != 1:
        raise ValueError(
            "arrays must have the same leading length (rows), got "
            f"{[a.shape[0] for a in arrays]}"
        )
    if arrays[0].shape[0] < 1:
        raise ValueError("arrays must have at least one row")
    return tuple(arrays)


def _is_array(value: Any) -> bool:
    return isinstance(value, np.ndarray | jax.Array)


def _start(average_from: int | None) -> jax.Array:
    return jnp.asarray(-1 if average_from is None else average_from, jnp.int32)


_CHUNK_ROWS = 262_144  # rows per chunk by default (about)


class _Window(NamedTuple):
    """The rows of some consecutive batches of an epoch: with a row shuffle
    ``rows``, their row indices, shape (batches, batch_size); with a block
    shuffle ``runs``, the first row and the length of each run of contiguous
    rows, whose rows laid end to end make the batches."""

    num_batches: int
    rows: np.ndarray | None
    runs: tuple[np.ndarray, np.ndarray] | None
    block: int = 1


def _windows(
    rng_key: jax.Array,
    num_data: int,
    batch_size: int,
    shuffle_block: int,
    start_epoch: int,
    per_window: int = 1,
) -> Iterator[_Window]:
    """The shuffles of epoch after epoch, ``per_window`` batches at a time
    (the unit of gathering; the last window of an epoch may be shorter).

    Each epoch seeds NumPy's PCG64 from ``fold_in(rng_key, epoch)``, so a
    resumed run reproduces it. With ``shuffle_block == 1`` it draws a
    permutation of the ``N`` rows (int32 indices where they fit: the same
    permutation as ``Generator.permutation(N)``) and cuts it into
    ``N // batch_size`` batches, each sorted; the rest dropped. Otherwise it
    permutes the ``ceil(N / shuffle_block)`` blocks of ``shuffle_block``
    contiguous rows (the last one shorter), lays them end to end and cuts
    that sequence into batches; the last ``N % batch_size`` rows of the
    sequence are dropped. Either way each row is in at most one batch of an
    epoch."""
    steps = num_data // batch_size
    dtype = np.int32 if num_data < 2**31 else np.int64
    epoch = start_epoch
    while True:
        seed = np.asarray(jax.random.key_data(jax.random.fold_in(rng_key, epoch)))
        rng = np.random.default_rng(seed.astype(np.uint64))
        if shuffle_block == 1:
            order = np.arange(num_data, dtype=dtype)
            rng.shuffle(order)  # releases the GIL
            for s in range(0, steps, per_window):
                k = min(per_window, steps - s)
                rows = order[s * batch_size : (s + k) * batch_size]
                yield _Window(k, np.sort(rows.reshape(k, batch_size), axis=1), None)
        else:
            blocks = rng.permutation(-(-num_data // shuffle_block))
            sizes = np.minimum(shuffle_block, num_data - blocks * shuffle_block)
            ends = np.cumsum(sizes)  # of each block in the epoch's sequence
            for s in range(0, steps, per_window):
                k = min(per_window, steps - s)
                lo, hi = s * batch_size, (s + k) * batch_size
                first = np.searchsorted(ends, lo, side="right")
                last = np.searchsorted(ends, hi - 1, side="right") + 1
                seq_start = ends[first:last] - sizes[first:last]
                run_lo = np.maximum(seq_start, lo)
                lengths = np.minimum(ends[first:last], hi) - run_lo
                starts = blocks[first:last] * shuffle_block + run_lo - seq_start
                yield _Window(k, None, (starts, lengths), shuffle_block)
        epoch += 1


def _window_rows(window: _Window, batch_size: int) -> np.ndarray:
    """The row indices of a window's batches, shape (batches, batch_size)."""
    if window.rows is not None:
        return window.rows
    starts, lengths = window.runs
    offsets = np.cumsum(lengths) - lengths
    rows = np.repeat(starts - offsets, lengths) + np.arange(lengths.sum())
    return rows.reshape(window.num_batches, batch_size)


def _batch_indices(
    rng_key: jax.Array,
    num_data: int,
    batch_size: int,
    start_epoch: int,
    shuffle_block: int = 1,
) -> Iterator[np.ndarray]:
    """Row indices of every step, epoch after epoch (see :func:`_windows`)."""
    for window in _windows(rng_key, num_data, batch_size, shuffle_block, start_epoch):
        yield from _window_rows(window, batch_size)


def _aligned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An empty host array aligned to 64 bytes, which JAX on CPU takes
    without a copy."""
    nbytes = int(np.prod(shape)) * dtype.itemsize
    raw = np.empty(nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    return raw[offset : offset + nbytes].view(dtype).reshape(shape)


def _gather(
    arrays: tuple[np.ndarray, ...], window: _Window, columns: slice
) -> tuple[np.ndarray, ...]:
    """The window's batches (only their ``columns``), one host array of
    shape (batches, rows, ...) per input array. A row shuffle gathers rows
    by index; a block shuffle copies whole blocks (and at most a few partial
    ones): sequential reads, also from a file."""
    k = window.num_batches
    if window.rows is not None:
        rows = window.rows[:, columns]
        out = []
        for a in arrays:
            buffer = _aligned((*rows.shape, *a.shape[1:]), a.dtype)
            # mode="clip": the rows are valid, and "raise" would buffer `out`.
            out.append(np.take(a, rows, axis=0, out=buffer, mode="clip"))
        return tuple(out)
    starts, lengths = window.runs
    total = int(lengths.sum())
    block = window.block
    whole = lengths == block  # a run of a block's length is that block
    # Segments of consecutive whole blocks (one `take` each) and single runs.
    cuts = np.flatnonzero(np.diff(whole.astype(np.int8))) + 1
    segments = np.split(np.arange(len(lengths)), cuts)
    out = []
    for a in arrays:
        buffer = _aligned((total, *a.shape[1:]), a.dtype)
        by_block = a[: a.shape[0] // block * block].reshape(-1, block, *a.shape[1:])
        position = 0
        for segment in segments:
            if whole[segment[0]]:
                size = len(segment) * block
                target = buffer[position : position + size]
                np.take(
                    by_block,
                    starts[segment] // block,
                    axis=0,
                    out=target.reshape(len(segment), block, *a.shape[1:]),
                    mode="clip",
                )
                position += size
            else:
                for i in segment:
                    size = int(lengths[i])
                    end = position + size
                    buffer[position:end] = a[starts[i] : starts[i] + size]
                    position = end
        batches = buffer.reshape(k, total // k, *a.shape[1:])
        if columns != slice(None) and columns != slice(0, batches.shape[1]):
            batches = np.ascontiguousarray(batches[:, columns])
        out.append(batches)
    return tuple(out)


def _chunks(
    windows: Iterator[tuple[np.ndarray, ...]], lengths: Sequence[int]
) -> Iterator[tuple[np.ndarray, ...]]:
    """Regroup the windows' batches into chunks of the given numbers of
    steps (no copy where a chunk is one window)."""
    pending: list[tuple[np.ndarray, ...]] = []
    have = 0
    for length in lengths:
        while have < length:
            pending.append(next(windows))
            have += pending[-1][0].shape[0]
        if len(pending) == 1:
            joined = pending[0]
        else:
            joined = tuple(
                np.concatenate(parts) for parts in zip(*pending, strict=True)
            )
        have -= length
        pending = [tuple(x[length:] for x in joined)] if have else []
        yield tuple(x[:length] for x in joined)


class _Prefetcher:
    """Runs an iterator in a background thread, ``depth`` items ahead.
    NumPy's gathers and the copies to the device release the GIL, so the
    host's work overlaps the device's. ``get`` returns ``None`` at the end
    and re-raises the thread's exceptions; ``close`` stops the thread."""

    _END = object()

    def __init__(self, items: Iterator[Any], depth: int) -> None:
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(
            target=self._run, args=(items,), daemon=True, name="streaming-prefetch"
        )
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, items: Iterator[Any]) -> None:
        try:
            for item in items:
                if not self._put(item):
                    return
            self._put(self._END)
        except BaseException as error:  # handed to the main thread
            self._put(error)

    def get(self) -> Any:
        item = self.queue.get()
        if item is self._END:
            return None
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self.stop.set()
        self.thread.join()


class _Feed:
    """Gathers the rows of a chunk of batches on the host and puts them on
    the device(s): one array of shape (steps, batch_size, ...) per input
    array, split along the batch axis over a mesh if one is given (each
    process gathering only its own devices' rows)."""

    def __init__(
        self, arrays: tuple[np.ndarray, ...], batch_size: int, mesh: Mesh | None
    ) -> None:
        self.arrays, self.batch_size, self.mesh = arrays, batch_size, mesh
        self.rows = slice(0, batch_size)
        if mesh is None:
            return
        if not isinstance(mesh, Mesh) or len(mesh.axis_names) != 1:
            raise TypeError(f"mesh must be a one-axis jax.sharding.Mesh, got {mesh!r}")
        if batch_size % mesh.size:
            raise ValueError(
                f"batch_size must be a multiple of the mesh's {mesh.size} devices, "
                f"got {batch_size}"
            )
        axis = mesh.axis_names[0]
        self.shardings = [
            NamedSharding(mesh, PartitionSpec(None, axis, *[None] * (a.ndim - 1)))
            for a in arrays
        ]
        # The rows of each batch that this process's devices hold.
        index_map = self.shardings[0].addressable_devices_indices_map(
            (1, batch_size, *arrays[0].shape[1:])
        )
        starts = [idx[1].start or 0 for idx in index_map.values()]
        stops = [
            batch_size if idx[1].stop is None else idx[1].stop
            for idx in index_map.values()
        ]
        self.rows = slice(min(starts), max(stops))
        if max(stops) - min(starts) != sum(
            b - a for a, b in zip(starts, stops, strict=True)
        ):
            raise ValueError(
                "this process's devices must hold contiguous rows of a batch"
            )

    def put(self, local: tuple[np.ndarray, ...]) -> tuple[jax.Array, ...]:
        """Put a chunk's gathered rows (this process's ``rows`` of each
        batch) on the device(s)."""
        if self.mesh is None:
            return tuple(jax.device_put(x) for x in local)
        if jax.process_count() == 1:
            return tuple(
                jax.device_put(x, s) for x, s in zip(local, self.shardings, strict=True)
            )
        return tuple(
            jax.make_array_from_process_local_data(
                s, x, (x.shape[0], self.batch_size, *x.shape[2:])
            )
            for x, s in zip(local, self.shardings, strict=True)
        )


_CACHE: weakref.WeakKeyDictionary[SVI, dict[Any, Any]] = weakref.WeakKeyDictionary()


class _Runner:
    """Compiled chunks of SVI steps for one SVI object: a ``lax.scan`` over
    the batches of a chunk, carrying the state and, with averaging, the
    running mean of the unconstrained parameters from step ``average_from``
    on. Compiled ahead of time once per chunk length, shapes and shardings,
    and kept with the SVI object, so later fits reuse them."""

    def __init__(
        self, svi: SVI, num_data: int, static: dict[str, Any], averaging: bool
    ) -> None:
        try:
            static_key = tuple(sorted(static.items()))
            hash(static_key)
        except TypeError:  # unhashable static arguments: compile afresh
            static_key = object()
        self.key = (num_data, static_key, averaging)
        self.cache = _CACHE.setdefault(svi, {})

        def run_chunk(carry, chunk, first_step, dynamic, average_from):
            def body(carry, xs):
                state, average, count = carry
                step, batch = xs
                state, loss = svi.update(
                    state, *batch, num_data=num_data, **static, **dynamic
                )
                if averaging:
                    params = svi.optim.get_params(state.optim_state)
                    use = step >= average_from
                    count = count + use.astype(count.dtype)
                    weight = jnp.where(use, 1.0 / jnp.maximum(count, 1), 0.0)
                    average = jax.tree.map(
                        lambda m, p: m + weight.astype(m.dtype) * (p - m),
                        average,
                        params,
                    )
                return (state, average, count), loss

            steps = first_step + jnp.arange(chunk[0].shape[0], dtype=jnp.int32)
            return lax.scan(body, carry, (steps, chunk))

        self.jitted = jax.jit(run_chunk)

    def compiled(self, carry: Any, chunk: tuple, dynamic: dict[str, Any]) -> Any:
        leaves = jax.tree.leaves((carry, chunk, dynamic))
        signature = (
            self.key,
            jax.tree.structure((carry, chunk, dynamic)),
            tuple(
                (x.shape, str(x.dtype), getattr(x, "sharding", None)) for x in leaves
            ),
        )
        if signature not in self.cache:
            scalar = jnp.zeros((), jnp.int32)
            self.cache[signature] = self.jitted.lower(
                carry, chunk, scalar, dynamic, scalar
            ).compile()
        return self.cache[signature]


def _replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh``, also across
    processes (where every process holds the same values)."""
    sharding = NamedSharding(mesh, PartitionSpec())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(x: Any) -> jax.Array:
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(x)
            return jax.random.wrap_key_data(put(jax.random.key_data(x)), impl=impl)
        x = _host(x)
        return jax.make_array_from_process_local_data(sharding, x, x.shape)

    return jax.tree.map(put, tree)


def _host(x: jax.Array) -> np.ndarray:
    """A (replicated) device array as a NumPy array, also when it spans
    several processes."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(x)


def _host_tree(tree: Any) -> Any:
    return jax.tree.map(_host, tree)
