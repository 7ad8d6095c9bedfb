"""`twotower bench distributed`: one worker vs two local workers, and the queue all-gather.

Both runs train the same config on the same dataset in fresh processes (as a TFJob
would); examples/second is the global throughput of the last epoch (the first pays
for tracing). On one machine the two workers share its cores, so the ratio shows
the price of synchronising every step (all-reduce of the gradients, all-gathers of
the negative state), not a cluster's speed-up. The all-gather is timed apart: two
workers run only the CLRec queue's per-step gathers (embeddings and ids).
"""

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from common import contracts
from common.settings import to_dict
from twotower.bench import runner
from twotower.bench.settings import DistributedBench
from twotower.report import save_results

_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_ports(count: int) -> list[int]:
    """`count` TCP ports free on localhost now, for a local multi-worker TF_CONFIG."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _launch(args: list[str], workers: int) -> list[str]:
    """Runs `python -m <args>` as `workers` processes (TF_CONFIG when more than one)."""
    ports = free_ports(workers)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": _ROOT}
    env.pop("TF_CONFIG", None)
    processes = []
    for index in range(workers):
        if workers > 1:
            cluster = {"worker": [f"localhost:{p}" for p in ports]}
            env = {
                **env,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            }
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", *args],
                cwd=_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outputs = [p.communicate()[0] for p in processes]
    for p, out in zip(processes, outputs, strict=True):
        if p.returncode:
            raise RuntimeError(f"{' '.join(args)} exited {p.returncode}:\n{out[-3000:]}")
    return outputs


def _train(dataset_dir: str, run_dir: str, workers: int, overrides: Sequence[str]) -> dict:
    args = ["twotower", "train", "--data", dataset_dir, "--run-dir", run_dir, "--verbose", "0"]
    args.append("--overwrite")  # the benchmark's own scratch run
    args += [f"--set={o}" for o in overrides]
    start = time.perf_counter()
    _launch(args, workers)
    with open(os.path.join(run_dir, contracts.RUN_FILE)) as f:
        run = json.load(f)
    return {
        "workers": workers,
        "examples_per_second": run["history"]["examples_per_second"][-1],
        "steps_per_second": run["history"]["steps_per_second"][-1],
        # The epoch mean (Keras's "loss" is the last step's, a partial batch on 1 worker).
        "loss_main": run["history"].get("loss_main", run["history"]["loss"])[-1],
        "wall_seconds": round(time.perf_counter() - start, 1),
        "distribution": run["distribution"],
    }


def gather_worker(rows: int, dim: int, steps: int, output: str) -> None:
    """One worker of the all-gather timing: the queue's per-step gathers, `steps` times."""
    import tensorflow as tf  # noqa: PLC0415

    from common.config import TrainingConfig  # noqa: PLC0415
    from trainer.distribute import placement  # noqa: PLC0415
    from trainer.negatives.queue import gather_across_replicas  # noqa: PLC0415

    where = placement(TrainingConfig(batch_size=2 * rows))
    embeddings = tf.random.normal([rows, dim])
    ids = tf.strings.as_string(tf.range(rows) + 1_000_000)

    @tf.function
    def step(gathers: bool) -> tf.Tensor:
        def replica_fn() -> tf.Tensor:
            context = tf.distribute.get_replica_context()
            if not gathers:  # the synchronisation every step pays anyway
                return context.all_reduce("sum", tf.reduce_sum(embeddings))
            values = gather_across_replicas(embeddings)
            names = gather_across_replicas(ids)
            return tf.reduce_sum(values) + tf.cast(tf.size(names), tf.float32)

        return where.strategy.run(replica_fn)

    timings = {}
    for gathers in (False, True):
        step(gathers)  # trace
        start = time.perf_counter()
        for _ in range(steps):
            step(gathers).numpy()
        timings["gather" if gathers else "barrier"] = (time.perf_counter() - start) / steps
    if where.is_chief:
        with open(output, "w") as f:
            json.dump(timings, f)


def run(
    settings: DistributedBench, output_dir: str, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Times 1 vs 2 local workers and the queue all-gather; writes distributed.json.

    Args:
      settings: the dataset ("movielens", "simulator" or "tiny", built by the benchmark
        runner and reused), epochs (the last one is timed), global batch size, CLRec queue
        length (the all-gathered state) and the steps of the all-gather timing.
      output_dir: receives distributed.json; datasets and runs go under distributed/.
      log: progress and the table go here.

    Returns:
      The contents of distributed.json.
    """
    work_dir = os.path.join(output_dir, "distributed")
    (prepared,) = runner.prepare_datasets(os.path.join(work_dir, "data"), [settings.dataset], log)
    overrides = [
        f"training.epochs={settings.epochs}",
        f"training.batch_size={settings.batch_size}",
        f"negatives.queue_size={settings.queue_size}",
        "negatives.in_batch_correction=streaming",
        "negatives.cross_replica_in_batch=true",
        "training.backup=never",
    ]
    runs = []
    for workers in (1, 2):
        run_dir = os.path.join(work_dir, "runs", f"workers{workers}")
        log(f"training with {workers} local worker(s) -> {run_dir}")
        runs.append(_train(prepared.directory, run_dir, workers, overrides))
    rows, dim = settings.batch_size // 2, 32
    gather_file = os.path.join(work_dir, "gather.json")
    log(f"timing the queue all-gather ({rows} rows × {dim} floats + ids per worker)")
    command = ["twotower.bench.distributed", "--gather", str(rows), str(dim)]
    _launch([*command, str(settings.gather_steps), gather_file], 2)
    with open(gather_file) as f:
        gather = json.load(f)
    result = {
        "settings": to_dict(settings),
        "cpu_count": os.cpu_count(),
        "config": overrides,
        "runs": runs,
        "ratio_2_to_1": runs[1]["examples_per_second"] / runs[0]["examples_per_second"],
        "queue_all_gather_ms": {
            "rows_per_worker": rows,
            "dim": dim,
            "barrier_ms": 1000 * gather["barrier"],
            "gather_ms": 1000 * gather["gather"],
            "gather_over_barrier_ms": 1000 * (gather["gather"] - gather["barrier"]),
        },
    }
    save_results(result, output_dir, "distributed")
    log(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    lines = [f"{'workers':>8} {'examples/s':>11} {'steps/s':>8} {'loss_main':>10}"]
    for run in result["runs"]:
        lines.append(
            f"{run['workers']:>8} {run['examples_per_second']:>11.0f} "
            f"{run['steps_per_second']:>8.2f} {run['loss_main']:>10.1f}"
        )
    gather = result["queue_all_gather_ms"]
    lines.append(
        f"2 workers / 1 worker: {result['ratio_2_to_1']:.2f}x on {result['cpu_count']} cores"
    )
    lines.append(
        f"queue all-gather per step: {gather['gather_ms']:.2f} ms (a bare all-reduce "
        f"{gather['barrier_ms']:.2f} ms; extra {gather['gather_over_barrier_ms']:.2f} ms)"
    )
    return "\n".join(lines)


if __name__ == "__main__":  # one worker of the all-gather timing
    rows, dim, steps, output = sys.argv[2:6]
    gather_worker(int(rows), int(dim), int(steps), output)
