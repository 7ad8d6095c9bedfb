"""`tf.train.Example` serialisation without importing TensorFlow.

Importing `tensorflow.core.example` loads all of TensorFlow (about 3 s and 550 MB of
resident memory per process), which every Beam worker would pay only to build a
protobuf. This module declares the same messages (tensorflow/core/example/example.proto
and feature.proto: field names, numbers and types) in a private protobuf descriptor pool,
so the bytes are exactly those of `tf.train.Example.SerializeToString(deterministic=True)`
(tests/pipelines/test_examples.py compares them) at the cost of the protobuf runtime only.
"""

import functools
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_PACKAGE = "twotower.tfexample"
_F = descriptor_pb2.FieldDescriptorProto


def _add_field(
    message: Any, name: str, number: int, kind: int, label: int, type_name: str = ""
) -> Any:
    field = message.field.add(name=name, number=number, type=kind, label=label)
    if type_name:
        field.type_name = f".{_PACKAGE}.{type_name}"
    return field


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    proto = descriptor_pb2.FileDescriptorProto(
        name="twotower/tfexample.proto", package=_PACKAGE, syntax="proto3"
    )
    repeated, optional = _F.LABEL_REPEATED, _F.LABEL_OPTIONAL
    for name, kind in (
        ("BytesList", _F.TYPE_BYTES),
        ("FloatList", _F.TYPE_FLOAT),
        ("Int64List", _F.TYPE_INT64),
    ):
        field = _add_field(proto.message_type.add(name=name), "value", 1, kind, repeated)
        if kind != _F.TYPE_BYTES:
            field.options.packed = True  # as in feature.proto
    feature = proto.message_type.add(name="Feature")
    feature.oneof_decl.add(name="kind")
    kinds = (("bytes_list", "BytesList"), ("float_list", "FloatList"), ("int64_list", "Int64List"))
    for number, (name, type_name) in enumerate(kinds, start=1):
        field = _add_field(feature, name, number, _F.TYPE_MESSAGE, optional, type_name)
        field.oneof_index = 0
    features = proto.message_type.add(name="Features")
    entry = features.nested_type.add(name="FeatureEntry")
    entry.options.map_entry = True
    _add_field(entry, "key", 1, _F.TYPE_STRING, optional)
    _add_field(entry, "value", 2, _F.TYPE_MESSAGE, optional, "Feature")
    _add_field(features, "feature", 1, _F.TYPE_MESSAGE, repeated, "Features.FeatureEntry")
    example = proto.message_type.add(name="Example")
    _add_field(example, "features", 1, _F.TYPE_MESSAGE, optional, "Features")
    return proto


@functools.cache
def example_class() -> type:
    """The `Example` message class (built once per process, never pickled)."""
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Example"))


def serialize_example(features: dict[str, Any]) -> bytes:
    """Serialises {name: int | str | list[str] | list[float]} as a `tf.train.Example`.

    Ints become an int64 list of one value; strings and string lists become bytes lists
    (UTF-8); a non-empty list of floats becomes a float list (float32, as TensorFlow
    stores it). Map entries are written sorted by name, so equal inputs give equal bytes.

    Args:
      features: feature name -> value.

    Returns:
      The serialized Example.
    """
    example = example_class()()
    feature_map = example.features.feature
    for name, value in features.items():
        if isinstance(value, int):
            feature_map[name].int64_list.value.append(value)
        elif isinstance(value, str):
            feature_map[name].bytes_list.value.append(value.encode())
        elif value and isinstance(value[0], float):
            feature_map[name].float_list.value.extend(value)
        else:
            feature_map[name].bytes_list.value.extend([v.encode() for v in value])
    return example.SerializeToString(deterministic=True)


def parse_example(serialized: bytes) -> dict[str, list[Any]]:
    """Decodes a serialized Example into {name: [values]} (bytes decoded as UTF-8)."""
    example = example_class()()
    example.ParseFromString(serialized)
    parsed = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        values = list(getattr(feature, kind).value) if kind else []
        parsed[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return parsed
