"""The stored NUTS reference of chapter 7 (``data/bnn_nuts_reference.nc``)
matches the script that made it (``scripts/make_bnn_reference.py``): its
settings, its shapes and dtypes, the data it was fitted to, and the
convergence numbers recorded in its attributes. A run of the script with tiny
settings checks that it is deterministic and writes what the chapter reads."""

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from flax import nnx

from companion import bnn

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", r"\s*ArviZ is undergoing", FutureWarning)
    import arviz as az

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location(
    "make_bnn_reference", ROOT / "scripts" / "make_bnn_reference.py"
)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)


@pytest.fixture(scope="module")
def reference():
    assert script.OUTPUT == ROOT / "data" / "bnn_nuts_reference.nc"
    return az.from_netcdf(script.OUTPUT)


def test_the_file_is_small():
    assert script.OUTPUT.stat().st_size < 5 * 2**20


def test_the_settings_are_the_script_s(reference):
    attrs = reference.posterior.attrs
    expected = {
        "seed": script.SEED,
        "num_data": script.NUM_DATA,
        "noise": script.NOISE,
        "prior_scale": script.PRIOR_SCALE,
        "num_warmup": script.NUM_WARMUP,
        "num_samples": script.NUM_SAMPLES,
        "num_chains": script.NUM_CHAINS,
        "max_tree_depth": script.MAX_TREE_DEPTH,
        "target_accept": script.TARGET_ACCEPT,
    }
    for name, value in expected.items():
        assert attrs[name] == value, name
    np.testing.assert_array_equal(attrs["fractions"], script.FRACTIONS)
    np.testing.assert_array_equal(attrs["hidden_layers"], script.HIDDEN_LAYERS)
    for name in ("jax_version", "numpyro_version", "arviz_version"):
        assert isinstance(attrs[name], str) and attrs[name][0].isdigit(), name


def test_the_draws_have_the_model_s_sites_shapes_and_dtypes(reference):
    mlp = bnn.MLP(2, 1, list(script.HIDDEN_LAYERS), rngs=nnx.Rngs(0))
    shapes = bnn.param_shapes(mlp)
    posterior = reference.posterior
    assert set(posterior.data_vars) == {script.file_name(s) for s in shapes}
    leading = (script.NUM_CHAINS, script.NUM_SAMPLES)
    for site, shape in shapes.items():
        values = posterior[script.file_name(site)]
        assert values.shape == leading + shape, site
        assert values.dtype == np.float32, site
        assert np.isfinite(values).all(), site
    stats = reference.sample_stats
    for name in ("diverging", "n_steps", "acceptance_rate", "lp"):
        assert stats[name].shape == leading, name
    assert int(stats["n_steps"].max()) <= 2**script.MAX_TREE_DEPTH - 1


def test_the_data_are_the_script_s(reference):
    split, _ = script.make_data()
    np.testing.assert_array_equal(reference.constant_data["x"], split.x_train)
    np.testing.assert_array_equal(reference.observed_data["y"], split.y_train)
    attrs = reference.posterior.attrs
    assert attrs["train_sha256"] == script.data_hash(split.x_train, split.y_train)
    assert attrs["test_sha256"] == script.data_hash(split.x_test, split.y_test)


def test_the_data_hash_sees_values_dtypes_and_shapes():
    a = np.arange(6, dtype=np.float32)
    assert script.data_hash(a) == script.data_hash(a.copy())
    assert script.data_hash(a) != script.data_hash(a + 1)
    assert script.data_hash(a) != script.data_hash(a.astype(np.float64))
    assert script.data_hash(a) != script.data_hash(a.reshape(2, 3))


def test_the_recorded_convergence_numbers_are_the_draws(reference):
    attrs = reference.posterior.attrs
    stats = reference.sample_stats
    assert attrs["num_divergent"] == int(stats["diverging"].sum())
    at_cap = (stats["n_steps"] >= 2**script.MAX_TREE_DEPTH - 1).mean()
    assert attrs["share_at_max_tree_depth"] == pytest.approx(float(at_cap))
    rhat = np.concatenate([np.ravel(v) for v in az.rhat(reference).values()])
    assert attrs["rhat_weights_median"] == pytest.approx(np.median(rhat), rel=1e-6)
    split, _ = script.make_data()
    recomputed = script.prediction_diagnostics(reference, split.x_test)
    for name, value in recomputed.items():
        assert attrs[name] == pytest.approx(value, rel=1e-4), name


def test_the_names_round_trip():
    site = "nn/layers.0.kernel"
    assert "/" not in script.file_name(site)
    assert script.site_name(script.file_name(site)) == site


@pytest.mark.slow
def test_the_script_is_deterministic_and_writes_what_the_chapter_reads(tmp_path):
    settings = {"num_warmup": 20, "num_samples": 10, "num_chains": 2}
    a = script.main(tmp_path / "a.nc", max_tree_depth=3, **settings)
    b = script.main(tmp_path / "b.nc", max_tree_depth=3, **settings)
    for name in a.posterior.data_vars:
        np.testing.assert_array_equal(a.posterior[name], b.posterior[name])
    read = az.from_netcdf(tmp_path / "a.nc")
    assert set(read.groups()) == {
        "posterior",
        "sample_stats",
        "observed_data",
        "constant_data",
    }
    assert read.posterior.attrs["max_tree_depth"] == 3
    assert read.posterior.attrs["num_samples"] == 10
    assert read.posterior["nn.layers.0.kernel"].shape == (2, 10, 2, 4)
