"""Where a stored result was made: the machine and library versions that the
scripts in ``scripts/`` write beside their results (``data/*.json``), so that a
chapter loading a stored timing can say what it was measured on."""

from __future__ import annotations

import os
import platform
import time
from typing import Any

import jax
import numpyro


def machine(**extra: Any) -> dict[str, Any]:
    """Platform, CPU count, JAX backend and devices, Python, JAX and NumPyro
    versions, then any ``extra`` entries (an XLA flag, the hash seed), then
    today's date."""
    return {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "backend": jax.default_backend(),
        "devices": [d.device_kind for d in jax.devices()],
        "python": platform.python_version(),
        "jax": jax.__version__,
        "numpyro": numpyro.__version__,
        **extra,
        "date": time.strftime("%Y-%m-%d"),
    }
