"""What a model's tables cost one replica: rows and bytes, weights and optimizer slots."""

import logging
from typing import Any

import tensorflow as tf

from trainer.token_bag import TokenBagEmbedding

_LOG = logging.getLogger("twotower.train")
# Slot variables per trainable weight (trainer.optimizers.make_optimizer).
SLOTS = {"adagrad": 1, "adam": 2, "sgd": 0}


def table_sizes(model: tf.keras.Model, optimizer: str) -> dict[str, Any]:
    """{"tables": {name: {rows, dim, weight_bytes, slot_bytes}}, "other_bytes",
    "total_bytes"} on one replica (every replica holds all of them: the strategies here
    mirror variables). Embedding tables are sized from their vocabularies, so this works
    before the first step builds them; "other" counts the variables built so far (all of
    them after training: MLPs, queues, frequency estimates)."""
    tables, seen = {}, set()
    layers = list(model._flatten_layers(include_self=False))  # noqa: SLF001 (Keras's walk)
    # A token bag's own Embedding is its table, listed under the bag's name.
    inner = {id(layer._embedding) for layer in layers if isinstance(layer, TokenBagEmbedding)}  # noqa: SLF001
    for layer in layers:
        if isinstance(layer, TokenBagEmbedding):
            rows, dim, name = layer.vocabulary_size(), layer.embedding_dim, layer.name
            table = layer.table if layer.built else None
        elif isinstance(layer, tf.keras.layers.Embedding) and id(layer) not in inner:
            # Other tables (UMA²'s heads' item embedding: a row per catalog item).
            rows, dim, name = layer.input_dim, layer.output_dim, layer.name
            table = layer.embeddings if layer.built else None
        else:
            continue
        name = f"{name}/embedding"
        while name in tables:
            name += "'"
        tables[name] = {
            "rows": rows,
            "dim": dim,
            "weight_bytes": rows * dim * 4,
            "slot_bytes": rows * dim * 4 * SLOTS[optimizer],
        }
        if table is not None:
            seen.add(id(table))
    other = 0
    variables = {}  # of the layers built so far (Keras refuses `model.variables` before)
    for layer in model._flatten_layers(include_self=True):  # noqa: SLF001
        for variable in layer._trainable_weights + layer._non_trainable_weights:  # noqa: SLF001
            variables[id(variable)] = variable
    for key, variable in variables.items():
        if key in seen:
            continue
        size = variable.shape.num_elements() * variable.dtype.size
        other += size + (size * SLOTS[optimizer] if variable.trainable else 0)
    total = other + sum(t["weight_bytes"] + t["slot_bytes"] for t in tables.values())
    return {"tables": tables, "other_bytes": int(other), "total_bytes": int(total)}


def check_budget(sizes: dict[str, Any], budget_gb: float) -> str | None:
    """A warning (also logged) when the tables exceed `budget_gb` per replica; 0: no check."""
    total_gb = sizes["total_bytes"] / 2**30
    if not budget_gb or total_gb <= budget_gb:
        return None
    largest = max(sizes["tables"].items(), key=lambda t: t[1]["weight_bytes"], default=None)
    message = (
        f"the model's variables need {total_gb:.2f} GB per replica (weights + optimizer "
        f"slots), over training.memory_budget_gb={budget_gb:g}"
        + (f"; the largest table is {largest[0]} ({largest[1]['rows']:,} rows)" if largest else "")
        + "; data.max_vocab_size or data.min_count shrink the id tables"
    )
    _LOG.warning("%s", message)
    return message
