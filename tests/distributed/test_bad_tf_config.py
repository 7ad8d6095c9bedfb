"""A bad TF_CONFIG is a permanent error: a clear message and exit code 1, never a hang."""

import json
import time

import pytest
import tensorflow as tf
from distributed_workers import TINY, free_ports, start

from common.config import ConfigError
from common.exit_codes import BAD_INPUT, RETRYABLE, exit_code
from trainer.distribute import ClusterError, parse_tf_config


@pytest.mark.parametrize(
    "raw, message",
    [
        ('{"cluster": {"worker": ["a:1"]', "not valid JSON"),
        ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker"}}', "task.index"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "outside"),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "task.type"),
        ('{"cluster": {"worker": ["x"]}, "task": {"type": "worker", "index": 0}}', "host:port"),
        ('{"cluster": {"ps": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "chief and worker"),
    ],
)
def test_parse_names_what_is_wrong(raw, message):
    with pytest.raises(ClusterError, match=message):
        parse_tf_config(raw)


def test_parse_finds_the_chief():
    cluster = {"chief": ["c:1"], "worker": ["w:1", "w:2"]}
    chief = parse_tf_config(json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    task = {"type": "worker", "index": 1}
    worker = parse_tf_config(json.dumps({"cluster": cluster, "task": task}))
    assert chief.is_chief and not worker.is_chief
    assert (worker.num_workers, worker.worker_index) == (3, 2)
    assert parse_tf_config(None) is None and parse_tf_config("") is None


def test_exit_codes_follow_the_tfjob_policy():
    # 1 is permanent for the TFJob ExitCode policy; 138 (user-defined) is retried.
    assert exit_code(ConfigError("x")) == exit_code(FileNotFoundError("x")) == BAD_INPUT
    assert exit_code(tf.errors.UnavailableError(None, None, "peer down")) == RETRYABLE
    assert exit_code(tf.errors.DeadlineExceededError(None, None, "timeout")) == RETRYABLE
    # A corrupt record is permanent; an unexpected failure (storage, runner) is retried.
    assert exit_code(tf.errors.DataLossError(None, None, "bad record")) == BAD_INPUT
    assert exit_code(OSError("connection reset")) == RETRYABLE
    assert exit_code(KeyboardInterrupt()) == 130


def test_bad_tf_config_exits_1_quickly(tiny_dataset, tmp_path):
    (port, silent) = free_ports(2)
    unreachable = json.dumps(
        {
            "cluster": {"worker": [f"localhost:{port}", f"localhost:{silent}"]},
            "task": {"type": "worker", "index": 0},
        }
    )
    cases = {
        "malformed": ('{"cluster": {"worker": [', "not valid JSON"),
        "no_index": ('{"cluster": {"worker": ["h:1"]}, "task": {"type": "worker"}}', "index"),
        "unreachable": (unreachable, f"localhost:{silent}); exit 1 if it is not up within 5 s"),
    }
    start_time = time.time()
    processes = {
        name: start(
            [tiny_dataset, str(tmp_path / name), "-", *TINY, "training.cluster_timeout_seconds=5"],
            raw,
        )
        for name, (raw, _) in cases.items()
    }
    for name, process in processes.items():
        try:
            out, _ = process.communicate(timeout=90)
        finally:
            process.kill()
        assert process.returncode == 1, f"{name}: {out[-2000:]}"
        assert cases[name][1] in out, f"{name}: {out[-2000:]}"
    assert time.time() - start_time < 90
