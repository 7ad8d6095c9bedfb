"""One training worker for the distributed tests: `trainer.train.train` plus a callback
that records, after every step, the loss, a fingerprint of the weights and the queue.

Usage: worker_main.py DATASET RUN_DIR RECORD_JSON [section.key=value ...]
Env: SLOW_STEP_SECONDS sleeps after each step (so a test can kill a worker mid-epoch).
"""

import json
import os
import sys
import time
import traceback

import numpy as np
import tensorflow as tf

from common.config import load_config
from common.exit_codes import exit_code
from trainer.negatives.intention_queue import IntentionQueueNegatives
from trainer.negatives.momentum_queue import MomentumQueueNegatives
from trainer.negatives.queue import QueueNegatives
from trainer.train import train
from twotower import cli


class Recorder(tf.keras.callbacks.Callback):
    def __init__(self, path: str):
        super().__init__()
        self._path = path
        self._steps = []
        self._slow = float(os.environ.get("SLOW_STEP_SECONDS", "0"))

    def on_train_batch_end(self, batch, logs=None):
        queues = (QueueNegatives, MomentumQueueNegatives)
        queue = next(s for s in self.model.sources if isinstance(s, queues))
        indices, _ = queue._indices.contents(0)
        embeddings, _ = queue._embeddings.contents(0)
        # The momentum queue's copy of the item tower is state too (not trainable).
        weights = [np.asarray(v.numpy(), np.float64) for v in self.model.trainable_variables]
        state = [np.asarray(v.numpy(), np.float64) for v in queue.weights if v.dtype.is_floating]
        step = {
            "loss": float(logs["loss"]),
            "weights": [float(w.sum()) for w in weights],
            "weights_abs": float(sum(np.abs(w).sum() for w in weights)),
            "queue_indices": indices.numpy().tolist(),
            "queue_embeddings": embeddings.numpy().round(6).tolist(),
            "queue_state": [float(w.sum()) for w in state],
        }
        intentions = [s for s in self.model.sources if isinstance(s, IntentionQueueNegatives)]
        if intentions:
            indices, _ = intentions[0]._indices.all_contents()
            step["intention_indices"] = indices.numpy().tolist()
            if intentions[0]._embeddings is not None:
                embeddings, _ = intentions[0]._embeddings.all_contents()
                step["intention_embeddings"] = embeddings.numpy().round(6).tolist()
        self._steps.append(step)
        with open(self._path, "w") as f:
            json.dump(self._steps, f)
        if self._slow:
            time.sleep(self._slow)


if __name__ == "__main__":
    dataset, run_dir, record, *overrides = sys.argv[1:]
    if record == "-":  # the real entry point, for exit codes
        flags = ["--data", dataset, "--run-dir", run_dir, "--verbose", "0"]
        sys.exit(cli.main(["train", *flags, *[f"--set={o}" for o in overrides]]))
    config = load_config(overrides=overrides)
    try:
        train(config, dataset, run_dir, verbose=0, callbacks=[Recorder(record)])
    except Exception as e:  # noqa: BLE001 - the exit code is what the tests check
        traceback.print_exc()
        print(f"worker failed: {e}", file=sys.stderr)
        sys.exit(exit_code(e))
