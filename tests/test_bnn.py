"""Tests of companion.bnn: the MLP, the lifted model (sites, priors, the
logits likelihood, prior predictive, input checks), the layer-wise guide and
a short fit."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from flax import nnx
from numpyro.infer import SVI, Predictive, Trace_ELBO
from sklearn.metrics import roc_auc_score

from companion import bnn, data

SITES = {
    "nn/layers.0.kernel": (2, 4),
    "nn/layers.0.bias": (4,),
    "nn/layers.1.kernel": (4, 3),
    "nn/layers.1.bias": (3,),
    "nn/layers.2.kernel": (3, 1),
    "nn/layers.2.bias": (1,),
}


@pytest.fixture(scope="module")
def mlp():
    return bnn.MLP(2, 1, [4, 3], rngs=nnx.Rngs(jax.random.key(0)))


def get_trace(fn, *args, seed=0):
    return numpyro.handlers.trace(numpyro.handlers.seed(fn, seed)).get_trace(*args)


def test_mlp_is_the_talks_network(mlp):
    assert [(layer.in_features, layer.out_features) for layer in mlp.layers] == [
        (2, 4),
        (4, 3),
        (3, 1),
    ]
    x = jax.random.normal(jax.random.key(1), (7, 2))
    out = mlp(x)
    assert out.shape == (7, 1)
    # tanh hidden layers, a linear output (logits), by hand
    h = x
    for layer in mlp.layers[:-1]:
        h = jnp.tanh(h @ layer.kernel[...] + layer.bias[...])
    last = mlp.layers[-1]
    expected = h @ last.kernel[...] + last.bias[...]
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert bool(jnp.any(out < 0)) or bool(jnp.any(out > 1))  # not probabilities


@pytest.mark.parametrize(
    ("args", "match"),
    [((0, 1, [4]), "din"), ((2, 0, [4]), "dout"), ((2, 1, [4, 0]), "hidden_layers")],
)
def test_mlp_rejects_bad_sizes(args, match):
    with pytest.raises(ValueError, match=match):
        bnn.MLP(*args, rngs=nnx.Rngs(jax.random.key(0)))


def test_model_sites_shapes_and_priors(mlp):
    model = bnn.build_model(mlp, prior_scale=2.0)
    x = jnp.zeros((5, 2))
    y = jnp.array([0, 1, 1, 0, 1])
    trace = get_trace(model, x, y)
    latent = {
        name: site["value"].shape
        for name, site in trace.items()
        if site["type"] == "sample" and not site["is_observed"]
    }
    assert latent == SITES
    assert bnn.param_shapes(mlp) == SITES

    assert trace["p"]["type"] == "deterministic" and trace["p"]["value"].shape == (5,)
    assert trace["y"]["is_observed"]
    np.testing.assert_array_equal(trace["y"]["value"], y)
    assert isinstance(trace["y"]["fn"], dist.BernoulliLogits)
    assert trace["data"]["type"] == "plate" and trace["data"]["args"][0] == 5
    # random_nnx_module wraps the prior as Independent(Expanded(prior))
    kernel = trace["nn/layers.0.kernel"]["fn"].base_dist.base_dist
    bias = trace["nn/layers.0.bias"]["fn"].base_dist.base_dist
    assert isinstance(kernel, dist.SoftLaplace) and float(kernel.scale) == 2.0
    assert isinstance(bias, dist.Normal) and float(bias.scale) == 2.0
    # p = sigmoid(logits), and the likelihood is the Bernoulli at p:
    # log p(y | θ) = Σ y log p + (1 - y) log(1 - p)
    p = trace["p"]["value"]
    np.testing.assert_allclose(p, jax.nn.sigmoid(trace["y"]["fn"].logits), rtol=1e-6)
    np.testing.assert_allclose(
        trace["y"]["fn"].log_prob(y).sum(),
        jnp.sum(y * jnp.log(p) + (1 - y) * jnp.log1p(-p)),
        rtol=1e-5,
    )


@pytest.mark.parametrize("subsample_size", [None, 4])
def test_saturated_wrong_predictions_still_have_a_gradient(mlp, subsample_size):
    # Every weight 0 but the output bias b = 20, and every label 0: the
    # network is confidently wrong everywhere. With the logits likelihood
    # log p(y | θ) = -n softplus(b) ≈ -20 n and d/db = -n sigmoid(b) ≈ -n;
    # through probs = sigmoid(b), which rounds to 1 and NumPyro clamps to
    # 1 - eps (float32), the log-likelihood is stuck at n log(eps), gradient 0.
    n = 8
    x = jax.random.normal(jax.random.key(4), (n, 2))
    y = jnp.zeros(n, dtype=jnp.int32)
    # (a mini-batch of b rows is scaled by n / b: the same -n softplus(b))
    model = bnn.build_model(mlp, subsample_size=subsample_size)
    values = {site: jnp.zeros(shape) for site, shape in SITES.items()}
    values["nn/layers.1.bias"] = jnp.ones(3)  # hidden units at tanh(1)

    def log_density(output_bias, output_kernel):
        params = values | {
            "nn/layers.2.bias": output_bias,
            "nn/layers.2.kernel": output_kernel,
        }
        seeded = numpyro.handlers.seed(model, 0)
        return numpyro.infer.util.log_density(seeded, (x, y), {}, params)[0]

    def log_prior(output_bias, output_kernel):
        params = values | {
            "nn/layers.2.bias": output_bias,
            "nn/layers.2.kernel": output_kernel,
        }
        return sum(
            (dist.Normal if "bias" in site else dist.SoftLaplace)(0.0, 1.0)
            .log_prob(value)
            .sum()
            for site, value in params.items()
        )

    bias, kernel = jnp.array([20.0]), jnp.zeros((3, 1))
    # the likelihood's share: the model's log density minus the prior
    log_lik = log_density(bias, kernel) - log_prior(bias, kernel)
    # -softplus(20) per point, not the clamped log(eps) ≈ -15.9
    np.testing.assert_allclose(log_lik, -n * 20.0, rtol=1e-4)
    grads = jax.grad(log_density, argnums=(0, 1))(bias, kernel)
    prior_grads = jax.grad(log_prior, argnums=(0, 1))(bias, kernel)
    np.testing.assert_allclose(grads[0] - prior_grads[0], [-n], rtol=1e-4)
    np.testing.assert_allclose(
        grads[1] - prior_grads[1],
        jnp.full((3, 1), -n * jnp.tanh(1.0)),
        rtol=1e-4,
    )


def test_param_shapes_inside_a_model_leaves_no_sites_behind(mlp):
    def outer():
        assert bnn.param_shapes(mlp) == SITES
        numpyro.sample("z", dist.Normal(0.0, 1.0))

    assert list(get_trace(outer)) == ["z"]


def test_prior_predictive_range_symmetry_and_scale(mlp):
    x = jax.random.normal(jax.random.key(2), (50, 2))
    shares = {}
    for scale in (0.3, 3.0):
        model = bnn.build_model(mlp, prior_scale=scale)
        predictive = Predictive(model, num_samples=1000)
        prior = jax.jit(predictive)(jax.random.key(3), x)
        p, y = prior["p"], prior["y"]
        assert p.shape == (1000, 50) and y.shape == (1000, 50)
        assert bool(jnp.all((p >= 0) & (p <= 1)))
        assert set(np.unique(y).tolist()) <= {0, 1}
        # symmetric priors: p and 1 - p are equally likely, so E[p] = 1/2
        assert abs(float(p.mean()) - 0.5) < 0.03
        shares[scale] = float(jnp.mean((p > 0.05) & (p < 0.95)))
    # wider priors push the prior predictive probabilities towards 0 and 1
    assert shares[0.3] > shares[3.0] + 0.2


@pytest.mark.parametrize(
    ("x", "y", "match"),
    [
        (jnp.zeros((4, 3)), None, r"x must be a 2-D array of shape \(n, 2\)"),
        (jnp.zeros(4), None, "x must be a 2-D"),
        (jnp.zeros((4, 2)), jnp.array([0, 1, 1]), "y must be a 1-D array"),
        (jnp.zeros((4, 2)), jnp.array([0, 1, 2, 1]), r"labels in \{0, 1\}"),
        (jnp.zeros((4, 2)), jnp.array([0.0, 0.5, 1.0, 1.0]), r"labels in \{0, 1\}"),
    ],
)
def test_model_and_guide_reject_bad_inputs(mlp, x, y, match):
    for fn in (bnn.build_model(mlp), bnn.build_guide(mlp)):
        with pytest.raises(ValueError, match=match):
            get_trace(fn, x, y)


def test_build_model_rejects_bad_arguments(mlp):
    with pytest.raises(ValueError, match="prior_scale"):
        bnn.build_model(mlp, prior_scale=0.0)
    with pytest.raises(ValueError, match="dout"):
        bnn.build_model(bnn.MLP(2, 2, [3], rngs=nnx.Rngs(jax.random.key(0))))
    with pytest.raises(TypeError, match="mlp"):
        bnn.build_model(lambda x: x)
    with pytest.raises(ValueError, match="subsample_size"):
        bnn.build_model(mlp, subsample_size=0)
    with pytest.raises(TypeError, match="replace"):
        bnn.build_model(mlp, subsample_size=5, replace="yes")


def test_guide_matches_the_model_sites_and_initial_values(mlp):
    guide = bnn.build_guide(mlp, loc_amplitude=0.5, scale_amplitude=0.02)
    trace = get_trace(guide, jnp.zeros((3, 2)))
    samples = {n: s["value"].shape for n, s in trace.items() if s["type"] == "sample"}
    assert samples == SITES
    for site, shape in SITES.items():
        assert trace[f"{site}_loc"]["value"].shape == shape
        np.testing.assert_allclose(trace[f"{site}_scale"]["value"], 0.02)
        assert trace[site]["fn"].event_shape == shape
    locs = jnp.concatenate([trace[f"{s}_loc"]["value"].ravel() for s in SITES])
    assert 0.3 < float(locs.std()) < 0.7  # 0.5 × standard normal, 27 values
    shared = get_trace(bnn.build_guide(mlp, shared_scale=True), jnp.zeros((3, 2)))
    assert shared["nn/layers.1.kernel_scale"]["value"].shape == (1, 1)
    assert shared["nn/layers.1.kernel"]["value"].shape == (4, 3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"loc_shape": (2, 0)}, "loc_shape"),
        ({"scale_shape": (3,)}, "broadcast"),
        ({"scale_amplitude": 0.0}, "scale_amplitude"),
        ({"loc_amplitude": -1.0}, "loc_amplitude"),
        ({"scale_name": "w_loc"}, "must differ"),
        ({"event_dim": 3}, "event_dim"),
    ],
)
def test_layer_guide_rejects_bad_arguments(kwargs, match):
    arguments = {
        "loc_shape": (2, 4),
        "loc_amplitude": 0.1,
        "scale_shape": (2, 4),
        "scale_amplitude": 0.1,
        "loc_name": "w_loc",
        "scale_name": "w_scale",
        "layer_name": "w",
    } | kwargs
    with pytest.raises(ValueError, match=match):
        get_trace(lambda: bnn.layer_guide(**arguments))


def test_short_fit_separates_the_moons(mlp):
    key_data, key_split, key_fit, key_pred = jax.random.split(jax.random.key(0), 4)
    x, y = data.make_moons(key_data, 600, 0.2)
    split = data.train_val_test_split(key_split, x, y)
    model, guide = bnn.build_model(mlp), bnn.build_guide(mlp)
    svi = SVI(model, guide, numpyro.optim.Adam(0.01), Trace_ELBO())
    # the guide is a pure function of its key, so its init compiles (faster
    # than running it op by op)
    state = jax.jit(svi.init)(key_fit, split.x_train, split.y_train)
    result = svi.run(
        key_fit,
        2_000,
        split.x_train,
        split.y_train,
        progress_bar=False,
        init_state=state,
    )
    assert float(result.losses[-100:].mean()) < 0.5 * float(result.losses[:100].mean())
    predictive = Predictive(
        model, guide=guide, params=result.params, num_samples=200, return_sites=["p"]
    )
    p = jax.jit(predictive)(key_pred, split.x_test)["p"]
    test_auc = roc_auc_score(np.asarray(split.y_test), np.asarray(p.mean(0)))
    assert test_auc > 0.9, test_auc
