"""pipelines.transforms: each Beam step on a TestPipeline, outputs checked by assert_that."""

import glob
import json
import pickle

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from common import contracts
from pipelines import examples, transforms
from tests.conftest import IN_MEMORY_BEAM

OPTIONS = examples.ExampleOptions(history_length=5, num_a=1, num_b=1)
CATALOG = {"i1": None, "i2": None, "i3": None}


def _line(request_id, user, timestamp, clicked, exposed=("i1", "i2"), recalled=("i1", "i2", "i3")):
    return json.dumps(
        {
            "request_id": request_id,
            "user_id": user,
            "timestamp": timestamp,
            "recalled": list(recalled),
            "exposed": list(exposed),
            "clicked": list(clicked),
        }
    )


def _pipeline():
    return test_pipeline.TestPipeline(argv=list(IN_MEMORY_BEAM))


def test_dofns_pickle():
    for dofn in (
        transforms.ParseRequestFn(OPTIONS),
        transforms.ParseUserFn(),
        transforms.UserExamplesFn(OPTIONS),
    ):
        assert type(pickle.loads(pickle.dumps(dofn))) is type(dofn)


def test_parse_request_fn_splits_valid_and_dead_letters():
    raw = [
        ("f", 1, None, _line("r1", "u1", 10, ["i1"]), None),
        ("f", 2, None, _line("r2", "u1", 11, []), None),  # valid, no click: not shuffled
        ("f", 3, None, _line("r3", "u1", 12, ["i3"]), None),  # i3 recalled, not exposed
        ("f", 4, None, _line("r4", "u1", 13, [], recalled=("i1", "i2", "i9")), None),
        ("f", 5, None, "{", None),
        ("f", 6, None, "\ufffd", ("bad_encoding", "not UTF-8 at byte 0")),
    ]
    with _pipeline() as p:
        outputs = (
            p
            | beam.Create(raw)
            | beam.ParDo(
                transforms.ParseRequestFn(OPTIONS, emit_timestamps=True),
                beam.pvalue.AsDict(p | "Catalog" >> beam.Create(list(CATALOG.items()))),
            ).with_outputs(transforms.DEAD_LETTER, transforms.TIMESTAMPS, main="requests")
        )
        assert_that(
            outputs["requests"] | beam.Map(lambda r: (r["request_id"], r["positives"][0][0])),
            equal_to([("r1", "i1")]),
        )
        assert_that(
            outputs[transforms.DEAD_LETTER] | beam.Map(lambda d: (d["line"], d["reason"])),
            equal_to(
                [
                    (3, "clicked_not_exposed"),
                    (4, "unknown_item"),
                    (5, "bad_json"),
                    (6, "bad_encoding"),
                ]
            ),
            label="DeadLetters",
        )
        assert_that(outputs[transforms.TIMESTAMPS], equal_to([10, 11]), label="Timestamps")
    counters = p.result.metrics().query()["counters"]
    values = {c.key.metric.name: c.committed for c in counters}
    assert values["requests.read:f"] == 6
    assert values["requests.valid:f"] == 2
    assert values["requests.dead_letter:f"] == 4
    assert values["requests_without_clicks"] == 1


def test_parse_user_fn():
    raw = [
        ("users.jsonl", 1, None, '{"user_id": "u1", "features": {"age": 30}}', None),
        ("users.jsonl", 2, None, '{"features": {}}', None),
    ]
    with _pipeline() as p:
        outputs = (
            p
            | beam.Create(raw)
            | beam.ParDo(transforms.ParseUserFn()).with_outputs(
                transforms.DEAD_LETTER, main="users"
            )
        )
        assert_that(
            outputs["users"] | beam.MapTuple(lambda user, value: (user, value[0], value[1])),
            equal_to([("u1", ("users.jsonl", 1), {"age": ["30"]})]),
        )
        assert_that(
            outputs[transforms.DEAD_LETTER] | beam.Map(lambda d: d["reason"]),
            equal_to(["missing_id"]),
            label="DeadLetters",
        )


def test_user_examples_fn_joins_profiles_and_rejects_duplicates():
    requests = [
        examples.request_positives(
            {
                "request_id": f"r{t}",
                "user_id": "u1",
                "timestamp": t,
                "recalled": ["i1", "i2"],
                "exposed": ["i1", "i2"],
                "clicked": [f"i{t}"] if t == 1 else ["i2"],
                "user_features": {},
            },
            OPTIONS,
        )
        for t in (1, 2)
    ]
    first = (("users.csv", 2), {"age": ["30"]}, ("users.csv", 2, None, {"user_id": "u1"}, None))
    second = (("users.csv", 7), {"age": ["99"]}, ("users.csv", 7, None, {"user_id": "u1"}, None))
    with _pipeline() as p:
        outputs = (
            p
            | beam.Create([("u1", (requests, [second, first]))])
            | beam.ParDo(transforms.UserExamplesFn(OPTIONS)).with_outputs(
                contracts.TRAIN, contracts.EVAL, transforms.DEAD_LETTER
            )
        )
        as_tuple = lambda e: (e["item_id"], tuple(e["history"]), tuple(e["user.age"]))  # noqa: E731
        assert_that(outputs[contracts.TRAIN] | beam.Map(as_tuple), equal_to([("i1", (), ("30",))]))
        assert_that(
            outputs[contracts.EVAL] | "Eval" >> beam.Map(as_tuple),
            equal_to([("i2", ("i1",), ("30",))]),
            label="Eval",
        )
        assert_that(
            outputs[transforms.DEAD_LETTER] | beam.Map(lambda d: (d["line"], d["reason"])),
            equal_to([(7, "duplicate_user")]),
            label="DeadLetters",
        )


def test_user_examples_fn_takes_eval_from_as_side_input():
    options = examples.ExampleOptions(split="time", eval_from=0)
    requests = [
        examples.request_positives(
            {
                "request_id": f"r{t}",
                "user_id": "u1",
                "timestamp": t,
                "recalled": ["i1"],
                "exposed": ["i1"],
                "clicked": ["i1"],
                "user_features": {},
            },
            options,
        )
        for t in (100, 200)
    ]
    with _pipeline() as p:
        cut = beam.pvalue.AsSingleton(p | "Cut" >> beam.Create([150]))
        outputs = (
            p
            | beam.Create([("u1", (requests, []))])
            | beam.ParDo(transforms.UserExamplesFn(options), eval_from=cut).with_outputs(
                contracts.TRAIN, contracts.EVAL
            )
        )
        assert_that(outputs[contracts.EVAL] | beam.Map(lambda e: e["timestamp"]), equal_to([200]))


def test_compute_vocabularies_counts_and_orders():
    train = [
        {"user_id": "u1", "item_id": "i1", "user.age": ["30"]},
        {"user_id": "u1", "item_id": "i2", "user.age": ["30"]},
        {"user_id": "u2", "item_id": "i2", "user.age": ["40"]},
    ]
    with _pipeline() as p:
        rows = p | beam.Create(train) | transforms.ComputeVocabularies()
        # Most frequent first, ties by token.
        assert_that(
            rows | beam.Map(json.loads),
            equal_to(
                [
                    {"feature": "user_id", "tokens": [["u1", 2], ["u2", 1]]},
                    {"feature": "item_id", "tokens": [["i2", 2], ["i1", 1]]},
                    {"feature": "user.age", "tokens": [["30", 2], ["40", 1]]},
                ]
            ),
        )


def test_write_dead_letters_writes_json_lines(tmp_path):
    rows = [{"source": "f", "line": 1, "reason": "bad_json", "record": "{"}]
    with _pipeline() as p:
        _ = p | beam.Create(rows) | transforms.WriteDeadLetters(str(tmp_path / "requests"))
    (path,) = glob.glob(str(tmp_path / "requests-*.jsonl"))
    with open(path) as f:
        assert [json.loads(line) for line in f] == rows
