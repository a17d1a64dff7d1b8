"""Tests of companion.streaming: the batch plate's scaling, the streamed fit
against an exact posterior, the shuffles, resuming, averaging, memmaps, bad
input, and several devices and processes (in subprocesses)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from companion import hierarchical, streaming

WORKER = Path(__file__).with_name("streaming_worker.py")


def normal_model(y, num_data):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    with streaming.batch_plate("data", num_data, y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def normal_guide(y, num_data):
    loc = numpyro.param("q_loc", 0.0)
    scale = numpyro.param("q_scale", 1.0, constraint=dist.constraints.positive)
    numpyro.sample("loc", dist.Normal(loc, scale))


# --------------------------------------------------------------------------
# batch_plate


def test_batch_plate_scales_the_batch_and_draws_no_index():
    y = jnp.arange(10.0)
    # No seed handler: a plate that drew indices would need a key and fail.
    with numpyro.handlers.trace() as tr, numpyro.handlers.substitute(data={"loc": 1.0}):
        normal_model(y, num_data=250)
    assert tr["y"]["scale"] == pytest.approx(25.0)
    assert tr["data"]["value"].tolist() == list(range(10))
    np.testing.assert_array_equal(tr["y"]["value"], y)  # the batch, unshuffled
    with numpyro.handlers.trace() as tr, numpyro.handlers.substitute(data={"loc": 1.0}):
        normal_model(y, num_data=10)
    assert tr["y"]["scale"] is None  # full batch: no scaling at all


def test_minibatch_losses_of_a_partition_average_to_the_full_loss():
    """With the same key (same guide draw), the n/b-scaled losses of the
    batches of a partition of the data average to the full-data loss exactly;
    so over random batches the mini-batch loss is unbiased."""
    y = np.random.default_rng(0).normal(2.0, 1.0, size=600).astype(np.float32)
    params = {"q_loc": 1.5, "q_scale": 0.3}
    elbo, key = Trace_ELBO(), jax.random.key(3)

    def loss(batch):
        return elbo.loss(key, params, normal_model, normal_guide, batch, num_data=600)

    full = loss(jnp.asarray(y))
    batches = [jnp.asarray(b) for b in np.split(y, 6)]
    minibatch = np.mean([loss(b) for b in batches])
    np.testing.assert_allclose(minibatch, full, rtol=1e-5)
    # And the scaling matters: unscaled batches would be off by far.
    assert abs(float(loss(batches[0])) - float(full)) > 1.0


def test_batch_plate_rejects_bad_input():
    with pytest.raises(ValueError, match="batch_size must be at most num_data"):
        with streaming.batch_plate("data", 10, 11):
            pass
    with pytest.raises(ValueError, match="num_data"):
        with streaming.batch_plate("data", 0, 1):
            pass
    with pytest.raises(ValueError, match="batch_size"):
        with streaming.batch_plate("data", 10, 0):
            pass
    with pytest.raises(ValueError, match="name"):
        with streaming.batch_plate("", 10, 1):
            pass


# --------------------------------------------------------------------------
# The shuffles


def test_each_row_is_seen_at_most_once_per_epoch_and_shuffles_differ():
    key, n, b = jax.random.key(5), 1_003, 100
    batches = streaming._batch_indices(key, n, b, start_epoch=0)
    epochs = [np.stack([next(batches) for _ in range(n // b)]) for _ in range(3)]
    for epoch in epochs:
        rows = epoch.ravel()
        assert len(np.unique(rows)) == len(rows) == (n // b) * b  # 3 rows dropped
        assert rows.min() >= 0 and rows.max() < n
        assert (np.diff(epoch, axis=1) > 0).all()  # sorted within each batch
    assert not np.array_equal(epochs[0], epochs[1])
    # Epoch 2 depends only on the key and its number: resuming reproduces it.
    resumed = streaming._batch_indices(key, n, b, start_epoch=2)
    np.testing.assert_array_equal(
        np.stack([next(resumed) for _ in range(n // b)]), epochs[2]
    )


def test_fit_takes_its_batches_from_the_shuffles():
    """A model whose loss is minus the scaled sum of the batch's values
    reveals which rows each step used."""
    n, b = 1_000, 40
    values = np.random.default_rng(1).normal(size=n).astype(np.float32)

    def model(v, num_data):
        with streaming.batch_plate("data", num_data, v.shape[0]):
            numpyro.factor("f", v)

    def guide(v, num_data):
        numpyro.param("unused", 0.0)

    key = jax.random.key(2)
    result = streaming.fit(
        SVI(model, guide, optax.sgd(0.1), Trace_ELBO()),
        key,
        (values,),
        batch_size=b,
        num_epochs=2,
        progress_bar=False,
        steps_per_chunk=7,
    )
    _, key_shuffle = jax.random.split(key)
    batches = streaming._batch_indices(key_shuffle, n, b, start_epoch=0)
    expected = [-(n / b) * values[next(batches)].sum() for _ in range(2 * (n // b))]
    np.testing.assert_allclose(result.losses, expected, rtol=1e-4, atol=1e-3)
    assert result.steps_per_epoch == n // b and result.epochs_run == 2


def _epochs(key, n, b, block, num_epochs, start_epoch=0):
    batches = streaming._batch_indices(key, n, b, start_epoch, shuffle_block=block)
    return [np.stack([next(batches) for _ in range(n // b)]) for _ in range(num_epochs)]


@pytest.mark.parametrize("n, b, block", [(1_003, 100, 7), (10_007, 300, 64)])
def test_block_shuffle_keeps_blocks_whole_and_visits_rows_once(n, b, block):
    """Each epoch: every row at most once, ``n // b * b`` rows, laid out as
    whole blocks of contiguous rows (only the block cut by the end of the
    epoch, and the one shorter last block, are partial); epochs differ, and
    a resumed run reproduces them."""
    key = jax.random.key(5)
    epochs = _epochs(key, n, b, block, 3)
    num_blocks = -(-n // block)
    for epoch in epochs:
        rows = epoch.ravel()
        assert len(np.unique(rows)) == len(rows) == (n // b) * b
        assert rows.min() >= 0 and rows.max() < n
        # Within a block, row r + 1 comes right after row r.
        position = np.full(n, -1)
        position[rows] = np.arange(len(rows))
        same_block = np.arange(n - 1) // block == np.arange(1, n) // block
        both = (position[:-1] >= 0) & (position[1:] >= 0) & same_block
        assert (position[1:][both] == position[:-1][both] + 1).all()
        # Blocks are used whole, but for the one the end of the epoch cuts
        # (its first rows kept); the rest of the dropped rows are whole blocks.
        used = np.bincount(rows // block, minlength=num_blocks)
        sizes = np.minimum(block, n - np.arange(num_blocks) * block)
        partial = np.flatnonzero((used > 0) & (used < sizes))
        assert len(partial) <= 1
        for j in partial:
            assert position[j * block] >= 0  # a prefix of the block
    assert not np.array_equal(epochs[0], epochs[1])
    # The dropped rows differ from epoch to epoch too.
    dropped = [set(range(n)) - set(e.ravel()) for e in epochs]
    assert dropped[0] != dropped[1]
    np.testing.assert_array_equal(
        _epochs(key, n, b, block, 1, start_epoch=2)[0], epochs[2]
    )


def test_block_shuffle_mixes_blocks_uniformly():
    """Over many epochs every block is about equally often in the first
    batch (a block order that were not uniform, say always the identity or
    a fixed rotation, would fail)."""
    n, b, block, num_epochs = 640, 64, 16, 400
    key = jax.random.key(7)
    batches = streaming._batch_indices(key, n, b, 0, shuffle_block=block)
    counts = np.zeros(n // block)
    for _ in range(num_epochs):
        epoch = [next(batches) for _ in range(n // b)]
        counts[np.unique(epoch[0] // block)] += 1
    expected = num_epochs * b / n  # each block is in the first batch w.p. b/n
    # Binomial(400, 0.1): sd 6; all 40 blocks within 4 sd.
    assert np.abs(counts - expected).max() < 4 * np.sqrt(expected * (1 - b / n))


def test_one_block_of_one_row_is_the_row_shuffle():
    """shuffle_block=1 is the row shuffle: the permutation of
    ``Generator.permutation(N)`` from the epoch's seed, cut and sorted."""
    key, n, b = jax.random.key(3), 1_000, 100
    seed = np.asarray(jax.random.key_data(jax.random.fold_in(key, 0)))
    order = np.random.default_rng(seed.astype(np.uint64)).permutation(n)
    expected = np.sort(order.reshape(n // b, b), axis=1)
    np.testing.assert_array_equal(_epochs(key, n, b, 1, 1)[0], expected)


@pytest.mark.parametrize("block", [1, 64])
def test_gather_returns_the_rows_of_each_batch_and_each_process_its_columns(block):
    n, b = 5_003, 500
    x = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
    group = np.arange(n, dtype=np.int32)
    window = next(streaming._windows(jax.random.key(0), n, b, block, 0))
    rows = streaming._window_rows(window, b)
    gx, gg = streaming._gather((x, group), window, slice(None))
    np.testing.assert_array_equal(gg, rows)
    np.testing.assert_array_equal(gx, x[rows])
    for columns in [slice(0, 250), slice(250, 500), slice(100, 200)]:
        part = streaming._gather((x, group), window, columns)
        np.testing.assert_array_equal(part[0], x[rows[:, columns]])
        np.testing.assert_array_equal(part[1], rows[:, columns])
    assert gx.ctypes.data % 64 == 0  # aligned: JAX on CPU takes it as it is


def test_block_shuffle_holds_no_permutation_of_the_rows():
    """The row shuffle holds an int32 permutation of the rows (4 bytes a
    row); the block shuffle only one entry per block."""
    import tracemalloc

    n, b = 2_000_000, 10_000
    key = jax.random.key(0)
    peaks = {}
    for block in (1, 64):
        windows = streaming._windows(key, n, b, block, 0, per_window=6)
        tracemalloc.start()
        for _ in range(n // b // 6):
            next(windows)
        peaks[block] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[1] >= 4 * n
    assert peaks[64] < 64 * n // 64  # 8 bytes a block, a few arrays of them


def test_fit_with_a_block_shuffle_takes_its_batches_from_it():
    """As for the row shuffle, with N, the batch and the chunks not
    multiples of the block or of each other (a chunk spans windows)."""
    n, b, block = 1_013, 40, 7
    values = np.random.default_rng(1).normal(size=n).astype(np.float32)

    def model(v, num_data):
        with streaming.batch_plate("data", num_data, v.shape[0]):
            numpyro.factor("f", v)

    def guide(v, num_data):
        numpyro.param("unused", 0.0)

    key = jax.random.key(2)
    svi = SVI(model, guide, optax.sgd(0.1), Trace_ELBO())
    result = streaming.fit(
        svi,
        key,
        (values,),
        batch_size=b,
        num_epochs=3,
        progress_bar=False,
        steps_per_chunk=17,
        shuffle_block=block,
    )
    _, key_shuffle = jax.random.split(key)
    batches = streaming._batch_indices(key_shuffle, n, b, 0, shuffle_block=block)
    expected = [-(n / b) * values[next(batches)].sum() for _ in range(3 * (n // b))]
    np.testing.assert_allclose(result.losses, expected, rtol=1e-4, atol=1e-3)
    # The row shuffle gives other batches, hence other losses.
    rows = streaming.fit(
        svi, key, (values,), batch_size=b, num_epochs=3, progress_bar=False
    )
    assert not np.allclose(rows.losses, result.losses)


def test_prefetcher_hands_on_errors_and_stops():
    def items():
        yield 1
        raise RuntimeError("gather failed")

    prefetcher = streaming._Prefetcher(items(), depth=1)
    assert prefetcher.get() == 1
    with pytest.raises(RuntimeError, match="gather failed"):
        prefetcher.get()
    prefetcher.close()
    endless = streaming._Prefetcher(iter(int, 1), depth=2)  # never ends
    assert endless.get() == 0
    endless.close()  # stops a thread blocked on a full queue
    assert not endless.thread.is_alive()


# --------------------------------------------------------------------------
# The fit


def test_streamed_fit_reaches_the_exact_mean_field_optimum():
    """Ten mini-batches an epoch, 100 epochs: the averaged iterates land on
    the best mean-field Gaussian, known exactly for this linear-Gaussian
    model (means within 0.2 posterior sd, scales within 10%)."""
    num_groups, n, b, epochs = 8, 4_000, 400, 100
    data = hierarchical.simulate(jax.random.key(0), n, num_groups)
    posterior = hierarchical.exact_posterior(
        hierarchical.sufficient_statistics(data.x, data.group, data.y, num_groups)
    )
    target = hierarchical.mean_field_optimum(posterior)
    steps = epochs * n // b
    svi = SVI(
        hierarchical.model,
        AutoNormal(hierarchical.model, init_scale=0.05),
        optax.adam(optax.cosine_decay_schedule(0.02, steps), b2=0.9),
        Trace_ELBO(num_particles=8),
    )
    result = streaming.fit(
        svi,
        jax.random.key(1),
        (data.x, data.group, data.y),
        batch_size=b,
        num_epochs=epochs,
        num_groups=num_groups,
        average_from=steps // 2,
        progress_bar=False,
    )
    assert result.losses.shape == (steps,) and np.isfinite(result.losses).all()
    fitted = result.averaged_params
    for site, sd in [("coef", posterior.coef_sd), ("group_effect", posterior.group_sd)]:
        error = (
            np.asarray(fitted[f"{site}_auto_loc"]) - target[f"{site}_auto_loc"]
        ) / sd
        assert np.abs(error).max() < 0.2, (site, error)
        ratio = np.asarray(fitted[f"{site}_auto_scale"]) / target[f"{site}_auto_scale"]
        np.testing.assert_allclose(ratio, 1.0, atol=0.1)
    # The answer is far from the guide's start: the fit had to move.
    assert np.abs(target["coef_auto_loc"]).max() > 10 * posterior.coef_sd.max()
    # An unscaled likelihood (batch_size as num_data) would be ~sqrt(10) wider.
    assert np.all(np.asarray(fitted["coef_auto_scale"]) < 2 * target["coef_auto_scale"])


def test_resuming_reproduces_an_uninterrupted_run():
    y = np.random.default_rng(0).normal(1.0, 1.0, size=2_000).astype(np.float32)
    svi = SVI(normal_model, normal_guide, optax.adam(0.05), Trace_ELBO())
    kwargs = dict(batch_size=128, progress_bar=False, steps_per_chunk=5)
    key = jax.random.key(4)
    whole = streaming.fit(svi, key, (y,), num_epochs=4, **kwargs)
    half = streaming.fit(svi, key, (y,), num_epochs=2, **kwargs)
    rest = streaming.fit(
        svi,
        key,
        (y,),
        num_epochs=2,
        init_state=half.state,
        start_epoch=half.epochs_run,
        **kwargs,
    )
    np.testing.assert_array_equal(
        np.concatenate([half.losses, rest.losses]), whole.losses
    )
    for name in whole.params:
        np.testing.assert_array_equal(rest.params[name], whole.params[name])
    assert rest.epochs_run == 4
    np.testing.assert_allclose(
        whole.epoch_losses, whole.losses.reshape(4, -1).mean(axis=1), rtol=1e-6
    )


def test_fit_matches_plain_svi_steps_and_averages_their_iterates():
    """The same run written as plain `svi.update` calls on the same batches:
    same losses, same final parameters, and ``averaged_params`` is the
    constrained mean of the unconstrained iterates from ``average_from``."""
    n, b, start = 640, 64, 13  # ten steps an epoch, twenty in all
    y = np.random.default_rng(0).normal(1.0, 1.0, size=n).astype(np.float32)
    svi = SVI(normal_model, normal_guide, optax.adam(0.05), Trace_ELBO())
    key = jax.random.key(4)
    result = streaming.fit(
        svi,
        key,
        (y,),
        batch_size=b,
        num_epochs=2,
        average_from=start,
        progress_bar=False,
        steps_per_chunk=4,
    )
    key_init, key_shuffle = jax.random.split(key)
    batches = streaming._batch_indices(key_shuffle, n, b, start_epoch=0)
    rows = [next(batches) for _ in range(20)]
    state = svi.init(key_init, jnp.asarray(y[rows[0]]), num_data=n)
    losses, iterates = [], []
    for r in rows:
        state, loss = svi.update(state, jnp.asarray(y[r]), num_data=n)
        losses.append(float(loss))
        iterates.append(svi.optim.get_params(state.optim_state))
    np.testing.assert_allclose(result.losses, losses, rtol=1e-5)
    final = svi.get_params(state)
    for name in final:
        np.testing.assert_allclose(result.params[name], final[name], rtol=1e-5)
    mean = jax.tree.map(lambda *xs: np.mean(xs, axis=0), *iterates[start:])
    expected = svi.constrain_fn(mean)
    for name in expected:
        np.testing.assert_allclose(
            result.averaged_params[name], expected[name], rtol=1e-5
        )
    # Averaging changed something: the last iterate is not the average.
    assert abs(float(result.averaged_params["q_loc"]) - float(final["q_loc"])) > 1e-6


def test_memmap_input_gives_the_same_fit(tmp_path):
    y = np.random.default_rng(0).normal(1.0, 1.0, size=1_000).astype(np.float32)
    path = tmp_path / "y.npy"
    np.save(path, y)
    mapped = np.load(path, mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    svi = SVI(normal_model, normal_guide, optax.adam(0.05), Trace_ELBO())
    kwargs = dict(batch_size=100, num_epochs=2, progress_bar=False)
    a = streaming.fit(svi, jax.random.key(0), (y,), **kwargs)
    b = streaming.fit(svi, jax.random.key(0), (mapped,), **kwargs)
    np.testing.assert_array_equal(a.losses, b.losses)
    kwargs["shuffle_block"] = 64
    a = streaming.fit(svi, jax.random.key(0), (y,), **kwargs)
    b = streaming.fit(svi, jax.random.key(0), (mapped,), **kwargs)
    np.testing.assert_array_equal(a.losses, b.losses)
    assert a.rows_per_second > 0 and a.setup_seconds > 0


def test_fit_rejects_bad_input():
    y = np.zeros(100, np.float32)
    svi = SVI(normal_model, normal_guide, optax.adam(0.05), Trace_ELBO())
    key = jax.random.key(0)

    def call(arrays=(y,), **overrides):
        kwargs = dict(batch_size=10, num_epochs=1, progress_bar=False) | overrides
        return streaming.fit(svi, key, arrays, **kwargs)

    with pytest.raises(ValueError, match="batch_size must be at most"):
        call(batch_size=101)
    with pytest.raises(ValueError, match="batch_size"):
        call(batch_size=0)
    with pytest.raises(ValueError, match="num_epochs"):
        call(num_epochs=0)
    with pytest.raises(ValueError, match="same leading length"):
        call(arrays=(y, np.zeros(99)))
    with pytest.raises(TypeError, match="arrays must be a tuple"):
        call(arrays=y)
    with pytest.raises(TypeError, match=r"arrays\[0\] must be a NumPy array"):
        call(arrays=(jnp.zeros(100),))
    with pytest.raises(ValueError, match="average_from"):
        call(average_from=10)
    with pytest.raises(ValueError, match="num_data is passed by fit"):
        call(num_data=5)
    for bad in (0, 101, 2.0):
        with pytest.raises(ValueError, match="shuffle_block"):
            call(shuffle_block=bad)
    with pytest.raises(TypeError, match="rng_key"):
        streaming.fit(svi, 0, (y,), batch_size=10, num_epochs=1)
    with pytest.raises(TypeError, match="svi"):
        streaming.fit(None, key, (y,), batch_size=10, num_epochs=1)


# --------------------------------------------------------------------------
# Several devices and several processes


def _run_worker(out: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(out), *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen, out: Path) -> dict:
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    assert proc.returncode == 0, stderr[-3_000:]
    return json.loads(out.read_text())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "out.json"
    return _finish(_run_worker(out), out)


def _assert_same_fit(a: dict, b: dict) -> None:
    # Same keys, same batches; only the order of floating-point sums differs.
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5)
    for name, value in a["params"].items():
        np.testing.assert_allclose(b["params"][name], value, rtol=1e-4, atol=1e-6)


def test_sharded_fit_on_four_devices_matches_one_device(one_device, tmp_path):
    out = tmp_path / "four.json"
    four = _finish(_run_worker(out, "--devices", "4"), out)
    assert one_device["device_count"] == 1 and four["device_count"] == 4
    _assert_same_fit(one_device, four)


def test_two_processes_match_one_process(one_device, tmp_path):
    port = str(_free_port())
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [
        _run_worker(
            out,
            "--devices",
            "2",
            "--process-id",
            str(i),
            "--num-processes",
            "2",
            "--port",
            port,
        )
        for i, out in enumerate(outs)
    ]
    results = [_finish(p, o) for p, o in zip(procs, outs, strict=True)]
    for r in results:
        assert r["process_count"] == 2 and r["device_count"] == 4
        _assert_same_fit(one_device, r)
    # Each process gathered only its half of every batch of 200 rows.
    assert [r["rows"] for r in results] == [[0, 100], [100, 200]]


def test_a_shorter_last_chunk_is_compiled_during_set_up():
    """50 steps in chunks of 7 end with a chunk of 1: both programs are
    compiled before the run starts, so ``seconds`` times only the run."""
    y = np.random.default_rng(0).normal(size=1_000).astype(np.float32)
    svi = SVI(normal_model, normal_guide, optax.adam(0.05), Trace_ELBO())
    result = streaming.fit(
        svi,
        jax.random.key(0),
        (y,),
        batch_size=20,
        num_epochs=1,
        progress_bar=False,
        steps_per_chunk=7,
    )
    lengths = sorted(sig[2][-1][0][0] for sig in streaming._CACHE[svi])
    assert result.losses.shape == (50,)
    assert lengths == [1, 7]
