"""pipelines.transforms: each Beam step on a TestPipeline, outputs checked by assert_that."""

import glob
import json
import pickle

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from common import contracts
from pipelines import duplicates, examples, transforms
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
        duplicates.KeepFirstFn(),
    ):
        assert type(pickle.loads(pickle.dumps(dofn))) is type(dofn)


def _counters(pipeline):
    return {c.key.metric.name: c.committed for c in pipeline.result.metrics().query()["counters"]}


def test_parse_request_fn_splits_valid_and_dead_letters():
    raw = [
        ("f", 1, None, _line("r1", "u1", 10, ["i1"]), None),
        ("f", 2, None, _line("r2", "u1", 11, []), None),  # valid, no click: not shuffled
        ("f", 3, None, _line("r3", "u1", 12, ["i3"]), None),  # i3 recalled, not exposed
        ("f", 4, None, _line("r4", "u1", 13, [], recalled=("i1", "i2", "i9")), None),
        ("f", 5, None, "{", None),
        ("f", 6, None, "\ufffd", ("bad_encoding", "not UTF-8 at byte 0")),
        ("f", 7, None, _line("r7", "u1", 1e400, []), None),  # JSON's inf
        ("f", 8, None, _line("r8", "u1", "inf", []), None),
        ("f", 9, None, _line("r9", "u1", 1e30, []), None),
        ("f", 10, None, "[" * 100_000 + "]" * 100_000, None),
        ("f", 11, None, None, ("truncated_gzip", "gzip the stream stops before its end")),
    ]
    with _pipeline() as p:
        outputs = (
            p
            | beam.Create(raw)
            | beam.ParDo(
                transforms.ParseRequestFn(OPTIONS),
                beam.pvalue.AsDict(p | "Catalog" >> beam.Create(list(CATALOG.items()))),
            ).with_outputs(transforms.DEAD_LETTER, transforms.SEEN, main="requests")
        )
        assert_that(
            outputs["requests"]
            | beam.Map(lambda r: (r["request_id"], r["positives"][0][0], r["position"])),
            equal_to([("r1", "i1", ("f", 1, None))]),
        )
        assert_that(
            outputs[transforms.DEAD_LETTER] | beam.Map(lambda d: (d["line"], d["reason"])),
            equal_to(
                [
                    (3, "clicked_not_exposed"),
                    (4, "unknown_item"),
                    (5, "bad_json"),
                    (6, "bad_encoding"),
                    (7, "bad_timestamp"),
                    (8, "bad_timestamp"),
                    (9, "timestamp_out_of_range"),
                    (10, "too_deep"),
                    (11, "truncated_gzip"),
                ]
            ),
            label="DeadLetters",
        )
        # Every valid request, clicked or not: (id, (position, timestamp, exposed,
        # clicked?, user)).
        assert_that(
            outputs[transforms.SEEN],
            equal_to(
                [
                    ("r1", (("f", 1, None), 10, "i1\x1fi2", True, "u1")),
                    ("r2", (("f", 2, None), 11, "i1\x1fi2", False, "u1")),
                ]
            ),
            label="Seen",
        )
    values = _counters(p)
    assert values["requests.read:f"] == 11
    assert values["requests.valid:f"] == 2
    assert values["requests.dead_letter:f"] == 9
    assert values["requests.unreadable:f"] == 1
    assert values["requests_without_clicks"] == 1


def test_any_exception_while_checking_a_row_dead_letters_it(monkeypatch):
    from pipelines import records

    validate = records.validate_request

    def flaky(record, limits):
        if record.get("request_id") == "r2":
            raise ZeroDivisionError("a bug met by one row")
        return validate(record, limits)

    monkeypatch.setattr(records, "validate_request", flaky)
    raw = [("f", n, None, _line(f"r{n}", "u1", 10 + n, ["i1"]), None) for n in (1, 2, 3)]
    with _pipeline() as p:
        outputs = (
            p
            | beam.Create(raw)
            | beam.ParDo(
                transforms.ParseRequestFn(OPTIONS),
                beam.pvalue.AsDict(p | "Catalog" >> beam.Create(list(CATALOG.items()))),
            ).with_outputs(transforms.DEAD_LETTER, transforms.SEEN, main="requests")
        )
        assert_that(
            outputs[transforms.DEAD_LETTER]
            | beam.Map(lambda d: (d["line"], d["reason"], d["detail"])),
            equal_to([(2, "invalid_record", "ZeroDivisionError: a bug met by one row")]),
        )
    values = _counters(p)
    assert (values["requests.read:f"], values["requests.valid:f"]) == (3, 2)
    assert values["reason:requests:invalid_record"] == 1


def test_find_duplicates_keeps_the_first_row_of_each_request_id():
    def seen(request_id, source, line, timestamp, clicked):
        return request_id, ((source, line, None), timestamp, f"e{line}", clicked, "u1")

    entries = [
        seen("r1", "b.jsonl", 1, 100, True),  # later file: a duplicate of a.jsonl:5
        seen("r1", "a.jsonl", 5, 101, False),  # first in file order: kept
        seen("r1", "a.jsonl", 9, 102, False),  # a duplicate without a click
        seen("r2", "a.jsonl", 7, 103, True),  # unique
    ]
    with _pipeline() as p:
        found = p | beam.Create(entries) | duplicates.FindDuplicates()
        # Only the kept rows' exposures are counted.
        assert_that(found[duplicates.EXPOSURES], equal_to([(101, ("e5",)), (103, ("e7",))]))
        assert_that(
            found[duplicates.DUPLICATES],
            equal_to([("r1", ("a.jsonl", 5, None))]),
            label="Duplicated",
        )
        # The clicked duplicate (b.jsonl:1) is dropped by UserExamplesFn, not here.
        assert_that(
            found[transforms.DEAD_LETTER]
            | beam.Map(lambda d: (d["source"], d["line"], d["reason"], d["detail"], d["record"])),
            equal_to(
                [
                    (
                        "a.jsonl",
                        9,
                        "duplicate_request",
                        "request_id 'r1' first at a.jsonl:5",
                        {"request_id": "r1", "user_id": "u1", "timestamp": 102},
                    )
                ]
            ),
            label="DeadLetters",
        )
    values = _counters(p)
    assert values["requests.valid:a.jsonl"] == -1  # ParseRequestFn had counted it valid
    assert values["requests.dead_letter:a.jsonl"] == 1
    assert values["requests_without_clicks"] == -1
    assert values["reason:requests:duplicate_request"] == 1


def test_first_row_fn_merges_in_any_order():
    fn = duplicates.FirstRowFn()
    entries = [(("f", n, None), n, "", n % 2 == 0, "u") for n in (5, 3, 8, 1)]
    one = fn.add_input(fn.add_input(fn.create_accumulator(), entries[0]), entries[1])
    other = fn.add_input(fn.add_input(fn.create_accumulator(), entries[2]), entries[3])
    first, later = fn.extract_output(fn.merge_accumulators([one, other]))
    assert first == entries[3]  # line 1
    assert sorted(position for position, *_ in later) == [
        ("f", 3, None),
        ("f", 5, None),
        ("f", 8, None),
    ]


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


def test_user_examples_fn_drops_later_rows_of_a_duplicated_request_id():
    def compact(request_id, timestamp, line):
        request = {
            "request_id": request_id,
            "user_id": "u1",
            "timestamp": timestamp,
            "recalled": ["i1", "i2"],
            "exposed": ["i1", "i2"],
            "clicked": ["i1"],
            "user_features": {},
        }
        return {**examples.request_positives(request, OPTIONS), "position": ("f", line, None)}

    # r1 at line 2 is first; its copy at line 9 goes, whatever its timestamp.
    requests = [compact("r1", 100, 2), compact("r1", 50, 9), compact("r2", 200, 4)]
    with _pipeline() as p:
        duplicated = beam.pvalue.AsDict(p | "Duplicated" >> beam.Create([("r1", ("f", 2, None))]))
        outputs = (
            p
            | beam.Create([("u1", (requests, []))])
            | beam.ParDo(transforms.UserExamplesFn(OPTIONS), duplicated=duplicated).with_outputs(
                contracts.TRAIN, contracts.EVAL, transforms.DUPLICATE_REQUESTS
            )
        )
        assert_that(
            outputs[contracts.TRAIN] | beam.Map(lambda e: (e["request_id"], e["timestamp"])),
            equal_to([("r1", 100)]),
        )
        assert_that(
            outputs[contracts.EVAL] | "Eval" >> beam.Map(lambda e: e["request_id"]),
            equal_to(["r2"]),
            label="Eval",
        )
        assert_that(
            outputs[transforms.DUPLICATE_REQUESTS]
            | beam.Map(lambda d: (d["line"], d["reason"], d["detail"])),
            equal_to([(9, "duplicate_request", "request_id 'r1' first at f:2")]),
            label="DeadLetters",
        )
    values = _counters(p)
    assert values["requests.valid:f"] == -1 and values["requests.dead_letter:f"] == 1


def test_exposed_items_travel_packed():
    for items in ([], ["i1"], ["i1", "i22", "é"]):
        assert duplicates.unpack(duplicates.pack(items)) == tuple(items)
