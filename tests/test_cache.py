"""The persistent compilation cache that importing companion sets up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import pytest

from companion import _cache

ROOT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, os, jax, jax.monitoring
events = {"hits": 0, "misses": 0}
def listen(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
    elif event == "/jax/compilation_cache/cache_misses":
        events["misses"] += 1
jax.monitoring.register_event_listener(listen)
import companion, jax.numpy as jnp
jax.jit(lambda v: jnp.sin(v) @ v.T + 1.0)(jnp.ones((3, 3))).block_until_ready()
print(json.dumps({
    "dir": jax.config.jax_compilation_cache_dir,
    "min_s": jax.config.jax_persistent_cache_min_compile_time_secs,
    "max_size": jax.config.jax_compilation_cache_max_size,
    "xla_flags": os.environ.get("XLA_FLAGS"),
    "devices": jax.device_count(),
    **events,
}))
"""


def probe(**env: str) -> dict:
    """Import companion in a fresh process, compile one program, report."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k
        not in {
            "JAX_COMPILATION_CACHE_DIR",
            "COMPANION_JAX_CACHE",
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS",
            "JAX_COMPILATION_CACHE_MAX_SIZE",
            "XLA_FLAGS",
            "COMPANION_FAST_COMPILE",
        }
    }
    out = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env={**clean, **env, "JAX_PLATFORMS": "cpu"},
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_dir_is_the_checkouts_ignored_folder():
    assert _cache.default_dir() == ROOT / ".jax_cache"
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert "/.jax_cache/" in ignored


def test_default_dir_outside_a_checkout_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.setattr(_cache, "_ROOT", tmp_path)  # no pyproject.toml there
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _cache.default_dir() == tmp_path / "xdg" / "companion-jax"


@pytest.mark.slow
def test_a_second_process_reads_the_programs_back(tmp_path):
    first = probe(JAX_COMPILATION_CACHE_DIR=str(tmp_path))
    assert first["dir"] == str(tmp_path)  # a folder named for JAX is kept
    assert first["min_s"] == 0.0  # small programs are stored too
    assert first["max_size"] == -1  # no cap: a capped cache scans itself per write
    assert first["misses"] >= 1 and any(tmp_path.iterdir())
    second = probe(JAX_COMPILATION_CACHE_DIR=str(tmp_path))
    assert second["misses"] == 0 and second["hits"] == first["misses"]


@pytest.mark.slow
def test_switched_off_and_thresholds_kept(tmp_path):
    off = probe(COMPANION_JAX_CACHE="off")
    assert off["dir"] is None and off["hits"] == off["misses"] == 0
    kept = probe(
        JAX_COMPILATION_CACHE_DIR=str(tmp_path),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="5",
        JAX_COMPILATION_CACHE_MAX_SIZE="1000000",
    )
    assert kept["min_s"] == 5.0 and kept["max_size"] == 1_000_000


@pytest.mark.slow
def test_fast_cpu_compile_flag_added_before_the_backend_starts(tmp_path):
    cache = str(tmp_path)
    default = probe(JAX_COMPILATION_CACHE_DIR=cache)
    assert default["xla_flags"] == _cache.FAST_COMPILE_FLAG
    # the reader's own flags are kept (chapter 9's workers ask for 4 devices)
    four = probe(
        JAX_COMPILATION_CACHE_DIR=cache,
        XLA_FLAGS="--xla_force_host_platform_device_count=4",
    )
    assert four["devices"] == 4
    assert four["xla_flags"] == (
        f"--xla_force_host_platform_device_count=4 {_cache.FAST_COMPILE_FLAG}"
    )
    # a reader who names the flag, or switches the setting off, keeps XLA's choice
    named = "--xla_cpu_use_fusion_emitters=true"
    assert probe(JAX_COMPILATION_CACHE_DIR=cache, XLA_FLAGS=named)["xla_flags"] == named
    off = probe(JAX_COMPILATION_CACHE_DIR=cache, COMPANION_FAST_COMPILE="off")
    assert off["xla_flags"] is None


def test_fast_cpu_compile_does_nothing_once_the_backend_runs(monkeypatch):
    jax.devices()  # this process's backend is up: XLA has read its flags
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("COMPANION_FAST_COMPILE", raising=False)
    assert _cache.fast_cpu_compile() is False
    assert "XLA_FLAGS" not in os.environ


def test_fast_cpu_compile_only_on_the_jaxlib_it_was_measured_on(monkeypatch):
    from jax._src import xla_bridge

    monkeypatch.setattr(xla_bridge, "backends_are_initialized", lambda: False)
    monkeypatch.delenv("COMPANION_FAST_COMPILE", raising=False)
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/dev/null")
    monkeypatch.setattr("jaxlib.version.__version__", "0.11.0")
    assert _cache.fast_cpu_compile() is False
    assert os.environ["XLA_FLAGS"] == "--xla_dump_to=/dev/null"
    monkeypatch.setattr("jaxlib.version.__version__", "0.10.2")
    assert _cache.fast_cpu_compile() is True
    assert os.environ["XLA_FLAGS"] == (
        f"--xla_dump_to=/dev/null {_cache.FAST_COMPILE_FLAG}"
    )


_BNN_STEP = """
import hashlib, sys, jax, optax
from flax import nnx
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from companion import bnn, data
x, y = data.make_moons(jax.random.key(0), 50, noise=0.2)
mlp = bnn.MLP(din=2, dout=1, hidden_layers=[4, 3], rngs=nnx.Rngs(0))
model = bnn.build_model(mlp)
svi = SVI(model, AutoNormal(model), optax.adam(0.01), Trace_ELBO())
state = svi.init(jax.random.key(1), x, y)
text = jax.jit(svi.update).lower(state, x, y).as_text()
print(hashlib.sha256(text.encode()).hexdigest())
"""


def _bnn_step_digest(hash_seed: str, cache: Path) -> str:
    env = {
        **os.environ,
        "PYTHONHASHSEED": hash_seed,
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PLATFORMS": "cpu",
    }
    out = subprocess.run(
        [sys.executable, "-c", _BNN_STEP],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return out.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_fixed_hash_seed_gives_every_process_the_same_svi_step(tmp_path):
    # With one hash seed, two processes build the same program for the
    # network's SVI step, so the second finds the first's in the cache. (With
    # different seeds NumPyro 0.22's Trace_ELBO orders the sites differently.)
    first = _bnn_step_digest("0", tmp_path)
    assert _bnn_step_digest("0", tmp_path) == first
    settings = (ROOT / "_environment").read_text().splitlines()
    assert "PYTHONHASHSEED=0" in settings  # renders start kernels that way
    assert os.environ.get("PYTHONHASHSEED") == "0"  # and so do the tests (conftest)
