"""Feature kinds without Beam: inference rules, declarations, value checks and their
reasons, float Example bytes, the cold-item rule and the statistics' arithmetic."""

import math

import pytest

from common.config import load_config
from pipelines import examples, feature_kinds, feature_stats, records, tf_example
from pipelines.feature_kinds import FeatureKind, KindCounter

LIMITS = records.DEFAULT_LIMITS


@pytest.mark.parametrize(
    "values, expected",
    [
        ([1, 2.5], FeatureKind("numeric")),
        ([[1, 2], [3, 4], [5]], FeatureKind("vector", 2)),  # the most common length
        ([[1], [2, 3]], FeatureKind("vector", 1)),  # a tie: the shorter
        ([1, [1, 2], [3, 4]], FeatureKind("vector", 2)),  # more vectors than numbers
        ([1, [1, 2]], FeatureKind("numeric")),  # a tie: numeric
        ([1, "a"], None),  # any string: categorical, as before kinds
        ([["a", "b"]], None),
        ([True, 1], None),  # a boolean is no number
        ([None, [], float("inf"), float("nan"), 10**400, [1, float("nan")]], None),  # no vote
        ([None, 3], FeatureKind("numeric")),
    ],
)
def test_inference_rules(values, expected):
    counter = KindCounter()
    for value in values:
        counter.observe_request({"user_features": {"f": value}})
    assert counter.inferred().kinds.get("user.f") == expected


def test_inference_reads_each_table_under_its_prefix():
    counter = KindCounter()
    counter.observe_request({"user_features": {"a": 1}})
    counter.observe_user({"features": {"b": [1.0, 2.0]}})
    counter.observe_item({"features": {"a": 1}})
    counter.observe_request("not an object")  # ignored: the pipeline dead-letters it
    declared = feature_kinds.FeatureKinds({"user.b": FeatureKind("vector", 3)})
    resolved = feature_kinds.resolve(declared, counter, "user.")
    # The declaration wins; item.a belongs to the catalog's resolution.
    assert resolved.kinds == {"user.a": FeatureKind("numeric"), "user.b": FeatureKind("vector", 3)}


def test_declared_kinds_from_the_settings():
    data = load_config(
        overrides=[
            "data.numeric_features=user.age",
            "data.vector_features=user.emb:16,item.img:4",
            "data.text_features=item.title",
            "data.categorical_features=user.zip",
            "data.log_features=user.age,item.price",
        ]
    ).data
    assert feature_kinds.declared_kinds(data).kinds == {
        "user.age": FeatureKind("numeric", 1, log=True),
        "item.price": FeatureKind("numeric", 1, log=True),  # a log feature is numeric
        "user.emb": FeatureKind("vector", 16),
        "item.img": FeatureKind("vector", 4),
        "item.title": FeatureKind("text"),
        "user.zip": FeatureKind("categorical"),
    }


NUMERIC = FeatureKind("numeric")
VECTOR = FeatureKind("vector", 2)
TEXT = FeatureKind("text")
CATEGORICAL = FeatureKind()


@pytest.mark.parametrize(
    "value, kind, expected",
    [
        (3, NUMERIC, [3.0]),
        (" 2.5 ", NUMERIC, [2.5]),  # a numeric string (CSV cells are strings)
        (-0.5, FeatureKind("numeric", log=True), [-0.5]),  # log1p(-0.5) is defined
        (None, NUMERIC, None),  # null: missing
        ([1, "2"], VECTOR, [1.0, 2.0]),
        ("a title", TEXT, "a title"),
        ("  ", TEXT, None),  # an empty text: missing
        (30, CATEGORICAL, ["30"]),  # as before kinds
        (None, CATEGORICAL, None),
    ],
)
def test_good_values(value, kind, expected):
    assert records.feature_value(value, kind, "f", LIMITS) == expected


@pytest.mark.parametrize(
    "value, kind, reason",
    [
        ("old", NUMERIC, "not_a_number"),
        ("1_000", NUMERIC, "not_a_number"),  # float() would take it
        (True, NUMERIC, "not_a_number"),
        ([1.0], NUMERIC, "not_a_number"),
        ({"v": 1}, NUMERIC, "not_a_number"),
        ("NaN", NUMERIC, "not_finite"),
        (float("-inf"), NUMERIC, "not_finite"),
        (10**400, NUMERIC, "not_finite"),
        (4e38, NUMERIC, "not_finite"),  # beyond float32
        (-1, FeatureKind("numeric", log=True), "out_of_log_domain"),
        ("x", VECTOR, "bad_type"),
        ([1, 2, 3], VECTOR, "wrong_dimension"),
        ([], VECTOR, "wrong_dimension"),
        ([1, None], VECTOR, "not_a_number"),
        ([1, float("nan")], VECTOR, "not_finite"),
        (3, TEXT, "bad_type"),
        ("\ud800", TEXT, "bad_encoding"),
        (True, CATEGORICAL, "bad_type"),
        ([1, 2], CATEGORICAL, "bad_type"),
    ],
)
def test_bad_values_and_their_reasons(value, kind, reason):
    with pytest.raises(records.BadRecord) as raised:
        records.feature_value(value, kind, "user_features.f", LIMITS)
    assert raised.value.reason == reason
    assert raised.value.detail.startswith("user_features.f")


def test_validate_request_checks_user_features_against_their_kinds():
    kinds = feature_kinds.FeatureKinds({"user.age": NUMERIC, "user.emb": VECTOR})
    record = {
        "request_id": "r1",
        "user_id": "u1",
        "timestamp": 1,
        "user_features": {"age": "41", "emb": None, "city": 7},
    }
    request, _ = records.validate_request(record, LIMITS, kinds)
    assert request["user_features"] == {"age": [41.0], "city": ["7"]}


def test_float_lists_serialize_as_tensorflow_does():
    from tensorflow.core.example import example_pb2, feature_pb2

    example = {"user.age": [41.5], "user.emb": [0.1, -2.0], "user.city": ["x"], "t": 3}
    expected = example_pb2.Example(
        features=feature_pb2.Features(
            feature={
                "user.age": feature_pb2.Feature(float_list=feature_pb2.FloatList(value=[41.5])),
                "user.emb": feature_pb2.Feature(
                    float_list=feature_pb2.FloatList(value=[0.1, -2.0])
                ),
                "user.city": feature_pb2.Feature(bytes_list=feature_pb2.BytesList(value=[b"x"])),
                "t": feature_pb2.Feature(int64_list=feature_pb2.Int64List(value=[3])),
            }
        )
    )
    serialized = examples.to_tf_example(example)
    assert serialized == expected.SerializeToString(deterministic=True)
    parsed = tf_example.parse_example(serialized)
    assert parsed["user.emb"] == [pytest.approx(0.1), -2.0]  # float32


def test_feature_spec_gives_dense_features_their_dim():
    spec = examples.feature_spec(["age", "city", "emb"], {"age": 1, "emb": 8})
    assert spec["user.age"] == {"dtype": "float32", "shape": "fixed", "dim": 1}
    assert spec["user.emb"] == {"dtype": "float32", "shape": "fixed", "dim": 8}
    assert spec["user.city"] == {"dtype": "string", "shape": "list"}


def _request(request_id, timestamp, item):
    return {
        "request_id": request_id,
        "user_id": "u1",
        "timestamp": timestamp,
        "recalled": [item],
        "exposed": [item],
        "clicked": [item],
        "user_features": {},
    }


@pytest.mark.parametrize("split", ["time", "leave-last-click-out"])
def test_a_cold_positive_is_eval_under_any_split(split):
    # md5 shares: i6 0.052 and i9 0.068 (cold at 0.1); i3 0.32, i1 0.613 (warm).
    assert [examples.is_cold(i, 0.1) for i in ("i6", "i9", "i3", "i1")] == [1, 1, 0, 0]
    options = examples.ExampleOptions(split=split, eval_from=100, cold_item_fraction=0.1)
    compact = [
        examples.request_positives(_request(f"r{n}", 10 * n, item), options)
        for n, item in enumerate(["i6", "i3", "i9", "i1", "i3"])
    ]
    splits = {e["request_id"]: s for s, e in examples.user_examples(compact, options)}
    # Time split (all before 100): only the cold ones are eval; leave-last-click-out
    # adds the last click (r4).
    last = "eval" if split == "leave-last-click-out" else "train"
    assert splits == {"r0": "eval", "r1": "train", "r2": "eval", "r3": "train", "r4": last}


def test_moments_merge_as_one_pass():
    fn = feature_stats.MomentsFn()

    def accumulate(values):
        accumulator = fn.create_accumulator()
        for value in values:
            accumulator = fn.add_input(accumulator, value)
        return accumulator

    merged = fn.merge_accumulators([accumulate([1.0, 2.0, None]), accumulate([3.0, 4.0, 10.0])])
    # 1, 2, 3, 4, 10: mean 4, population variance (9 + 4 + 1 + 0 + 36) / 5 = 10.
    assert fn.extract_output(merged) == {
        "count": 5,
        "missing": 1,
        "mean": pytest.approx(4.0),
        "std": pytest.approx(math.sqrt(10)),
    }
    assert fn.extract_output(accumulate([None, 7.0, 7.0])) == {
        "count": 2,
        "missing": 1,
        "mean": 7.0,
        "std": 1.0,  # 0: the trainer would divide by it
    }
    assert fn.extract_output(accumulate([None]))["std"] == 1.0
