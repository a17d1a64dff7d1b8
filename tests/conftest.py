"""Test settings shared by the unit tests and the executed chapters.

The CPU is forced before JAX is imported anywhere, here and in the notebook
kernels nbmake starts (they inherit this process's environment), so results
do not depend on whether the machine running the tests has an accelerator;
the kernels also get a fixed hash seed.
"""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("MPLBACKEND", "Agg")
# The chapters' kernels start with one hash seed: NumPyro's Trace_ELBO orders
# its sites by a set of names, so a random seed makes each kernel compile a
# different program for the same model (see companion/_cache.py).
os.environ.setdefault("PYTHONHASHSEED", "0")

import jax

jax.config.update("jax_platforms", "cpu")
