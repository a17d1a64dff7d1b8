"""A small streamed fit of the hierarchical model, run as its own process by
tests/test_streaming.py: on one device, on several (simulated) devices of one
process, or as one of several processes joined by `jax.distributed`.

    python tests/streaming_worker.py OUT.json [--devices N]
        [--process-id P --num-processes K --port PORT]

Each process writes the losses and parameters as JSON, and the rows of each
batch that it gathered.
"""

import argparse
import json
import os
import sys

parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--devices", type=int, default=1)
parser.add_argument("--process-id", type=int, default=0)
parser.add_argument("--num-processes", type=int, default=1)
parser.add_argument("--port", type=int, default=0)
args = parser.parse_args()

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={args.devices}"

import jax  # noqa: E402

if args.num_processes > 1:
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{args.port}",
        num_processes=args.num_processes,
        process_id=args.process_id,
        local_device_ids=list(range(args.devices)),
    )

import numpy as np  # noqa: E402
import optax  # noqa: E402
from numpyro.infer import SVI, Trace_ELBO  # noqa: E402
from numpyro.infer.autoguide import AutoNormal  # noqa: E402

from companion import hierarchical, streaming  # noqa: E402

NUM_ROWS, NUM_GROUPS, BATCH, EPOCHS = 4_000, 20, 200, 3

data = hierarchical.simulate(jax.random.key(0), NUM_ROWS, NUM_GROUPS)
svi = SVI(
    hierarchical.model, AutoNormal(hierarchical.model), optax.adam(0.05), Trace_ELBO()
)
mesh = (
    jax.sharding.Mesh(np.array(jax.devices()), ("batch",))
    if jax.device_count() > 1
    else None
)
result = streaming.fit(
    svi,
    jax.random.key(1),
    (data.x, data.group, data.y),
    batch_size=BATCH,
    num_epochs=EPOCHS,
    num_groups=NUM_GROUPS,
    mesh=mesh,
    progress_bar=False,
    steps_per_chunk=7,
)
rows = streaming._Feed((data.x,), BATCH, mesh).rows  # this process's rows
with open(args.out, "w") as f:
    json.dump(
        {
            "rows": [rows.start, rows.stop],
            "device_count": jax.device_count(),
            "process_count": jax.process_count(),
            "losses": result.losses.tolist(),
            "params": {k: np.asarray(v).tolist() for k, v in result.params.items()},
        },
        f,
    )
sys.exit(0)
