"""pipelines.examples and pipelines.tf_example: space labels, history without leakage,
splits, and Example bytes equal to TensorFlow's."""

import pytest

from pipelines import examples, tf_example

OPTIONS = examples.ExampleOptions(history_length=2, num_a=1, num_b=2)


def _request(request_id, timestamp, clicked, exposed=None, recalled=None, user="u1", **features):
    exposed = exposed if exposed is not None else list(clicked)
    return {
        "request_id": request_id,
        "user_id": user,
        "timestamp": timestamp,
        "recalled": recalled if recalled is not None else list(exposed),
        "exposed": exposed,
        "clicked": list(clicked),
        "user_features": {k: [v] for k, v in features.items()},
    }


def _compact(*requests, options=OPTIONS):
    return [examples.request_positives(r, options) for r in requests]


def test_request_positives_labels_the_spaces():
    request = _request(
        "r1", 10, ["i1"], exposed=["i1", "i2", "i3"], recalled=["i1", "i2", "i3", "i4", "i5"]
    )
    (compact,) = _compact(request)
    (item, space_a, space_b) = compact["positives"][0]
    # A = exposed - clicked = {i2, i3}; B = recalled - exposed = {i4, i5}; keep 1 and 2.
    assert item == "i1"
    assert len(space_a) == 1 and set(space_a) <= {"i2", "i3"}
    assert sorted(space_b) == ["i4", "i5"]
    assert (compact["num_space_a"], compact["num_space_b"]) == (2, 2)


def test_negative_samples_depend_only_on_request_and_positive():
    exposed = [f"i{i}" for i in range(20)]
    first = _request("r1", 10, ["i0", "i1"], exposed=exposed)
    again = _request("r1", 99, ["i0", "i1"], exposed=list(reversed(exposed)))
    other = _request("r2", 10, ["i0", "i1"], exposed=exposed)
    a, b, c = _compact(first, again, other)
    assert a["positives"] == b["positives"]  # same request id: same choice, any order
    assert a["positives"] != c["positives"]  # another request: another draw


def test_history_holds_only_strictly_earlier_clicks():
    requests = _compact(
        _request("r3", 30, ["i3"]),
        _request("r1", 10, ["i1"]),
        _request("r2", 20, ["i2a", "i2b"]),
        _request("r2x", 20, ["i2c"]),  # same timestamp as r2: neither sees the other
        _request("r4", 40, []),  # no click: no example, no history
        _request("r5", 50, ["i5"]),
    )
    produced = {e["item_id"]: e for _, e in examples.user_examples(requests, OPTIONS)}
    assert produced["i1"]["history"] == []
    assert produced["i2a"]["history"] == ["i1"]
    assert produced["i2c"]["history"] == ["i1"]
    # At 30 the clicks before are i1, i2a, i2b, i2c; the last two (history_length 2).
    assert produced["i3"]["history"] == ["i2b", "i2c"]
    assert produced["i5"]["history"] == ["i2c", "i3"]
    for example in produced.values():
        assert example["item_id"] not in example["history"]


def test_leave_last_click_out_holds_out_one_click_per_user():
    requests = _compact(_request("r1", 10, ["i1"]), _request("r2", 20, ["i2", "i3"]))
    splits = [(s, e["item_id"]) for s, e in examples.user_examples(requests, OPTIONS)]
    assert sorted(splits) == [("eval", "i3"), ("train", "i1"), ("train", "i2")]


def test_time_split_cuts_by_timestamp():
    options = examples.ExampleOptions(split="time", eval_from=20)
    requests = _compact(_request("r1", 10, ["i1"]), _request("r2", 20, ["i2"]), options=options)
    splits = {e["item_id"]: s for s, e in examples.user_examples(requests, options)}
    assert splits == {"i1": "train", "i2": "eval"}


def test_user_table_fills_only_missing_features():
    requests = _compact(_request("r1", 10, ["i1"], age="30"))
    profile = {"age": ["99"], "gender": ["F"]}
    ((_, example),) = examples.user_examples(requests, OPTIONS, profile)
    assert example["user.age"] == ["30"]
    assert example["user.gender"] == ["F"]


def test_feature_spec_lists_user_features():
    spec = examples.feature_spec(["gender", "age"])
    assert spec["user.age"] == {"dtype": "string", "shape": "list"}
    assert spec["timestamp"] == {"dtype": "int64", "shape": "scalar"}
    assert list(spec)[-2:] == ["user.age", "user.gender"]


def test_example_bytes_equal_tensorflow_and_parse_back():
    from tensorflow.core.example import example_pb2, feature_pb2

    example = {
        "request_id": "r1",
        "timestamp": 1_700_000_000,
        "num_space_a": -1,
        "history": ["i1", "ü"],
        "space_a": [],
        "user.age": ["30"],
    }
    features = {}
    for name, value in example.items():
        if isinstance(value, int):
            features[name] = feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[value]))
        else:
            values = [value] if isinstance(value, str) else value
            features[name] = feature_pb2.Feature(
                bytes_list=feature_pb2.BytesList(value=[v.encode() for v in values])
            )
    expected = example_pb2.Example(features=feature_pb2.Features(feature=features))
    serialized = examples.to_tf_example(example)
    assert serialized == expected.SerializeToString(deterministic=True)
    assert tf_example.parse_example(serialized) == {
        "request_id": ["r1"],
        "timestamp": [1_700_000_000],
        "num_space_a": [-1],
        "history": ["i1", "ü"],
        "space_a": [],
        "user.age": ["30"],
    }


@pytest.mark.parametrize("history_length", [0, 1])
def test_history_length_bounds_the_history(history_length):
    options = examples.ExampleOptions(history_length=history_length)
    requests = _compact(
        _request("r1", 1, ["i1"]), _request("r2", 2, ["i2"]), _request("r3", 3, ["i3"])
    )
    produced = {e["item_id"]: e["history"] for _, e in examples.user_examples(requests, options)}
    assert produced["i3"] == ["i2"][:history_length]
