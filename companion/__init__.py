"""Companion package of *Scaling Probabilistic Models with Variational Inference*.

Every chapter of the book imports from here; each public function's docstring
names the chapter that introduces it. One concept per module:

- :mod:`companion.theory` — closed forms for the conjugate Gaussian model:
  posterior, evidence, ELBO, KL (chapters 1 and 2).
- :mod:`companion.training` — a fast SVI training loop with validation,
  early stopping and a progress bar (chapters 3, 5, 8).
- :mod:`companion.gamma` — the talk's toy example, recovering the
  concentration of a Gamma distribution (chapter 3).
- :mod:`companion.mcmc` — NUTS runs returned as ArviZ ``InferenceData``
  (chapters 3, 7).
"""

from companion import gamma, mcmc, theory, training
from companion.training import FitResult, fit

__all__ = ["FitResult", "fit", "gamma", "mcmc", "theory", "training"]
__version__ = "0.1.0"
