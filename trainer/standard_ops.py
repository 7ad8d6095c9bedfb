"""Which TensorFlow ops a SavedModel uses, and whether stock TF Serving has them all.

Stock TF Serving links TensorFlow's own op kernels and nothing else: a SavedModel that
holds a custom op (ScaNN's `Scann*`, a `tf.load_op_library` op) loads there with "Op type
not registered". The standard set is `tf.raw_ops`, which TensorFlow generates from its own
op registry when it is built: ops from `tf.load_op_library` never enter it.
"""

import os

import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2


def saved_model_ops(saved_model_dir: str) -> set[str]:
    """Every op type in the SavedModel's graphs, the function library included."""
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    ops: set[str] = set()
    for meta_graph in proto.meta_graphs:
        graph = meta_graph.graph_def
        functions = {function.signature.name for function in graph.library.function}
        nodes = list(graph.node)
        for function in graph.library.function:
            nodes.extend(function.node_def)
        # A node may call a library function by name; the function's own nodes count.
        ops.update(node.op for node in nodes if node.op not in functions)
    return ops


def nonstandard_ops(saved_model_dir: str) -> list[str]:
    """The op types of the SavedModel that TensorFlow itself does not define, sorted."""
    standard = set(dir(tf.raw_ops))
    return sorted(op for op in saved_model_ops(saved_model_dir) if op not in standard)


def assert_standard_ops(saved_model_dir: str) -> list[str]:
    """Returns the SavedModel's op types, sorted, if all are standard.

    Raises:
      ValueError: naming the ops that stock TF Serving would not know.
    """
    unknown = nonstandard_ops(saved_model_dir)
    if unknown:
        raise ValueError(
            f"{saved_model_dir}: ops outside TensorFlow's standard set, which stock TF "
            f"Serving cannot load: {', '.join(unknown)}"
        )
    return sorted(saved_model_ops(saved_model_dir))
