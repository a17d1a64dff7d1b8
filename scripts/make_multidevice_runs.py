"""Make chapter 9's runs on several devices and processes: the worker
(``scripts/multidevice_worker.py``) as one process with four simulated CPU
devices, as two processes joined by `jax.distributed`, the same fit on one
device in this process as the reference, and the four-device run again on
the compilation cache its first run filled.

Run from anywhere::

    python scripts/make_multidevice_runs.py [--output data/multidevice_runs.json]

About 25 s on a 2-core CPU: four fresh processes, each importing JAX and
compiling its programs, which is why chapter 9 loads the results instead of
starting the processes itself. The two worker runs and the reference run at
the same time (they are independent), then the four-device run again. The
file holds the settings, the machine and library versions, what each worker
printed (devices, the rows of each batch its devices got, set-up seconds,
the process's CPU seconds, losses and parameters), the reference's losses
and parameters, and the size of the cache the four-device run wrote (and again after the
re-run, which should have written nothing). The script, its reference fit
and the workers run with ``PYTHONHASHSEED=0`` (the script restarts itself
with it if need be): NumPyro's ``Trace_ELBO`` orders its terms by a set of
site names, so with random hash seeds the processes would build different
programs and the re-run would miss the cache.
``tests/test_multidevice_runs.py`` checks the file against this script's
settings and runs the script's runs at a tiny size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import numpy as np
import optax
from jax.experimental.compilation_cache import compilation_cache
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from companion import hierarchical, scaling, streaming
from companion._provenance import machine

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "data" / "multidevice_runs.json"
WORKER = ROOT / "scripts" / "multidevice_worker.py"
# NumPyro's Trace_ELBO orders its terms by a set of site names, which follows
# the hash seed: one seed for this process and the workers, so that they all
# build the same programs (and the re-run finds them in the cache).
HASH_SEED = "0"

# Chapter 9's settings: the worker's defaults, the hierarchical model of
# chapter 8 on 20,000 rows in 50 groups, batches of 400, two epochs.
SETTINGS = {
    "rows": 20_000,
    "groups": 50,
    "batch": 400,
    "epochs": 2,
    "devices": 4,  # simulated CPU devices of the one-process run
    "processes": 2,  # processes of the multi-process run, one device each
}


def worker_args(settings: dict) -> list[str]:
    return [
        f"--{name}={settings[name]}" for name in ("rows", "groups", "batch", "epochs")
    ]


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])  # JAX may print first


def reference_fit(settings: dict) -> dict:
    """The worker's fit on one device of this process, without a mesh."""
    data = hierarchical.simulate(
        jax.random.key(0), settings["rows"], settings["groups"]
    )
    model = hierarchical.model
    with jax.default_device(jax.devices("cpu")[0]):  # the workers run on CPUs
        svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
        result = streaming.fit(
            svi,
            jax.random.key(1),
            (data.x, data.group, data.y),
            batch_size=settings["batch"],
            num_epochs=settings["epochs"],
            num_groups=settings["groups"],
            progress_bar=False,
        )
    return {
        "setup_s": result.setup_seconds,
        "losses": result.losses.tolist(),
        "params": {k: np.asarray(v).tolist() for k, v in result.params.items()},
    }


def cache_size(folder: Path) -> dict:
    """Files in a compilation cache folder and their megabytes."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {"files": len(files), "mb": sum(p.stat().st_size for p in files) / 1e6}


def multidevice_runs(settings: dict, worker: Path = WORKER) -> dict:
    """The runs of chapter 9, in the order the chapter tells them: the
    worker on several devices of one process (on an empty compilation cache)
    and as several processes of one device each, with the reference fit in
    this process meanwhile; then the several-device run again, on the cache
    its first run filled."""
    args = worker_args(settings)
    with tempfile.TemporaryDirectory() as cache_dir:
        several_devices = {
            "JAX_PLATFORMS": "cpu",
            "PYTHONHASHSEED": HASH_SEED,
            "XLA_FLAGS": "--xla_force_host_platform_device_count="
            f"{settings['devices']}",
            "JAX_COMPILATION_CACHE_DIR": cache_dir,  # empty, then filled
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        }
        one_device = {
            "JAX_PLATFORMS": "cpu",
            "PYTHONHASHSEED": HASH_SEED,
            "XLA_FLAGS": "--xla_force_host_platform_device_count=1",
            "JAX_ENABLE_COMPILATION_CACHE": "false",
        }

        def run(num_processes: int, env: dict) -> list[dict]:
            outputs = scaling.run_processes(worker, num_processes, args=args, env=env)
            return [last_json(out) for out in outputs]

        # The three runs are independent: start both worker runs, fit here
        # meanwhile.
        with ThreadPoolExecutor() as pool:
            first = pool.submit(run, 1, several_devices)
            several = pool.submit(run, settings["processes"], one_device)
            reference = reference_fit(settings)
            (devices,) = first.result()
            processes = several.result()
        cache = cache_size(Path(cache_dir))
        (devices_again,) = run(1, several_devices)
        # every program of the re-run was read back: nothing new was written
        cache["files_after_rerun"] = cache_size(Path(cache_dir))["files"]
    return {
        "devices": devices,
        "processes": processes,
        "reference": reference,
        "cache": cache,
        "devices_again": devices_again,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    if os.environ.get("PYTHONHASHSEED") != HASH_SEED:  # set before Python starts
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {**os.environ, "PYTHONHASHSEED": HASH_SEED},
        )
    # The reference compiles afresh, as the workers do: no programs read back
    # from the persistent cache that companion sets up.
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()
    start = time.perf_counter()
    runs = multidevice_runs(SETTINGS)
    stored = {
        "settings": SETTINGS,
        "machine": {
            **machine(python_hash_seed=os.environ.get("PYTHONHASHSEED")),
            "runs_s": time.perf_counter() - start,
        },
        **runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(stored, indent=1) + "\n")
    print(f"wrote {args.output} in {stored['machine']['runs_s']:.0f} s")


if __name__ == "__main__":
    main()
