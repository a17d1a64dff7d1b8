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
