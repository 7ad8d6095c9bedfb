"""Where training runs: the `tf.distribute` strategy the environment asks for.

`TF_CONFIG` (set by Kubeflow's TFJob, or by hand for local workers) selects
`MultiWorkerMirroredStrategy`; several local GPUs `MirroredStrategy`; otherwise the
default strategy. A bad `TF_CONFIG` or a cluster that never comes up is a permanent
error (exit 1); a lost peer or SIGTERM is retryable (docs/distributed.md, exit codes).
"""

import contextlib
import dataclasses
import faulthandler
import json
import math
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import tensorflow as tf

from common.config import ConfigError, TrainingConfig


class ClusterError(ConfigError):
    """TF_CONFIG is malformed, or the cluster it names did not come up in time."""


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The parts of TF_CONFIG the trainer uses.

    Attributes:
      tasks: {task type: ["host:port", ...]} ("chief" and "worker" only).
      task_type: this process's type.
      task_index: this process's index within its type.
    """

    tasks: dict[str, list[str]]
    task_type: str
    task_index: int

    @property
    def num_workers(self) -> int:
        return sum(len(addresses) for addresses in self.tasks.values())

    @property
    def is_chief(self) -> bool:
        """The chief task, or worker 0 when the cluster has no chief (TF's rule)."""
        if "chief" in self.tasks:
            return self.task_type == "chief"
        return self.task_index == 0

    @property
    def worker_index(self) -> int:
        """This task's position among all tasks, chief first."""
        if self.task_type == "worker" and "chief" in self.tasks:
            return len(self.tasks["chief"]) + self.task_index
        return self.task_index

    @property
    def peers(self) -> list[str]:
        mine = self.tasks[self.task_type][self.task_index]
        return [a for addresses in self.tasks.values() for a in addresses if a != mine]


def parse_tf_config(raw: str | None) -> Cluster | None:
    """Validates a TF_CONFIG value; None when it is unset or empty.

    Raises:
      ClusterError: not JSON, no cluster, a task type or index that is missing or
        outside the cluster, an address that is not "host:port".
    """
    if raw is None or not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ClusterError(f"TF_CONFIG: not valid JSON ({e})") from e
    if not isinstance(value, dict) or not isinstance(value.get("cluster"), dict):
        raise ClusterError('TF_CONFIG: expected {"cluster": {...}, "task": {...}}')
    tasks = value["cluster"]
    unsupported = sorted(set(tasks) - {"chief", "worker"})
    if unsupported or not tasks:
        raise ClusterError(
            f"TF_CONFIG.cluster: task types {unsupported or '(none)'}; "
            "MultiWorkerMirroredStrategy takes chief and worker only"
        )
    for kind, addresses in tasks.items():
        if not isinstance(addresses, list) or not addresses:
            raise ClusterError(f"TF_CONFIG.cluster.{kind}: expected a list of host:port")
        for address in addresses:
            host, _, port = str(address).rpartition(":")
            if not host or not port.isdigit():
                raise ClusterError(f"TF_CONFIG.cluster.{kind}: {address!r} is not host:port")
    task = value.get("task")
    if not isinstance(task, dict):
        raise ClusterError("TF_CONFIG.task: missing (expected {type, index})")
    kind, index = task.get("type"), task.get("index")
    if kind not in tasks:
        raise ClusterError(f"TF_CONFIG.task.type: {kind!r} is not in the cluster {sorted(tasks)}")
    if isinstance(index, bool) or not isinstance(index, int):
        raise ClusterError(f"TF_CONFIG.task.index: missing or not an integer ({index!r})")
    if not 0 <= index < len(tasks[kind]):
        raise ClusterError(
            f"TF_CONFIG.task.index: {index} outside the {len(tasks[kind])} {kind} task(s)"
        )
    return Cluster({k: [str(a) for a in v] for k, v in tasks.items()}, kind, index)


def unreachable(addresses: list[str], timeout: float = 1.0) -> list[str]:
    """The "host:port" addresses that refuse a TCP connection."""
    down = []
    for address in addresses:
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout).close()
        except OSError:
            down.append(address)
    return down


def _configure_coordination(cluster: Cluster, timeout_seconds: int) -> None:
    """TensorFlow's own coordination-service setup for MultiWorkerMirroredStrategy, with
    a registration timeout (its default waits an hour) so a missing peer fails."""
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2  # noqa: PLC0415
    from tensorflow.python.distribute import multi_worker_util  # noqa: PLC0415
    from tensorflow.python.eager import context  # noqa: PLC0415

    if context.context().coordination_service is not None:
        return
    spec = tf.train.ClusterSpec(cluster.tasks)
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=multi_worker_util.coordination_leader(spec),
        cluster_register_timeout_in_ms=timeout_seconds * 1000,
        coordinated_jobs=[
            coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(addresses))
            for job, addresses in cluster.tasks.items()
        ],
    )


def _multi_worker(training: TrainingConfig, cluster: Cluster) -> tf.distribute.Strategy:
    implementation = tf.distribute.experimental.CommunicationImplementation
    collective = training.collective
    if collective == "auto":
        collective = "nccl" if tf.config.list_physical_devices("GPU") else "ring"
    # No collective timeout_seconds: TensorFlow backs each timed collective with a
    # thread, thousands per epoch, until thread creation fails. A lost peer is caught
    # by the coordination service's heartbeats instead (an error, exit 138).
    options = tf.distribute.experimental.CommunicationOptions(
        implementation=implementation.NCCL if collective == "nccl" else implementation.RING
    )
    _configure_coordination(cluster, training.cluster_timeout_seconds)
    timeout = training.cluster_timeout_seconds
    print(
        f"twotower train: {cluster.task_type}:{cluster.task_index} joining a "
        f"{cluster.num_workers}-worker cluster (peers {', '.join(cluster.peers)}); "
        f"exit 1 if it is not up within {timeout} s",
        file=sys.stderr,
        flush=True,
    )
    # The constructor waits for every worker inside TensorFlow, holding the GIL, so no
    # Python thread or signal handler can end the wait: faulthandler's C watchdog
    # prints where it hung and exits with 1 (permanent) when the cluster is not up.
    faulthandler.dump_traceback_later(timeout, exit=True)
    try:
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    except tf.errors.OpError as e:
        down = unreachable(cluster.peers)
        detail = f"unreachable: {', '.join(down)}" if down else "not every worker joined"
        raise ClusterError(
            f"TF_CONFIG {cluster.task_type}:{cluster.task_index}: the {cluster.num_workers}-worker "
            f"cluster did not come up within {training.cluster_timeout_seconds} s ({detail}); "
            "check the addresses and that every worker started"
        ) from e
    finally:
        faulthandler.cancel_dump_traceback_later()
    if threading.current_thread() is threading.main_thread():
        # TensorFlow's preemption notifier swallows SIGTERM; restore the default so a
        # terminated worker exits at once with 143 (retried by the TFJob).
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    return strategy


@dataclasses.dataclass
class Placement:
    """The strategy a run uses and what it implies.

    Attributes:
      strategy: the tf.distribute strategy (the default one on a single device).
      cluster: the parsed TF_CONFIG, None for a single process.
      replicas: replicas in sync (all workers' devices).
      global_batch: the config's batch size, summed over replicas.
      per_replica_batch: global_batch / replicas.
      learning_rate: the config's rate after `lr_scaling`.
    """

    strategy: tf.distribute.Strategy
    cluster: Cluster | None
    replicas: int
    global_batch: int
    per_replica_batch: int
    learning_rate: float

    @property
    def multi_worker(self) -> bool:
        return self.cluster is not None

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def num_workers(self) -> int:
        return 1 if self.cluster is None else self.cluster.num_workers

    @property
    def worker_index(self) -> int:
        return 0 if self.cluster is None else self.cluster.worker_index

    def describe(self) -> str:
        where = (
            f"worker {self.worker_index}/{self.num_workers}" + (" (chief)" if self.is_chief else "")
            if self.cluster
            else "single process"
        )
        return (
            f"{type(self.strategy).__name__}, {where}, {self.replicas} replica(s): global batch "
            f"{self.global_batch} = {self.per_replica_batch} per replica, "
            f"learning rate {self.learning_rate:g}"
        )


def scaled_learning_rate(learning_rate: float, replicas: int, rule: str) -> float:
    """`learning_rate` × replicas ("linear"), × √replicas ("sqrt") or as is ("none")."""
    factor = {"none": 1.0, "linear": float(replicas), "sqrt": math.sqrt(replicas)}[rule]
    return learning_rate * factor


def set_op_threads(intra_op: int, inter_op: int) -> None:
    """Sizes TensorFlow's two op thread pools (`training.intra_op_threads`,
    `inter_op_threads`; 0 leaves TensorFlow's default).

    The runtime sizes them when it starts and never again, so call this before any other
    TensorFlow work; a process that already started TensorFlow with other sizes cannot
    take these (ConfigError, naming the setting).
    """
    threading_ = tf.config.threading
    pools = (
        (
            "training.intra_op_threads",
            intra_op,
            threading_.get_intra_op_parallelism_threads,
            threading_.set_intra_op_parallelism_threads,
        ),
        (
            "training.inter_op_threads",
            inter_op,
            threading_.get_inter_op_parallelism_threads,
            threading_.set_inter_op_parallelism_threads,
        ),
    )
    for key, wanted, get, set_ in pools:
        if not wanted or get() == wanted:
            continue
        try:
            set_(wanted)
        except RuntimeError as e:
            raise ConfigError(
                f"{wanted} threads: TensorFlow already started in this process with "
                f"{get() or 'its default of every core'}, and sizes its pools once; run "
                "it in a new process",
                key,
            ) from e


def placement(training: TrainingConfig, environ: Mapping[str, str] | None = None) -> Placement:
    """The strategy TF_CONFIG and the local devices ask for, created now.

    Create it before any other TensorFlow work: MultiWorkerMirroredStrategy must
    configure the runtime first. Under TF_CONFIG this blocks until every worker
    joined, and raises ClusterError after `training.cluster_timeout_seconds`.

    Raises:
      ClusterError: TF_CONFIG is malformed.
      ConfigError: the global batch does not split evenly over the replicas.
    """
    set_op_threads(training.intra_op_threads, training.inter_op_threads)
    environ = os.environ if environ is None else environ
    cluster = parse_tf_config(environ.get("TF_CONFIG"))
    if cluster is not None:
        strategy = _multi_worker(training, cluster)
    elif len(tf.config.list_physical_devices("GPU")) > 1:
        strategy = tf.distribute.MirroredStrategy()
    else:
        strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    if training.batch_size % replicas:
        raise ConfigError(
            f"training.batch_size: {training.batch_size} does not split over {replicas} "
            "replicas; use a multiple of the replica count"
        )
    return Placement(
        strategy,
        cluster,
        replicas,
        training.batch_size,
        training.batch_size // replicas,
        scaled_learning_rate(training.learning_rate, replicas, training.lr_scaling),
    )


@contextlib.contextmanager
def worker_local_strings(where: Placement) -> Iterator[None]:
    """Creates string variables (the queues' item ids) as plain per-worker variables.

    MultiWorkerMirroredStrategy broadcasts every new variable's initial value from the
    chief, and collectives take numbers only. The ids queues start empty on every
    worker and each step writes the same all-gathered ids into them (a second local
    replica rewrites the same slots), so each worker holding its own copy keeps them
    identical without a broadcast.
    """
    if not where.multi_worker or where.num_workers == 1:
        yield
        return
    # The default creator makes a plain variable, skipping the strategy's creator.
    from tensorflow.python.ops.resource_variable_ops import (  # noqa: PLC0415
        default_variable_creator_v2,
    )

    def creator(next_creator: Any, **kwargs: Any) -> tf.Variable:
        if kwargs.get("dtype") is None or tf.as_dtype(kwargs["dtype"]) != tf.string:
            return next_creator(**kwargs)
        kwargs.pop("distribute_strategy", None)
        initial = kwargs["initial_value"]
        kwargs["initial_value"] = initial() if callable(initial) else initial
        return default_variable_creator_v2(None, **kwargs)

    with tf.variable_creator_scope(creator):
        yield


def worker_dir(path: str, where: Placement) -> str:
    """`path` on the chief; a fresh temporary folder on other workers (remove it with
    `remove_worker_dir`). Every worker must save (variables sync on save), only the
    chief's copy is kept."""
    if where.is_chief:
        return path
    return tempfile.mkdtemp(prefix=f"twotower-worker{where.worker_index}-")


def remove_worker_dir(path: str, where: Placement) -> None:
    if not where.is_chief:
        shutil.rmtree(path, ignore_errors=True)
