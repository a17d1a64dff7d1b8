"""The shared private input checks (companion._checks), which every public
function of the package relies on to reject bad input before tracing."""

import jax
import numpy as np
import pytest

from companion import _checks


def test_is_int_accepts_python_and_numpy_ints_but_not_bools_or_floats():
    assert _checks.is_int(3) and _checks.is_int(np.int64(3))
    assert not _checks.is_int(True)
    assert not _checks.is_int(3.0)
    assert not _checks.is_int(np.array(3))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "3", None])
def test_check_count_rejects_everything_but_positive_ints(bad):
    with pytest.raises(ValueError, match=r"num_steps must be an int >= 1"):
        _checks.check_count("num_steps", bad)
    _checks.check_count("num_steps", 1)
    _checks.check_count("num_steps", np.int32(7))


def test_check_key_accepts_typed_and_raw_keys_only():
    _checks.check_key(jax.random.key(0))
    _checks.check_key(jax.random.PRNGKey(0))
    for bad in [
        0,
        np.array([0, 0], dtype=np.uint32),  # a NumPy array is not a key
        jax.random.split(jax.random.key(0)),  # a batch of keys
        jax.random.key_data(jax.random.split(jax.random.key(0))),  # raw batch
        jax.numpy.zeros(2),  # float32[2]
    ]:
        with pytest.raises(TypeError, match="rng_key must be a JAX PRNG key"):
            _checks.check_key(bad)


def test_check_count_with_another_minimum():
    _checks.check_count("num_draws", 10, minimum=10)
    with pytest.raises(ValueError, match=r"num_draws must be an int >= 10, got 9"):
        _checks.check_count("num_draws", 9, minimum=10)


def test_check_optional_count():
    _checks.check_optional_count("patience", None)
    _checks.check_optional_count("patience", 3)
    for bad in (0, 1.5, "2"):
        with pytest.raises(ValueError, match="patience must be None or an int >= 1"):
            _checks.check_optional_count("patience", bad)


def test_is_real_takes_concrete_real_scalars_only():
    for good in (
        1,
        0.5,
        np.float32(2.0),
        np.int8(3),
        np.array(1.5),
        jax.numpy.ones(()),
    ):
        assert _checks.is_real(good), good
    for bad in (True, np.bool_(True), "1", None, 1j, np.ones(2), jax.numpy.ones(1)):
        assert not _checks.is_real(bad), bad
    seen = []
    jax.jit(lambda x: seen.append(_checks.is_real(x)) or x)(1.0)
    assert seen == [False]  # a traced value is not known here


def test_check_positive_returns_a_float_and_names_the_argument():
    assert _checks.check_positive("scale", np.float32(2.0)) == 2.0
    assert isinstance(_checks.check_positive("scale", 3), float)
    assert _checks.check_positive("noise", 0, allow_zero=True) == 0.0
    for bad, error in [
        (0, ValueError),
        (-1.0, ValueError),
        (float("nan"), ValueError),
        (float("inf"), ValueError),
        ("1", TypeError),
        (None, TypeError),
        (True, TypeError),
        (np.ones(2), TypeError),
    ]:
        with pytest.raises(error, match=r"scale must be a (finite )?number > 0"):
            _checks.check_positive("scale", bad)
    with pytest.raises(ValueError, match=r"noise must be a finite number >= 0"):
        _checks.check_positive("noise", -0.1, allow_zero=True)


def test_broadcasts_to_exactly_the_target():
    assert _checks.broadcasts_to((), (3, 2))
    assert _checks.broadcasts_to((1, 2), (3, 2))
    assert not _checks.broadcasts_to((3,), (3, 2))  # would need (3, 1)
    assert not _checks.broadcasts_to((4, 2), (1, 2))  # broadcasts, to (4, 2)


def test_check_real_passes_traced_values_through():
    assert _checks.check_real("x", [1.0, 2.0]).shape == (2,)
    with pytest.raises(TypeError, match="x must hold real numbers"):
        _checks.check_real("x", ["a"])
    with pytest.raises(ValueError, match="x must be finite"):
        _checks.check_real("x", [1.0, np.inf])
    with pytest.raises(ValueError, match="x must be > 0"):
        _checks.check_real("x", [1.0, 0.0], positive=True)
    assert (
        float(jax.jit(lambda v: _checks.check_real("x", v, positive=True))(-1.0))
        == -1.0
    )
