"""A single-process, pure-Python preprocessing of JSONL logs: the benchmark's floor.

It parses the same JSON with the same rules (`records`), makes the same Examples
(`examples`) and writes them as gzipped TFRecord files, with none of Beam's machinery:
no workers, no shuffle, no counters. It keeps every clicked request in a dict by user, so
its memory grows with the input; it only exists to say how far the pipeline is from the
cost of the work itself (tests check both give the same Examples).
"""

import collections
import gzip
import json
import os
import struct
from typing import Any

import google_crc32c

from common import contracts
from pipelines import examples, records


def _masked_crc(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord frame: length, its masked CRC32C, data, the data's masked CRC32C."""
    length = struct.pack("<Q", len(data))
    return b"".join(
        (length, struct.pack("<I", _masked_crc(length)), data, struct.pack("<I", _masked_crc(data)))
    )


def reference_preprocess(
    requests_path: str, catalog_path: str, output_dir: str, options: examples.ExampleOptions
) -> dict[str, Any]:
    """Writes `train.tfrecord.gz`, `eval.tfrecord.gz` and `dead_letter.jsonl`.

    Returns:
      {"read", "valid", "dead_letter", "examples": {"train", "eval"}}.
    """
    os.makedirs(output_dir, exist_ok=True)
    with open(catalog_path) as f:
        catalog = {json.loads(line)["item_id"] for line in f if line.strip()}
    by_user: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
    counts = {"read": 0, "valid": 0, "dead_letter": 0}
    with (
        open(requests_path) as f,
        open(os.path.join(output_dir, "dead_letter.jsonl"), "w") as dead,
    ):
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            counts["read"] += 1
            try:
                request, _ = records.parse_request_line(line)
                unknown = [item for item in request["recalled"] if item not in catalog]
                if unknown:
                    raise records.BadRecord("unknown_item", f"not in the catalog: {unknown[:5]}")
            except records.BadRecord as bad:
                counts["dead_letter"] += 1
                row = {"source": requests_path, "line": number, "reason": bad.reason}
                dead.write(json.dumps(row) + "\n")
                continue
            counts["valid"] += 1
            if request["clicked"]:
                by_user[request["user_id"]].append(examples.request_positives(request, options))
    written = {contracts.TRAIN: 0, contracts.EVAL: 0}
    train_path, eval_path = (os.path.join(output_dir, f"{s}.tfrecord.gz") for s in written)
    with gzip.open(train_path, "wb") as train, gzip.open(eval_path, "wb") as evaluation:
        outputs = {contracts.TRAIN: train, contracts.EVAL: evaluation}
        for user in sorted(by_user):
            for split, example in examples.user_examples(by_user.pop(user), options):
                outputs[split].write(tfrecord(examples.to_tf_example(example)))
                written[split] += 1
    return {**counts, "examples": written}
