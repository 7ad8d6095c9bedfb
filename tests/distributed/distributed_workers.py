"""Starts real local worker processes with a TF_CONFIG over localhost ports."""

import json
import os
import subprocess
import sys

from twotower.bench.distributed import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_main.py")

# A tiny model whose every negative source keeps cross-replica state: cross-replica
# in-batch negatives with streaming logQ (frequency estimator) and a CLRec queue.
TINY = [
    "training.epochs=3",
    "training.batch_size=8",
    "model.hidden_units=[16]",
    "model.output_dim=8",
    "model.embedding_dim=8",
    "negatives.queue_size=32",
    "negatives.in_batch_correction=streaming",
    "negatives.frequency_buckets=1009",
    "negatives.cross_replica_in_batch=true",
    "training.shard=data",
    "training.backup_every_steps=2",
    "training.cluster_timeout_seconds=60",
]


def tf_config(ports: list[int], index: int) -> str:
    workers = [f"localhost:{p}" for p in ports]
    return json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})


def start(
    args: list[str], tf_config_value: str | None, env: dict[str, str] | None = None, log=None
) -> subprocess.Popen:
    """`python tests/distributed/worker_main.py ARGS` with TF_CONFIG set (or unset)."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    environ.update({"PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2", "TF_USE_LEGACY_KERAS": "1"})
    environ.update(env or {})
    if tf_config_value is not None:
        environ["TF_CONFIG"] = tf_config_value
    return subprocess.Popen(
        [sys.executable, WORKER, *args],
        cwd=ROOT,
        env=environ,
        stdout=log or subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def start_cluster(args_of, num_workers: int = 2, env=None, logs=None) -> list[subprocess.Popen]:
    """`num_workers` workers; `args_of(index)` gives each one's arguments."""
    ports = free_ports(num_workers)
    return [
        start(args_of(i), tf_config(ports, i), env, logs[i] if logs else None)
        for i in range(num_workers)
    ]


def wait_all(processes: list[subprocess.Popen], timeout: float = 150) -> list[str]:
    outputs = []
    for p in processes:
        out, _ = p.communicate(timeout=timeout)
        outputs.append(out or "")
    for p, out in zip(processes, outputs, strict=True):
        assert p.returncode == 0, out[-4000:]
    return outputs
