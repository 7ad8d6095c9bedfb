"""Helpers of the pipeline tests: run the real pipeline in memory, read what it wrote."""

import glob
import json
import os

from tests.conftest import run_preprocess  # noqa: F401  (re-exported for the tests)


def read_tfrecords(path):
    """The records of a gzipped TFRecord file, read (and CRC-checked) by TensorFlow."""
    import tensorflow as tf

    return [r.numpy() for r in tf.data.TFRecordDataset(path, compression_type="GZIP")]


def read_records(dataset_dir, split):
    """Serialized Examples of one split, sorted (shard membership may vary)."""
    with open(os.path.join(dataset_dir, "manifest.json")) as f:
        files = json.load(f)["splits"][split]["files"]
    return sorted(r for name in files for r in read_tfrecords(os.path.join(dataset_dir, name)))


def read_examples(dataset_dir, split):
    """Examples of one split as {name: [values]}, sorted by (request_id, item_id)."""
    from pipelines.tf_example import parse_example

    parsed = [parse_example(r) for r in read_records(dataset_dir, split)]
    return sorted(parsed, key=lambda e: (e["request_id"], e["item_id"]))


def read_dead_letters(dataset_dir, table):
    rows = []
    for path in sorted(glob.glob(os.path.join(dataset_dir, "dead_letter", f"{table}*.jsonl"))):
        with open(path) as f:
            rows.extend(json.loads(line) for line in f if line.strip())
    return sorted(rows, key=lambda r: (r["source"], r["line"] or 0, r["row"] or 0))
