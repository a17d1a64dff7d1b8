"""Tests of companion.data: the moons against scikit-learn's definition, the
splits, the grid, and the rejection of bad inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.datasets import make_moons as sk_make_moons

from companion import data


def test_moons_shapes_dtypes_and_label_balance():
    x, y = data.make_moons(jax.random.key(0), num_obs=101, noise=0.1)
    assert x.shape == (101, 2) and y.shape == (101,)
    assert x.dtype == jnp.float32 and y.dtype == jnp.int32
    assert set(np.unique(y).tolist()) == {0, 1}
    # sklearn puts n // 2 points on the outer moon (label 0), the rest inside
    assert int((y == 0).sum()) == 50 and int((y == 1).sum()) == 51


def test_noiseless_moons_lie_on_sklearns_half_circles():
    x, y = data.make_moons(jax.random.key(1), num_obs=200, noise=0.0)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y)
    outer, inner = x[y == 0], x[y == 1]
    np.testing.assert_allclose(np.hypot(outer[:, 0], outer[:, 1]), 1.0, atol=1e-6)
    assert (outer[:, 1] >= -1e-6).all()
    np.testing.assert_allclose(
        np.hypot(inner[:, 0] - 1.0, inner[:, 1] - 0.5), 1.0, atol=1e-6
    )
    assert (inner[:, 1] <= 0.5 + 1e-6).all()
    # the same point set as scikit-learn's (up to the shuffle)
    x_sk, y_sk = sk_make_moons(n_samples=200, noise=None, shuffle=False)
    for label in (0, 1):
        ours = x[y == label]
        theirs = x_sk[y_sk == label]
        # sort on rounded coordinates: float32 and float64 differ in the last bits
        ours = ours[np.lexsort(np.round(ours, 4).T)]
        theirs = theirs[np.lexsort(np.round(theirs, 4).T)]
        np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_noise_has_the_requested_standard_deviation():
    key = jax.random.key(2)
    x0, y0 = data.make_moons(key, 4000, 0.0)
    x1, y1 = data.make_moons(key, 4000, 0.3)
    np.testing.assert_array_equal(y0, y1)  # the same shuffle
    residual = np.asarray(x1 - x0)
    # 8,000 normal draws: the sample sd is within 3% of 0.3 with high probability
    assert abs(residual.std() - 0.3) < 0.009
    assert abs(residual.mean()) < 0.01


def test_moons_are_reproducible_and_key_dependent():
    a = data.make_moons(jax.random.key(3), 50, 0.2)
    b = data.make_moons(jax.random.key(3), 50, 0.2)
    c = data.make_moons(jax.random.key(4), 50, 0.2)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.array_equal(a[0], c[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_obs": 0, "noise": 0.1}, "num_obs"),
        ({"num_obs": 2.5, "noise": 0.1}, "num_obs"),
        ({"num_obs": 10, "noise": -0.1}, "noise"),
        ({"num_obs": 10, "noise": float("nan")}, "noise"),
    ],
)
def test_moons_reject_bad_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.make_moons(jax.random.key(0), **kwargs)


def test_moons_reject_a_seed_instead_of_a_key():
    with pytest.raises(TypeError, match="rng_key"):
        data.make_moons(0, 10, 0.1)


def test_split_is_a_partition_with_the_requested_sizes():
    x, y = data.make_moons(jax.random.key(5), 101, 0.1)
    split = data.train_val_test_split(
        jax.random.key(6), x, y, fractions=(0.5, 0.3, 0.2)
    )
    assert split.x_train.shape == (50, 2) and split.y_train.shape == (50,)
    assert split.x_val.shape == (30, 2) and split.y_val.shape == (30,)
    assert split.x_test.shape == (21, 2) and split.y_test.shape == (21,)
    rows = np.concatenate([split.x_train, split.x_val, split.x_test])
    labels = np.concatenate([split.y_train, split.y_val, split.y_test])
    order, expected = np.lexsort(rows.T), np.lexsort(np.asarray(x).T)
    np.testing.assert_array_equal(rows[order], np.asarray(x)[expected])
    np.testing.assert_array_equal(labels[order], np.asarray(y)[expected])


@pytest.mark.parametrize(
    ("x_shape", "y_shape", "fractions", "match"),
    [
        ((10, 2), (9,), (0.6, 0.2, 0.2), "same length"),
        ((10,), (10,), (0.6, 0.2, 0.2), "x must be a 2-D"),
        ((10, 2), (10, 1), (0.6, 0.2, 0.2), "y must be a 1-D"),
        ((10, 2), (10,), (0.6, 0.2), "fractions"),
        ((10, 2), (10,), (0.6, 0.3, 0.2), "fractions"),
        ((10, 2), (10,), (1.2, -0.1, -0.1), "fractions"),
        ((10, 2), (10,), (0.98, 0.01, 0.01), "empty"),
    ],
)
def test_split_rejects_bad_inputs(x_shape, y_shape, fractions, match):
    with pytest.raises(ValueError, match=match):
        data.train_val_test_split(
            jax.random.key(0), jnp.zeros(x_shape), jnp.zeros(y_shape), fractions
        )


def test_grid_covers_the_padded_bounding_box():
    x = jnp.array([[-1.0, 0.0], [1.0, 2.0]])
    grid = data.make_grid(x, num_points=11, padding=0.5)
    assert grid.points.shape == (121, 2) and grid.xx.shape == (11, 11)
    np.testing.assert_allclose(grid.points.min(0), [-2.0, -1.0], atol=1e-6)
    np.testing.assert_allclose(grid.points.max(0), [2.0, 3.0], atol=1e-6)
    np.testing.assert_array_equal(grid.points[:, 0].reshape(grid.xx.shape), grid.xx)
    np.testing.assert_array_equal(grid.points[:, 1].reshape(grid.yy.shape), grid.yy)


@pytest.mark.parametrize(
    ("x", "kwargs", "match"),
    [
        (jnp.zeros((5, 3)), {}, "x must have shape"),
        (jnp.zeros((5, 2)), {"num_points": 1}, "num_points"),
        (jnp.zeros((5, 2)), {"padding": -1.0}, "padding"),
    ],
)
def test_grid_rejects_bad_inputs(x, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.make_grid(x, **kwargs)
