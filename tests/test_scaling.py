"""Tests of companion.scaling: mini-batch plates and models (shapes, scaling,
unbiased loss), data-parallel SVI on one and on four (simulated) devices,
the guide comparison, and input checks."""

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import optax
import pytest
from flax import nnx
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoLaplaceApproximation, AutoNormal

from companion import bnn, data, scaling, studies


@pytest.fixture(scope="module")
def mlp():
    return bnn.MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))


@pytest.fixture(scope="module")
def moons():
    return data.make_moons(jax.random.key(1), 1_000, 0.2)


def get_trace(fn, *args, seed=0):
    return numpyro.handlers.trace(numpyro.handlers.seed(fn, seed)).get_trace(*args)


# --------------------------------------------------------------------------
# Mini-batches


@pytest.mark.parametrize("replace", [True, False])
def test_subsample_plate_draws_indices_in_range_and_scales_the_likelihood(replace):
    def model(z):
        loc = numpyro.sample("loc", dist.Normal(0.0, 1.0))
        with scaling.subsample_plate("data", z.shape[0], 40, replace=replace) as idx:
            numpyro.deterministic("idx", idx)
            numpyro.sample("z", dist.Normal(loc, 1.0), obs=z[idx])

    z = jnp.arange(1_000.0)
    tr = get_trace(model, z)
    idx = np.asarray(tr["idx"]["value"])
    assert idx.shape == (40,)
    assert idx.min() >= 0 and idx.max() < 1_000
    np.testing.assert_array_equal(tr["z"]["value"], np.asarray(z)[idx])
    assert float(tr["z"]["scale"]) == pytest.approx(1_000 / 40)
    if not replace:
        assert len(set(idx.tolist())) == 40  # NumPyro's draw: no repeats
    # A new key gives a new mini-batch.
    assert not np.array_equal(idx, get_trace(model, z, seed=1)["idx"]["value"])


def test_subsample_plate_without_subsample_is_the_full_plate():
    def model(z):
        with scaling.subsample_plate("data", z.shape[0]) as idx:
            numpyro.deterministic("idx", idx)
            numpyro.sample("z", dist.Normal(0.0, 1.0), obs=z)

    tr = get_trace(model, jnp.zeros(7))
    np.testing.assert_array_equal(tr["idx"]["value"], np.arange(7))
    assert tr["z"]["scale"] is None


def test_minibatch_model_has_the_sites_of_the_full_model(mlp, moons):
    x, y = moons
    full = get_trace(bnn.build_model(mlp), x, y)
    mini = get_trace(scaling.build_minibatch_model(mlp, subsample_size=64), x, y)
    latent = {k for k, s in full.items() if s["type"] == "sample" and k != "y"}
    assert latent == {k for k, s in mini.items() if s["type"] == "sample" and k != "y"}
    for site in latent:
        assert mini[site]["value"].shape == full[site]["value"].shape
    assert mini["p"]["value"].shape == (64,)
    assert mini["y"]["value"].shape == (64,)
    assert float(mini["y"]["scale"]) == pytest.approx(1_000 / 64)
    # Without subsample_size it is the full-batch model, site for site.
    same = get_trace(scaling.build_minibatch_model(mlp), x, y)
    np.testing.assert_allclose(same["p"]["value"], full["p"]["value"], rtol=1e-6)


def test_minibatch_model_has_the_param_sites_of_the_full_model(mlp, moons):
    # random_nnx_module registers the MLP's initial weights as a param site
    # ("nn$params"); every weight is then a latent sample, so the full model
    # hides it from inference, and the mini-batch model must too: otherwise
    # SVI optimises a parameter nothing depends on.
    x, y = moons
    full_model = bnn.build_model(mlp)
    mini_model = scaling.build_minibatch_model(mlp, subsample_size=64)
    traces = {"full": get_trace(full_model, x, y), "mini": get_trace(mini_model, x, y)}
    param_sites = {
        name: {k for k, s in tr.items() if s["type"] == "param"}
        for name, tr in traces.items()
    }
    assert param_sites["mini"] == param_sites["full"] == set()
    guide = AutoNormal(full_model)
    svi_params = {}
    for name, model in (("full", full_model), ("mini", mini_model)):
        svi = SVI(model, guide, optax.adam(0.01), Trace_ELBO())
        svi_params[name] = set(svi.get_params(svi.init(jax.random.key(5), x, y)))
    assert svi_params["mini"] == svi_params["full"]
    assert all(k.endswith(("_auto_loc", "_auto_scale")) for k in svi_params["mini"])


@pytest.mark.parametrize("replace", [True, False])
def test_minibatch_loss_is_unbiased_for_the_full_batch_loss(mlp, moons, replace):
    """At fixed parameters of a point-mass guide the full-batch loss is a
    number; the mean of many mini-batch estimates must match it within 4
    standard errors of that mean."""
    x, y = moons
    full_model = bnn.build_model(mlp)
    mini_model = scaling.build_minibatch_model(mlp, subsample_size=50, replace=replace)
    shapes = bnn.param_shapes(mlp)

    def guide(x, y=None):  # a point mass at the parameters
        for site, shape in shapes.items():
            value = numpyro.param(f"{site}_loc", jnp.zeros(shape))
            numpyro.sample(site, dist.Delta(value, event_dim=len(shape)))

    keys = jax.random.split(jax.random.key(2), len(shapes))
    params = {
        f"{site}_loc": jax.random.normal(key, shape)
        for key, (site, shape) in zip(keys, shapes.items(), strict=True)
    }
    full = scaling.loss_estimates(
        jax.random.key(3), full_model, guide, params, x, y, num_estimates=3
    )
    np.testing.assert_allclose(full, full[0], rtol=1e-6)  # deterministic
    mini = np.asarray(
        scaling.loss_estimates(
            jax.random.key(4), mini_model, guide, params, x, y, num_estimates=4_000
        )
    )
    standard_error = mini.std() / np.sqrt(mini.size)
    assert abs(mini.mean() - float(full[0])) < 4 * standard_error
    # The estimates do vary: each one sees another mini-batch.
    assert mini.std() > 0.01 * abs(float(full[0]))


def test_minibatch_model_rejects_bad_input(mlp, moons):
    x, y = moons
    model = scaling.build_minibatch_model(mlp, subsample_size=2_000)
    with pytest.raises(ValueError, match="subsample_size"):
        get_trace(model, x, y)
    with pytest.raises(ValueError, match="subsample_size"):
        scaling.build_minibatch_model(mlp, subsample_size=0)
    with pytest.raises(ValueError, match="x must"):
        get_trace(scaling.build_minibatch_model(mlp, subsample_size=5), x[:, :1], y)
    with pytest.raises(ValueError, match="y must"):
        get_trace(scaling.build_minibatch_model(mlp, subsample_size=5), x, y[:-1])
    with pytest.raises(TypeError, match="mlp"):
        scaling.build_minibatch_model("mlp")


def test_subsample_plate_rejects_bad_input():
    def model(size, subsample_size):
        with scaling.subsample_plate("data", size, subsample_size):
            pass

    with pytest.raises(ValueError, match="subsample_size"):
        get_trace(model, 10, 11)
    with pytest.raises(ValueError, match="subsample_size"):
        get_trace(model, 10, -1)
    with pytest.raises(ValueError, match="size"):
        get_trace(model, 0, None)


# --------------------------------------------------------------------------
# Several devices

NUM_STEPS = 100

FIT_CODE = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpyro, numpyro.distributions as dist, optax
    from numpyro.infer import SVI, Trace_ELBO
    from companion import scaling

    def model(x, y=None):  # logistic regression: cheap to compile
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Bernoulli(logits=x @ w + b), obs=y)

    def guide(x, y=None):  # mean-field normal, written out: cheap to initialise
        loc = numpyro.param("loc", jnp.zeros(3))
        scale = numpyro.param("scale", jnp.full(3, 0.1), constraint=dist.constraints.positive)
        numpyro.sample("w", dist.Normal(loc[:2], scale[:2]).to_event(1))
        numpyro.sample("b", dist.Normal(loc[2], scale[2]))

    x = jax.random.normal(jax.random.key(1), (400, 2))
    y = (x[:, 0] - x[:, 1] > 0).astype(jnp.int32)
    svi = SVI(model, guide, optax.adam(0.05), Trace_ELBO())
    mesh = scaling.make_mesh()
    result = scaling.data_parallel_fit(
        svi, jax.random.key(7), NUM_STEPS, x, y, mesh=mesh,
        progress_bar=False, chunk_size=NUM_STEPS,
    )
    """
)

SUBPROCESS_CODE = FIT_CODE + textwrap.dedent(
    """
    sharded = scaling.shard_data(x, y, mesh=mesh)[0]
    try:
        scaling.shard_data(x[:398], y[:398], mesh=mesh)
        error = None
    except ValueError as e:
        error = str(e)
    print(json.dumps({
        "device_count": jax.device_count(),
        "data_devices": len(sharded.devices()),
        "params": {k: v.tolist() for k, v in result.params.items()},
        "losses": result.losses.tolist(),
        "error": error,
    }))
    """
)


def test_data_parallel_fit_on_four_devices_matches_one_device():
    namespace = {"NUM_STEPS": NUM_STEPS}
    exec(FIT_CODE, namespace)  # one device, in this process
    single = namespace["result"]
    assert len(namespace["mesh"].devices.flat) == jax.device_count() == 1

    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    code = f"NUM_STEPS = {NUM_STEPS}\n" + SUBPROCESS_CODE
    completed = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3_000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])
    assert out["device_count"] == 4
    assert out["data_devices"] == 4  # the data really are split four ways
    # Same keys, same steps; only the order of the floating-point sums differs.
    np.testing.assert_allclose(out["losses"], single.losses, rtol=1e-4)
    for name, value in single.params.items():
        np.testing.assert_allclose(
            out["params"][name], np.asarray(value), rtol=1e-4, atol=1e-5
        )
    # 398 rows do not split over 4 devices.
    assert out["error"] is not None and "device count must divide" in out["error"]


def test_shard_data_and_replicate_on_one_device():
    mesh = scaling.make_mesh()
    x, y = scaling.shard_data(jnp.ones((6, 2)), jnp.arange(6), mesh=mesh)
    assert x.sharding.spec == jax.sharding.PartitionSpec("batch")
    assert x.shape == (6, 2) and y.shape == (6,)
    params = scaling.replicate({"w": jnp.ones(3)}, mesh)
    assert params["w"].sharding.spec == jax.sharding.PartitionSpec()


def test_sharding_rejects_bad_input():
    mesh = scaling.make_mesh()
    with pytest.raises(ValueError, match="rows"):
        scaling.shard_data(jnp.ones((6, 2)), jnp.ones(5), mesh=mesh)
    with pytest.raises(ValueError, match="mesh"):
        scaling.shard_data(jnp.ones(4), mesh="cpu")
    with pytest.raises(ValueError, match="devices"):
        scaling.make_mesh([])
    with pytest.raises(ValueError, match="init_state"):
        scaling.data_parallel_fit(
            SVI(lambda: None, lambda: None, optax.adam(0.1), Trace_ELBO()),
            jax.random.key(0),
            10,
            jnp.ones((4, 2)),
            jnp.ones(4),
            init_state=None,
        )


# --------------------------------------------------------------------------
# Other guides


def logistic_model(x, y=None):
    """Logistic regression with the BNN's site names (``p``, ``y``): cheap to
    compile, and its log posterior is concave, so Laplace is well defined."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    p = numpyro.deterministic("p", jax.nn.sigmoid(x @ w + b))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Bernoulli(probs=p), obs=y)


def test_compare_guides_tabulates_cost_and_quality():
    x = jax.random.normal(jax.random.key(8), (300, 2))
    y = x[:, 0] - x[:, 1] + 0.5 * jax.random.normal(jax.random.key(9), (300,)) > 0
    y = y.astype(jnp.int32)
    model = logistic_model
    table = studies.compare_guides(
        jax.random.key(9),
        model,
        {"normal": AutoNormal(model), "laplace": AutoLaplaceApproximation(model)},
        x[:200],
        y[:200],
        x[200:],
        y[200:],
        num_steps={"normal": 1_000, "laplace": 2_000},
        num_samples=200,
    )
    assert list(table.index) == ["normal", "laplace"]
    assert table["num_steps"].tolist() == [1_000, 2_000]
    assert set(table.columns) == {
        "num_steps",
        "num_params",
        "setup_s",
        "run_s",
        "final_loss",
        "test_log_loss",
        "test_auc",
        "mean_pred_sd",
    }
    assert table.loc["normal", "num_params"] == 2 * 3  # a loc and a scale each
    assert table.loc["laplace", "num_params"] == 3  # the MAP point
    assert (table["test_auc"] > 0.85).all()
    assert (table["test_log_loss"] < 0.5).all()
    # Laplace draws come from its Gaussian, not the MAP point; the two
    # Gaussian approximations of this near-Gaussian posterior agree.
    assert (table["mean_pred_sd"] > 0).all()
    assert table.loc["laplace", "test_log_loss"] == pytest.approx(
        table.loc["normal", "test_log_loss"], rel=0.05
    )
    with pytest.raises(ValueError, match="num_steps"):
        studies.compare_guides(
            jax.random.key(0),
            model,
            {"normal": AutoNormal(model)},
            x,
            y,
            x,
            y,
            num_steps={"other": 10},
        )
    with pytest.raises(TypeError, match="guides"):
        studies.compare_guides(
            jax.random.key(0), model, {"bad": None}, x, y, x, y, num_steps=10
        )


# --------------------------------------------------------------------------
# Several processes


def test_free_port_can_be_bound():
    import socket

    port = scaling.free_port()
    assert 0 < port < 65536
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_run_processes_gives_each_process_its_id_and_one_coordinator(tmp_path):
    script = tmp_path / "echo.py"
    script.write_text(
        "import json, os\n"
        "keys = ['PROCESS_ID', 'NUM_PROCESSES', 'COORDINATOR_ADDRESS', 'EXTRA']\n"
        "print(json.dumps({k: os.environ[k] for k in keys}))\n"
    )
    outs = [
        json.loads(out)
        for out in scaling.run_processes(script, 3, env={"EXTRA": "x"}, timeout=60)
    ]
    assert [o["PROCESS_ID"] for o in outs] == ["0", "1", "2"]
    assert {o["NUM_PROCESSES"] for o in outs} == {"3"}
    assert {o["EXTRA"] for o in outs} == {"x"}
    (address,) = {o["COORDINATOR_ADDRESS"] for o in outs}
    host, port = address.split(":")
    assert host == "127.0.0.1" and int(port) > 0


def test_run_processes_passes_the_arguments_to_every_process(tmp_path):
    script = tmp_path / "argv.py"
    script.write_text(
        "import json, os, sys\n"
        "print(json.dumps([os.environ['PROCESS_ID'], *sys.argv[1:]]))\n"
    )
    outs = scaling.run_processes(script, 2, args=["--rows=8", "two words"], timeout=60)
    assert [json.loads(out) for out in outs] == [
        ["0", "--rows=8", "two words"],
        ["1", "--rows=8", "two words"],
    ]
    assert json.loads(scaling.run_processes(script, timeout=60)[0]) == ["0"]


def test_run_processes_reports_a_failure_and_a_timeout(tmp_path):
    failing = tmp_path / "fail.py"
    failing.write_text(
        "import os, sys\n"
        "if os.environ['PROCESS_ID'] == '1':\n"
        "    sys.exit('process one gives up')\n"
    )
    with pytest.raises(RuntimeError, match=r"process 1 (?s:.*)process one gives up"):
        scaling.run_processes(failing, 2, timeout=60)
    slow = tmp_path / "slow.py"
    slow.write_text("import time; time.sleep(30)\n")
    with pytest.raises(RuntimeError, match="longer than"):
        scaling.run_processes(slow, 1, timeout=1)


def test_run_processes_rejects_bad_input(tmp_path):
    script = tmp_path / "ok.py"
    script.write_text("pass\n")
    with pytest.raises(ValueError, match="script"):
        scaling.run_processes(tmp_path / "missing.py")
    with pytest.raises(ValueError, match="num_processes"):
        scaling.run_processes(script, 0)
    with pytest.raises(TypeError, match="env"):
        scaling.run_processes(script, env={"A": 1})
    with pytest.raises(TypeError, match="args"):
        scaling.run_processes(script, args="--rows=8")  # a bare string
    with pytest.raises(TypeError, match="args"):
        scaling.run_processes(script, args=["--rows", 8])
    with pytest.raises(TypeError, match="args"):
        scaling.run_processes(script, args=None)
    with pytest.raises(TypeError, match="args"):
        scaling.run_processes(script, args=(a for a in ["--rows=8"]))  # used up
    with pytest.raises(ValueError, match="timeout"):
        scaling.run_processes(script, timeout=0)


@pytest.mark.slow
def test_run_processes_joins_two_jax_processes(tmp_path):
    # Each process holds its own half of a global array; a compiled sum over
    # all of it sees both halves (JAX does the communication).
    script = tmp_path / "join.py"
    script.write_text(
        textwrap.dedent(
            """
            import os
            os.environ["JAX_PLATFORMS"] = "cpu"
            import jax, jax.numpy as jnp, numpy as np
            from jax.sharding import Mesh, NamedSharding, PartitionSpec
            jax.distributed.initialize(
                coordinator_address=os.environ["COORDINATOR_ADDRESS"],
                num_processes=int(os.environ["NUM_PROCESSES"]),
                process_id=int(os.environ["PROCESS_ID"]),
            )
            mesh = Mesh(np.array(jax.devices()), ("batch",))
            local = np.full(3, 1.0 + jax.process_index(), np.float32)
            x = jax.make_array_from_process_local_data(
                NamedSharding(mesh, PartitionSpec("batch")), local, (6,)
            )
            total = jax.jit(jnp.sum, out_shardings=NamedSharding(mesh, PartitionSpec()))(x)
            print(jax.process_count(), float(total.addressable_data(0)))
            """
        )
    )
    outs = scaling.run_processes(script, 2, timeout=300)
    # 3 x 1.0 from process 0 and 3 x 2.0 from process 1, seen by both (the
    # last line: Gloo, JAX's CPU collectives, prints to stdout too)
    last = [out.strip().splitlines()[-1].split() for out in outs]
    assert last == [["2", "9.0"], ["2", "9.0"]]
