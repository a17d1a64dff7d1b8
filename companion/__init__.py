"""Companion package of *Scaling Probabilistic Models with Variational Inference*.

Every chapter of the book imports from here; each public function's docstring
names the chapter that introduces it. One concept per module:

- :mod:`companion.theory` — closed forms for the conjugate Gaussian model:
  posterior, evidence, ELBO (chapters 1 and 2).
- :mod:`companion.gaussians` — KL divergences between Gaussians and the
  mean-field optimum of a correlated one (chapter 2).
- :mod:`companion.gradients` — reparameterised and score-function
  estimators of the ELBO's gradient, and the exact variance (chapter 2).
- :mod:`companion.data` — two moons, splits and grids (chapters 4-10).
- :mod:`companion.bnn` — the Flax nnx MLP, its NumPyro model and priors,
  a layer-wise guide (chapters 4-10).
- :mod:`companion.predictive` — batched posterior predictive (chapters 6, 9, 10).
- :mod:`companion.metrics` — AUC and log loss over posterior draws,
  calibration (chapters 6, 7, 9, 10).
- :mod:`companion.training` — a fast SVI training loop with validation,
  early stopping and a progress bar (chapters 3, 5, 9).
- :mod:`companion.gamma` — the talk's toy example, recovering the
  concentration of a Gamma distribution (chapters 3, 7).
- :mod:`companion.mcmc` — NUTS runs returned as ArviZ ``InferenceData``,
  and timings that keep compilation apart (chapters 3, 7-10).
- :mod:`companion.convert` — draws from a guide as ``InferenceData``, and
  ``InferenceData`` back to flat draws (chapter 7).
- :mod:`companion.studies` — many fits, one table: the Gamma recovery study
  and a comparison of guides (chapters 3, 10); the only module that imports
  pandas.
- :mod:`companion.scaling` — mini-batch models, data-parallel SVI over
  several devices, several processes (chapters 7, 9).
- :mod:`companion.streaming` — SVI on data that stay on the host, streamed
  to one device, a mesh of devices or several processes (chapters 8, 9).
- :mod:`companion.hierarchical` — a hierarchical regression with an exact
  posterior at any number of rows (chapter 8).
- :mod:`companion.laplace` — the linearised (GLM) predictive of a Laplace
  approximation (chapter 10).
- :mod:`companion.plotting` — listings of the package's source, the
  two-moons scatter plot and a moving average (chapters 2-6, 8-10).
"""

import importlib

from companion import _cache

# Before anything compiles: every process that imports the package reads and
# writes compiled programs in one on-disk cache (see companion/_cache.py).
_cache.configure()

# Submodules load when first used (PEP 562), so that a process which needs one
# of them (a worker of chapter 9 imports hierarchical and streaming) does not
# pay for pandas, SciPy's statistics and ArviZ: ``import companion`` alone
# takes a fraction of a second.
_SUBMODULES = {
    "bnn",
    "convert",
    "data",
    "gamma",
    "gaussians",
    "gradients",
    "hierarchical",
    "laplace",
    "mcmc",
    "metrics",
    "plotting",
    "predictive",
    "scaling",
    "streaming",
    "studies",
    "theory",
    "training",
}
_SHORTCUTS = {
    "MLP": "bnn",
    "build_guide": "bnn",
    "build_model": "bnn",
    "make_moons": "data",
    "train_val_test_split": "data",
    "posterior_predictive": "predictive",
    "data_parallel_fit": "scaling",
    "subsample_plate": "scaling",
    "FitResult": "training",
    "fit": "training",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"companion.{name}")
    if name in _SHORTCUTS:
        return getattr(importlib.import_module(f"companion.{_SHORTCUTS[name]}"), name)
    raise AttributeError(f"module 'companion' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "MLP",
    "FitResult",
    "bnn",
    "build_guide",
    "build_model",
    "convert",
    "data",
    "data_parallel_fit",
    "fit",
    "gamma",
    "gaussians",
    "gradients",
    "hierarchical",
    "laplace",
    "make_moons",
    "mcmc",
    "metrics",
    "plotting",
    "posterior_predictive",
    "predictive",
    "scaling",
    "streaming",
    "studies",
    "subsample_plate",
    "theory",
    "train_val_test_split",
    "training",
]
__version__ = "0.1.0"
