"""Tests of companion.training.fit against SVI.run and the rules it documents."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from jax.scipy.stats import norm
from numpyro.infer import SVI, Predictive, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from numpyro.infer.util import log_likelihood

from companion import _compile, metrics, training
from companion.training import (
    EarlyStopping,
    NonFiniteLossWarning,
    fit,
    log_predictive_density,
)


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


def test_progress_bar_obeys_tqdm_disable_as_renders_set_it(
    y_train, capsys, monkeypatch
):
    # Quarto renders set TQDM_DISABLE=1 (_environment); an explicit
    # disable=False would override tqdm's own reading of it
    svi = make_svi()
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    fit(svi, jax.random.key(1), 60, y_train, progress_bar=True)
    assert "60/60" in capsys.readouterr().err
    monkeypatch.setenv("TQDM_DISABLE", "1")
    fit(svi, jax.random.key(1), 60, y_train, progress_bar=True)
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("TQDM_DISABLE", "0")
    fit(svi, jax.random.key(1), 60, y_train, progress_bar=True)
    assert "60/60" in capsys.readouterr().err


def test_compiled_once_and_reused_across_calls(y_train):
    svi = make_svi()
    fit(svi, jax.random.key(0), 100, y_train, progress_bar=False, chunk_size=20)
    cache = dict(_compile._CACHE[svi])
    fit(svi, jax.random.key(1), 60, y_train + 1.0, progress_bar=False, chunk_size=20)
    assert dict(_compile._CACHE[svi]).keys() == cache.keys()
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


def _stops(rule, pairs):
    """Feed (train, val) pairs to a rule; whether it says stop after each."""
    stops = []
    for train, val in pairs:
        rule = rule.update(train=train, val=val)
        stops.append(rule.should_stop)
    return stops, rule


def test_early_stopping_rule_on_constructed_sequences():
    vals = [5.0, 4.0, 4.5, 3.9, 4.0, 4.1, 4.2, 1.0]
    start = EarlyStopping(patience=3)
    stops, rule = _stops(start, [(0.0, v) for v in vals])
    assert stops == [False, False, False, False, False, False, True, False]
    assert rule.best == 1.0 and rule.is_best and rule.counter == 0
    assert start.best == np.inf and start.counter == 0  # a value: not changed

    stops, _ = _stops(
        EarlyStopping(patience=2, min_delta=0.5),
        [(0.0, v) for v in [5.0, 4.8, 4.6, 4.0]],
    )
    assert stops == [False, False, True, False]  # 4.8 and 4.6 improve by < 0.5

    pairs = [(1.0, 2.0), (1.0, 2.0), (1.0, 0.5), (1.0, 2.0), (1.0, 2.0), (1.0, 2.0)]
    stops, _ = _stops(EarlyStopping(patience=3, rule="val_above_train"), pairs)
    assert stops == [False, False, False, False, False, True]

    stops, _ = _stops(EarlyStopping(patience=None), [(0.0, v) for v in range(50)])
    assert not any(stops)

    for bad, match in [
        (dict(patience=0), "patience must be None or an int >= 1"),
        (dict(patience=2, rule="sometimes"), "stop_rule must be one of"),
        (dict(patience=2, min_delta=-1.0), "min_delta must be a finite number >= 0"),
    ]:
        with pytest.raises(ValueError, match=match):
            EarlyStopping(**bad)


def test_a_resumed_run_keeps_its_early_stopping_record(y_train):
    """One run of early stopping split over two calls (resumed from the first
    call's FitResult) stops at the same step with the same parameters; resumed
    from the bare SVI state it forgets its best loss and patience count."""
    y_val = jnp.full(10, -30.0)  # the best parameters are the first ones
    settings = dict(val_args=(y_val,), patience=3, progress_bar=False, chunk_size=20)
    svi = make_svi()
    whole = fit(svi, jax.random.key(4), 1_000, y_train, **settings)
    assert whole.num_steps_run == 80 and whole.best_step == 20
    assert whole.early_stopping.counter == 3 and whole.early_stopping.should_stop

    first = fit(svi, jax.random.key(4), 40, y_train, **settings)
    assert first.stop_reason == "completed" and first.early_stopping.counter == 1
    second = fit(svi, None, 1_000, y_train, init_state=first, **settings)
    assert second.stop_reason == "early_stopping"
    assert first.num_steps_run + second.num_steps_run == whole.num_steps_run
    assert second.best_step == whole.best_step - first.num_steps_run  # -20: carried
    assert_trees_close(second.params, whole.params)
    assert second.early_stopping == whole.early_stopping

    forgetful = fit(svi, None, 1_000, y_train, init_state=first.state, **settings)
    # counted afresh: a first evaluation and at least 3 more (4 chunks of 20)
    assert forgetful.num_steps_run >= 80 > second.num_steps_run == 40
    assert forgetful.best_step > 0  # a best of its own
    with pytest.raises(ValueError, match="early-stopping record follows"):
        fit(svi, None, 100, y_train, init_state=first, val_loss="neg_lpd", **settings)


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


# --------------------------------------------------------------------------
# The log predictive density and fit(val_loss="neg_lpd").


def conjugate_model(y):
    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(loc, 1.0), obs=y)


def conjugate_guide(y):
    m = numpyro.param("m", 0.0)
    s = numpyro.param("s", 1.0, constraint=dist.constraints.positive)
    numpyro.sample("loc", dist.Normal(m, s))


def two_site_model(y):
    """Two observed sites of different shapes, and a latent of shape (2,)."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("data", y.shape[0]):
        numpyro.sample("y", dist.Normal(w[0], 1.0), obs=y)
        numpyro.sample("z", dist.Bernoulli(logits=w[1]), obs=(y > 0).astype(float))
    numpyro.sample("total", dist.Normal(w.sum(), 2.0), obs=y.sum())


def two_site_guide(y):
    m = numpyro.param("m", jnp.array([0.3, -0.2]))
    numpyro.sample("w", dist.Normal(m, 0.4).to_event(1))


def test_lpd_matches_the_closed_form_of_the_conjugate_model():
    # q = N(m, s²) and y_i | loc ~ N(loc, 1): p(y_i | q) = N(y_i | m, 1 + s²).
    y = jnp.array([-1.0, 0.2, 0.5, 2.0, 3.5])
    params = {"m": 0.7, "s": 0.8}
    exact = norm.logpdf(y, 0.7, jnp.sqrt(1.0 + 0.8**2)).sum()
    lpd = log_predictive_density(
        jax.random.key(0),
        conjugate_model,
        conjugate_guide,
        params,
        y,
        num_samples=20_000,
    )
    np.testing.assert_allclose(lpd, exact, atol=0.03)
    # With an almost deterministic guide every draw gives the same density.
    point = log_predictive_density(
        jax.random.key(1),
        conjugate_model,
        conjugate_guide,
        {"m": 0.7, "s": 1e-6},
        y,
        num_samples=3,
    )
    np.testing.assert_allclose(point, norm.logpdf(y, 0.7, 1.0).sum(), rtol=1e-5)


def lpd_by_predictive(rng_key, model, guide, params, args, num_samples):
    """The definition, from NumPyro's Predictive and log_likelihood."""
    predictive = Predictive(
        guide, params=params, num_samples=num_samples, parallel=True
    )
    draws = predictive(rng_key, *args)
    pointwise = log_likelihood(model, draws, *args, parallel=True)
    return sum(
        float(jnp.sum(jax.nn.logsumexp(v, axis=0) - jnp.log(num_samples)))
        for v in pointwise.values()
    )


def test_lpd_equals_predictive_and_log_likelihood_with_the_same_keys():
    y = 1.0 + jax.random.normal(jax.random.key(3), (7,))
    params = {"m": jnp.array([0.3, -0.2])}
    lpd = log_predictive_density(
        jax.random.key(4), two_site_model, two_site_guide, params, y, num_samples=50
    )
    expected = lpd_by_predictive(
        jax.random.key(4), two_site_model, two_site_guide, params, (y,), 50
    )
    np.testing.assert_allclose(lpd, expected, rtol=1e-5)
    # Every element of every observed site is one observation: the joint
    # density of each observation's three sites would give another number.
    draws = Predictive(two_site_guide, params=params, num_samples=50)(
        jax.random.key(4), y
    )
    per_site = log_likelihood(two_site_model, draws, y)
    assert set(per_site) == {"y", "z", "total"}
    joint = jax.nn.logsumexp(per_site["y"] + per_site["z"], axis=0) - jnp.log(50)
    assert abs(float(joint.sum() + jnp.sum(per_site["total"])) - float(lpd)) > 1e-3


def test_lpd_of_binary_labels_is_minus_the_log_loss_of_the_predictive_mean():
    # Chapter 5's table scores held-out labels by the log loss of the mean
    # predicted probability; the lpd is the same number, times -n.
    def logistic_model(x, y):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=w * x), obs=y)

    def logistic_guide(x, y):
        numpyro.sample("w", dist.Normal(numpyro.param("m", 0.5), 0.7))

    x = jnp.linspace(-2.0, 2.0, 9)
    y = jnp.array([0, 0, 1, 0, 1, 1, 0, 1, 1])
    params = {"m": 0.5}
    lpd = log_predictive_density(
        jax.random.key(6), logistic_model, logistic_guide, params, x, y, num_samples=40
    )
    draws = Predictive(logistic_guide, params=params, num_samples=40)(
        jax.random.key(6), x, y
    )["w"]
    p_mean = jax.nn.sigmoid(draws[:, None] * x).mean(axis=0)
    np.testing.assert_allclose(-lpd / 9, metrics.log_loss(y, p_mean), rtol=1e-5)


def test_lpd_is_jit_and_vmap_safe():
    y = jnp.linspace(-1.0, 2.0, 6)
    params = {"m": 0.4, "s": 0.5}

    def lpd(key):
        return log_predictive_density(
            key, conjugate_model, conjugate_guide, params, y, num_samples=10
        )

    keys = jax.random.split(jax.random.key(5), 4)
    batched = jax.jit(jax.vmap(lpd))(keys)
    assert batched.shape == (4,)
    one_at_a_time = jax.jit(lpd)
    np.testing.assert_allclose(batched, [one_at_a_time(k) for k in keys], rtol=1e-5)
    assert len(set(np.asarray(batched).tolist())) == 4  # each key its own draws


def lpd_key(svi, rng_key, *args):
    """The key fit(val_loss="neg_lpd") draws with, as its docstring says."""
    state = svi.init(rng_key, *args)
    return jax.random.fold_in(state.rng_key, training._LPD_STREAM)


def test_neg_lpd_validation_losses_match_a_direct_computation(y_train):
    svi = make_svi()
    y_val = y_train[:10] + 0.3
    result = fit(
        svi,
        jax.random.key(3),
        60,
        y_train,
        val_args=(y_val,),
        val_loss="neg_lpd",
        num_lpd_samples=30,
        progress_bar=False,
        chunk_size=30,
    )
    assert result.val_loss_kind == "neg_lpd"
    np.testing.assert_array_equal(result.val_steps, [30, 60])
    key = lpd_key(svi, jax.random.key(3), y_train)
    state = svi.init(jax.random.key(3), y_train)
    for k in range(2):
        state = svi.run(None, 30, y_train, progress_bar=False, init_state=state).state
        params = svi.get_params(state)
        expected = -lpd_by_predictive(key, model, svi.guide, params, (y_val,), 30)
        np.testing.assert_allclose(result.val_losses[k], expected, rtol=1e-5)
    # and params holds the parameters of the best of the two evaluations
    assert result.best_step == 30 * (1 + int(np.argmin(result.val_losses)))


def test_early_stopping_on_neg_lpd_restores_the_best_parameters(y_train):
    # As for the ELBO: validation data far from the training data make the
    # predictions worse as the fit moves towards the training data.
    svi = make_svi()
    result = fit(
        svi,
        jax.random.key(4),
        1_000,
        y_train,
        val_args=(jnp.full(10, -30.0),),
        val_loss="neg_lpd",
        num_lpd_samples=20,
        patience=3,
        progress_bar=False,
        chunk_size=20,
    )
    assert result.stopped_early and result.stop_reason == "early_stopping"
    assert result.num_steps_run == 20 * 4 and result.best_step == 20
    assert np.argmin(result.val_losses) == 0
    expected = svi.run(jax.random.key(4), 20, y_train, progress_bar=False)
    assert_trees_close(result.params, expected.params)


def test_neg_lpd_stops_on_a_plateau_the_one_draw_elbo_hides_in_noise():
    # The conjugate model fitted to 200 points: both signals level off once
    # q has converged, but the one-draw ELBO keeps jumping around and sets new
    # "bests" by chance, so it needs more patience to stop.
    y = 2.0 + jax.random.normal(jax.random.key(11), (200,))
    y_val = 2.0 + jax.random.normal(jax.random.key(12), (50,))
    svi = SVI(conjugate_model, conjugate_guide, optax.adam(0.05), Trace_ELBO())
    runs = {
        kind: fit(
            svi,
            jax.random.key(13),
            3_000,
            y,
            val_args=(y_val,),
            val_loss=kind,
            patience=None,
            progress_bar=False,
            chunk_size=50,
        )
        for kind in ("neg_elbo", "neg_lpd")
    }
    late = slice(30, None)  # converged: after 1,500 steps
    spread = {k: np.std(r.val_losses[late]) for k, r in runs.items()}
    assert spread["neg_lpd"] < 0.2 * spread["neg_elbo"]
    exact = -norm.logpdf(
        y_val,
        runs["neg_lpd"].params["m"],
        jnp.sqrt(1.0 + runs["neg_lpd"].params["s"] ** 2),
    ).sum()
    # 100 draws: the estimate is biased low (Jensen), by well under 1%.
    np.testing.assert_allclose(runs["neg_lpd"].val_losses[-1], exact, rtol=1e-2)


def test_neg_lpd_compiles_once_and_leaves_the_training_alone(y_train):
    svi = make_svi()
    kwargs = {"progress_bar": False, "chunk_size": 25}
    val_args = (y_train[:10],)
    lpd = fit(
        svi,
        jax.random.key(9),
        100,
        y_train,
        val_args=val_args,
        val_loss="neg_lpd",
        **kwargs,
    )
    cache = dict(_compile._CACHE[svi])
    (runner,) = cache.values()
    # New keys and data values, same shapes: the same compiled chunk, no retrace.
    fit(
        svi,
        jax.random.key(1),
        50,
        y_train + 1.0,
        val_args=(y_train[10:20],),
        val_loss="neg_lpd",
        **kwargs,
    )
    assert dict(_compile._CACHE[svi]).keys() == cache.keys()
    assert runner._cache_size() == 1
    # Same key: the same draws, so the same validation losses.
    again = fit(
        svi,
        jax.random.key(9),
        100,
        y_train,
        val_args=val_args,
        val_loss="neg_lpd",
        **kwargs,
    )
    np.testing.assert_array_equal(again.val_losses, lpd.val_losses)
    # The training is the same whichever signal, or none, is recorded: the
    # lpd draws come from a key stream of their own.
    elbo = fit(svi, jax.random.key(9), 100, y_train, val_args=val_args, **kwargs)
    plain = fit(svi, jax.random.key(9), 100, y_train, **kwargs)
    for run in (lpd, elbo):
        np.testing.assert_array_equal(run.losses, plain.losses)
        assert_trees_close(run.state.optim_state, plain.state.optim_state, 0, 0)
    assert (lpd.val_loss_kind, elbo.val_loss_kind, plain.val_loss_kind) == (
        "neg_lpd",
        "neg_elbo",
        None,
    )
    # Different signals: the ELBO's holds the KL term, the lpd's does not.
    assert np.all(elbo.val_losses > lpd.val_losses)
    assert len(_compile._CACHE[svi]) == 3  # one chunk per signal, and none


def test_also_record_gives_the_records_of_separate_runs(y_train):
    # One run that records both signals holds what two runs, one per signal,
    # record; the signal in val_loss alone drives early stopping and params.
    svi = make_svi()
    settings = {
        "val_args": (y_train[:10] + 0.5,),
        "num_lpd_samples": 20,
        "chunk_size": 20,
        "progress_bar": False,
    }
    separate = {
        kind: fit(svi, jax.random.key(8), 200, y_train, val_loss=kind, **settings)
        for kind in ("neg_elbo", "neg_lpd")
    }
    chunks_before = len(_compile._CACHE[svi])
    both = fit(
        svi,
        jax.random.key(8),
        200,
        y_train,
        val_loss="neg_lpd",
        also_record=["neg_elbo", "neg_lpd"],  # val_loss again: recorded once
        **settings,
    )
    assert len(_compile._CACHE[svi]) == chunks_before + 1  # one chunk for both
    assert list(both.val_records) == ["neg_lpd", "neg_elbo"]
    np.testing.assert_array_equal(both.val_records["neg_lpd"], both.val_losses)
    for kind, run in separate.items():
        np.testing.assert_allclose(both.val_records[kind], run.val_losses, rtol=1e-6)
        np.testing.assert_array_equal(both.losses, run.losses)
        assert run.val_records.keys() == {kind}
    assert not np.allclose(both.val_records["neg_elbo"], both.val_records["neg_lpd"])
    # params and best_step follow val_loss, not the recorded ELBO
    assert both.val_loss_kind == "neg_lpd"
    assert both.best_step == separate["neg_lpd"].best_step
    assert_trees_close(both.params, separate["neg_lpd"].params)
    assert (
        fit(svi, jax.random.key(8), 20, y_train, progress_bar=False).val_records is None
    )


def test_early_stopping_follows_val_loss_not_what_is_recorded_beside_it():
    # The conjugate model on 200 points with patience 4: the noisy one-draw
    # ELBO and the lpd stop (and keep) at different steps. Recording the
    # other signal beside val_loss must move neither.
    y = 2.0 + jax.random.normal(jax.random.key(11), (200,))
    y_val = 2.0 + jax.random.normal(jax.random.key(12), (50,))
    svi = SVI(conjugate_model, conjugate_guide, optax.adam(0.05), Trace_ELBO())
    settings = {"val_args": (y_val,), "patience": 4, "chunk_size": 50}
    kinds = ("neg_elbo", "neg_lpd")
    alone = {
        kind: fit(
            svi,
            jax.random.key(13),
            3_000,
            y,
            val_loss=kind,
            progress_bar=False,
            **settings,
        )
        for kind in kinds
    }
    assert alone["neg_elbo"].num_steps_run != alone["neg_lpd"].num_steps_run
    assert alone["neg_elbo"].best_step != alone["neg_lpd"].best_step
    for kind, other in (kinds, kinds[::-1]):
        both = fit(
            svi,
            jax.random.key(13),
            3_000,
            y,
            val_loss=kind,
            also_record=[other],
            progress_bar=False,
            **settings,
        )
        assert both.stop_reason == "early_stopping"
        assert (both.num_steps_run, both.best_step) == (
            alone[kind].num_steps_run,
            alone[kind].best_step,
        )
        assert_trees_close(both.params, alone[kind].params)
        np.testing.assert_allclose(
            both.val_records[kind], alone[kind].val_losses, rtol=1e-6
        )
        # the other record, as far as both runs went
        common = min(len(both.val_steps), len(alone[other].val_steps))
        np.testing.assert_allclose(
            both.val_records[other][:common],
            alone[other].val_losses[:common],
            rtol=1e-6,
        )
    assert len(_compile._CACHE[svi]) == 3  # one chunk per signal, one for both


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"also_record": "neg_elbo", "val_args": True},
            TypeError,
            "also_record must be a tuple",
        ),
        (
            {"also_record": ("lpd",), "val_args": True},
            ValueError,
            "also_record may hold only",
        ),
        ({"also_record": ("neg_lpd",)}, ValueError, "also_record needs validation"),
    ],
)
def test_bad_also_record_is_rejected(y_train, kwargs, error, match):
    if kwargs.pop("val_args", False):
        kwargs["val_args"] = (y_train,)
    with pytest.raises(error, match=match):
        fit(make_svi(), jax.random.key(0), 10, y_train, progress_bar=False, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rng_key": 0}, "rng_key"),
        ({"model": "m"}, "model must be callable"),
        ({"guide": None}, "guide must be callable"),
        ({"params": [0.0]}, "params must be a dict"),
    ],
)
def test_lpd_bad_types_are_rejected(kwargs, match):
    call = {
        "rng_key": jax.random.key(0),
        "model": conjugate_model,
        "guide": conjugate_guide,
        "params": {"m": 0.0, "s": 1.0},
    }
    call.update(kwargs)
    with pytest.raises(TypeError, match=match):
        log_predictive_density(*call.values(), jnp.zeros(3))


@pytest.mark.parametrize("num_samples", [0, 2.0, True])
def test_lpd_bad_num_samples_is_rejected(num_samples):
    with pytest.raises(ValueError, match="num_samples"):
        log_predictive_density(
            jax.random.key(0),
            conjugate_model,
            conjugate_guide,
            {"m": 0.0, "s": 1.0},
            jnp.zeros(3),
            num_samples=num_samples,
        )


def test_lpd_of_a_model_without_observations_is_rejected():
    def prior_only(y):
        numpyro.sample("loc", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="no observed sites"):
        log_predictive_density(
            jax.random.key(0),
            prior_only,
            conjugate_guide,
            {"m": 0.0, "s": 1.0},
            jnp.zeros(3),
        )


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
        ({"val_loss": "lpd", "val_args": "same"}, "val_loss must be one of"),
        ({"val_loss": "neg_lpd"}, "val_loss='neg_lpd' needs validation"),
        ({"num_lpd_samples": 0, "val_args": "same"}, "num_lpd_samples"),
        ({"num_lpd_samples": 1.5}, "num_lpd_samples"),
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
