"""Test settings shared by the unit tests and the executed chapters.

The CPU is forced before JAX is imported anywhere, here and in the notebook
kernels nbmake starts (they inherit this process's environment), so results
do not depend on whether the machine running the tests has an accelerator.
"""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ.setdefault("MPLBACKEND", "Agg")

import jax

jax.config.update("jax_platforms", "cpu")
