"""Tests of companion.training.fit against SVI.run and the rules it documents."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from companion import training
from companion.training import EarlyStopping, NonFiniteLossWarning, fit


def model(y):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = numpyro.sample("scale", dist.HalfNormal(5.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, scale), obs=y)


@pytest.fixture
def y_train():
    return 1.5 + 0.7 * jax.random.normal(jax.random.key(10), (40,))


def make_svi(optimizer=None):
    return SVI(model, AutoNormal(model), optimizer or optax.adam(0.05), Trace_ELBO())


def assert_trees_close(a, b, rtol=1e-6, atol=1e-6):
    jax.tree.map(
        lambda u, v: np.testing.assert_allclose(u, v, rtol=rtol, atol=atol), a, b
    )


@pytest.mark.parametrize(("num_steps", "chunk_size"), [(200, None), (103, 25)])
def test_matches_svi_run(y_train, num_steps, chunk_size):
    svi = make_svi()
    expected = svi.run(jax.random.key(0), num_steps, y_train, progress_bar=False)
    result = fit(
        svi,
        jax.random.key(0),
        num_steps,
        y_train,
        progress_bar=False,
        chunk_size=chunk_size,
    )
    assert result.num_steps_run == num_steps
    assert not result.stopped_early and result.stop_reason == "completed"
    assert result.losses.shape == (num_steps,)
    np.testing.assert_allclose(result.losses, expected.losses, rtol=1e-6)
    assert_trees_close(result.params, expected.params)


def test_progress_bar_does_not_change_the_result(y_train):
    svi = make_svi()
    quiet = fit(svi, jax.random.key(1), 60, y_train, progress_bar=False)
    shown = fit(svi, jax.random.key(1), 60, y_train, progress_bar=True)
    np.testing.assert_array_equal(quiet.losses, shown.losses)


def test_compiled_once_and_reused_across_calls(y_train):
    svi = make_svi()
    fit(svi, jax.random.key(0), 100, y_train, progress_bar=False, chunk_size=20)
    cache = dict(training._CACHE[svi])
    fit(svi, jax.random.key(1), 60, y_train + 1.0, progress_bar=False, chunk_size=20)
    assert dict(training._CACHE[svi]).keys() == cache.keys()
    (runner,) = cache.values()
    assert runner._cache_size() == 1  # traced and compiled once for these shapes


def test_resume_continues_where_it_stopped(y_train):
    svi = make_svi()
    whole = fit(svi, jax.random.key(2), 120, y_train, progress_bar=False, chunk_size=30)
    first = fit(svi, jax.random.key(2), 60, y_train, progress_bar=False, chunk_size=30)
    second = fit(
        svi,
        None,
        60,
        y_train,
        progress_bar=False,
        chunk_size=30,
        init_state=first.state,
    )
    np.testing.assert_allclose(
        np.concatenate([first.losses, second.losses]), whole.losses, rtol=1e-6
    )
    assert_trees_close(second.params, whole.params)


def test_validation_losses_are_svi_evaluate_after_each_chunk(y_train):
    svi = make_svi()
    y_val = y_train[:10] + 0.3
    result = fit(
        svi,
        jax.random.key(3),
        90,
        y_train,
        val_args=(y_val,),
        progress_bar=False,
        chunk_size=30,
    )
    np.testing.assert_array_equal(result.val_steps, [30, 60, 90])
    assert result.train_size == 40 and result.val_size == 10
    state = svi.init(jax.random.key(3), y_train)
    for k, step in enumerate(result.val_steps):
        state = svi.run(None, 30, y_train, progress_bar=False, init_state=state).state
        expected = svi.evaluate(state, y_val)
        np.testing.assert_allclose(result.val_losses[k], expected, rtol=1e-6)
        assert step == 30 * (k + 1)


def test_early_stopping_restores_the_best_parameters(y_train):
    # Validation data far from the training data: the validation loss gets
    # worse as the fit moves towards the training data, so the best
    # parameters are those of the first evaluation.
    svi = make_svi()
    y_val = jnp.full(10, -30.0)
    result = fit(
        svi,
        jax.random.key(4),
        1_000,
        y_train,
        val_args=(y_val,),
        patience=3,
        progress_bar=False,
        chunk_size=20,
    )
    assert result.stopped_early and result.stop_reason == "early_stopping"
    assert result.num_steps_run == 20 * 4  # best at the 1st, then 3 without improvement
    assert result.best_step == 20
    assert np.argmin(result.val_losses) == 0
    expected = svi.run(jax.random.key(4), 20, y_train, progress_bar=False)
    assert_trees_close(result.params, expected.params)
    last = svi.get_params(result.state)
    assert not np.allclose(last["loc_auto_loc"], result.params["loc_auto_loc"])


def test_talk_rule_stops_when_validation_exceeds_training(y_train):
    svi = make_svi()
    result = fit(
        svi,
        jax.random.key(5),
        1_000,
        y_train,
        val_args=(y_train[:20] + 5.0,),
        patience=2,
        stop_rule="val_above_train",
        progress_bar=False,
        chunk_size=50,
    )
    assert result.stop_reason == "early_stopping"
    assert result.num_steps_run == 100


def test_early_stopping_rule_on_constructed_sequences():
    rule = EarlyStopping(patience=3)
    vals = [5.0, 4.0, 4.5, 3.9, 4.0, 4.1, 4.2, 1.0]
    stops = [rule.update(train=0.0, val=v) for v in vals]
    assert stops == [False, False, False, False, False, False, True, False]
    assert rule.best == 1.0

    rule = EarlyStopping(patience=2, min_delta=0.5)
    stops = [rule.update(train=0.0, val=v) for v in [5.0, 4.8, 4.6, 4.0]]
    assert stops == [False, False, True, False]  # 4.8 and 4.6 improve by < 0.5

    rule = EarlyStopping(patience=3, rule="val_above_train")
    pairs = [(1.0, 2.0), (1.0, 2.0), (1.0, 0.5), (1.0, 2.0), (1.0, 2.0), (1.0, 2.0)]
    stops = [rule.update(train=t, val=v) for t, v in pairs]
    assert stops == [False, False, False, False, False, True]

    never = EarlyStopping(patience=None)
    assert not any(never.update(0.0, v) for v in np.linspace(1, 10, 50))


def _nan_at(update_index):
    """An optax transformation that poisons the update with NaN once."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, count, params=None):
        poison = jnp.where(count == update_index, jnp.nan, 0.0)
        return jax.tree.map(lambda u: u + poison, updates), count + 1

    return optax.GradientTransformation(init, update)


@pytest.mark.parametrize("chunk_size", [25, 38])
def test_non_finite_loss_stops_and_keeps_the_last_finite_parameters(
    y_train, chunk_size
):
    # Update 37 (0-based, so in step 38) writes NaN parameters: the loss of
    # step 39 is the first NaN, and the last finite parameters are those after
    # step 37. With chunks of 25 and 35, the bad step sits in the second chunk
    # or straddles a chunk boundary (the NaN parameters come from chunk 1).
    svi = make_svi(optax.chain(optax.adam(0.05), _nan_at(37)))
    with pytest.warns(NonFiniteLossWarning, match="at step 39"):
        result = fit(
            svi,
            jax.random.key(6),
            100,
            y_train,
            progress_bar=False,
            chunk_size=chunk_size,
        )
    assert result.stop_reason == "non_finite_loss" and result.stopped_early
    assert result.num_steps_run == 37
    assert np.all(np.isfinite(result.losses)) and result.losses.shape == (37,)
    expected = svi.run(jax.random.key(6), 37, y_train, progress_bar=False)
    np.testing.assert_allclose(result.losses, expected.losses, rtol=1e-6)
    assert_trees_close(result.params, expected.params)
    assert all(np.all(np.isfinite(v)) for v in jax.tree.leaves(result.params))


def test_stable_update_skips_non_finite_steps(y_train):
    svi = make_svi(optax.chain(optax.adam(0.05), _nan_at(37)))
    result = fit(
        svi, jax.random.key(6), 100, y_train, progress_bar=False, stable_update=True
    )
    # NumPyro's stable_update skips steps whose loss is not finite; fit leaves
    # that policy to it and does not stop.
    assert result.stop_reason == "completed" and result.num_steps_run == 100
    assert result.losses.shape == (100,)


def test_reduce_on_plateau_gets_the_loss_value(y_train):
    optimizer = optax.chain(
        optax.adam(0.05),
        optax.contrib.reduce_on_plateau(
            factor=0.5, patience=2, accumulation_size=10, atol=1e-3
        ),
    )
    svi = make_svi(optimizer)
    result = fit(svi, jax.random.key(7), 2_000, y_train, progress_bar=False)
    scale = optax.tree_utils.tree_get(result.state.optim_state, "scale")
    assert float(scale) < 1.0  # it has seen the losses and decayed
    expected = svi.run(jax.random.key(7), 2_000, y_train, progress_bar=False)
    np.testing.assert_allclose(result.losses, expected.losses, rtol=1e-6)


def test_keyword_data(y_train):
    def kw_model(y=None):
        model(y)

    svi = SVI(kw_model, AutoNormal(kw_model), optax.adam(0.05), Trace_ELBO())
    result = fit(
        svi,
        jax.random.key(8),
        40,
        y=y_train,
        val_kwargs={"y": y_train[:5]},
        progress_bar=False,
        chunk_size=20,
    )
    assert result.val_losses.shape == (2,) and result.val_size == 5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_steps": 0}, "num_steps"),
        ({"num_steps": 2.5}, "num_steps"),
        ({"patience": 0, "val_args": "same"}, "patience"),
        ({"patience": 3}, "patience needs validation"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"chunk_size": 101}, "chunk_size"),
        ({"val_args": ()}, "val_args must hold"),
        ({"val_args": "matrix"}, r"val_args\[0\] must have shape"),
        ({"val_args": "empty"}, r"val_args\[0\] must not be empty"),
        ({"val_kwargs": {"x": 1}}, "val_kwargs names"),
        ({"stop_rule": "best", "val_args": "same"}, "stop_rule"),
        ({"min_delta": -1.0, "val_args": "same"}, "min_delta"),
    ],
)
def test_bad_input_is_rejected(y_train, kwargs, match):
    val = {
        "same": (y_train,),
        "matrix": (y_train.reshape(20, 2),),
        "empty": (y_train[:0],),
    }
    if isinstance(kwargs.get("val_args"), str):
        kwargs["val_args"] = val[kwargs["val_args"]]
    num_steps = kwargs.pop("num_steps", 100)
    with pytest.raises(ValueError, match=match):
        fit(
            make_svi(),
            jax.random.key(0),
            num_steps,
            y_train,
            progress_bar=False,
            **kwargs,
        )


def test_bad_types_are_rejected(y_train):
    with pytest.raises(TypeError, match="svi"):
        fit("not svi", jax.random.key(0), 10, y_train)
    with pytest.raises(TypeError, match="rng_key"):
        fit(make_svi(), 0, 10, y_train)
    with pytest.raises(TypeError, match="init_state"):
        fit(make_svi(), None, 10, y_train, init_state={"a": 1})


def test_default_chunk_size():
    assert training.default_chunk_size(10_000) == 500
    assert training.default_chunk_size(1_000) == 50
    assert training.default_chunk_size(1) == 1
    assert training.default_chunk_size(997) == 50  # prime: no divisor near 50
    with pytest.raises(ValueError, match="num_steps"):
        training.default_chunk_size(0)
