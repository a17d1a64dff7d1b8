"""Chapter 9's worker: the hierarchical model of chapter 8 fitted by
`streaming.fit` over a mesh of every device it can see, across processes
when started as one of several (by `scaling.run_processes`, or one per host).

    python scripts/multidevice_worker.py [--rows 20000] [--groups 50]
        [--batch 400] [--epochs 2]

It prints one line of JSON: the number of devices, the rows of each batch
that its own devices got, the fit's set-up seconds, the CPU time of the
whole process, the losses and the parameters. ``scripts/make_multidevice_runs.py``
runs it on four simulated devices and as two processes.
"""

import argparse
import json
import os
import time

import jax

if int(os.environ.get("NUM_PROCESSES", "1")) > 1:  # one of several processes
    jax.distributed.initialize(
        coordinator_address=os.environ["COORDINATOR_ADDRESS"],  # process 0's host:port
        num_processes=int(os.environ["NUM_PROCESSES"]),
        process_id=int(os.environ["PROCESS_ID"]),
    )

import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal

from companion import hierarchical, streaming

parser = argparse.ArgumentParser()
parser.add_argument("--rows", type=int, default=20_000)
parser.add_argument("--groups", type=int, default=50)
parser.add_argument("--batch", type=int, default=400)
parser.add_argument("--epochs", type=int, default=2)
args = parser.parse_args()

# Every process sees the same rows (in production a shared np.memmap file,
# here simulated from the same key) and gathers only its share of each batch.
data = hierarchical.simulate(jax.random.key(0), args.rows, args.groups)
model = hierarchical.model
svi = SVI(model, AutoNormal(model), optax.adam(0.05), Trace_ELBO())
mesh = Mesh(np.array(jax.devices()), ("batch",))  # the devices of all processes
result = streaming.fit(
    svi,
    jax.random.key(1),
    (data.x, data.group, data.y),
    batch_size=args.batch,
    num_epochs=args.epochs,
    num_groups=args.groups,
    mesh=mesh,
    progress_bar=False,
)
mine = NamedSharding(mesh, PartitionSpec("batch")).addressable_devices_indices_map(
    (args.batch,)
)
print(
    json.dumps(
        {
            "devices": jax.device_count(),
            "rows": [[rows.start, rows.stop] for (rows,) in mine.values()],  # per batch
            "setup_s": result.setup_seconds,
            "cpu_s": time.process_time(),
            "losses": result.losses.tolist(),
            "params": {k: np.asarray(v).tolist() for k, v in result.params.items()},
        }
    )
)
