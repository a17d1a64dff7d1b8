"""companion._provenance.machine: what the scripts in scripts/ record beside
their results."""

import json
import os

import jax

from companion._provenance import machine


def test_the_scripts_record_where_they_ran():
    record = machine(python_hash_seed="0")
    assert record["backend"] == jax.default_backend()
    assert record["cpus"] == os.cpu_count() and record["devices"]
    assert record["jax"] == jax.__version__
    assert record["python_hash_seed"] == "0"
    assert list(record)[-1] == "date"  # the extra entries come before it
    json.dumps(record)  # stored as JSON beside the results
