"""Properties of the row validators over arbitrary input: whatever a row holds, checking
it raises nothing but `BadRecord`, and every row is either valid or dead-lettered."""

import contextlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines import catalog, examples, records, sources, tf_example, transforms

SETTINGS = settings(max_examples=200, deadline=None)
LIMITS = records.RecordLimits(max_id_bytes=16, max_row_bytes=4_000)
OPTIONS = examples.ExampleOptions(history_length=3, num_a=1, num_b=2)
CATALOG = {f"i{i}": None for i in range(4)}

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
ids = st.sampled_from(["r1", "u1", "", " ", "x" * 20, "u\n", "u\ud800"])
items = st.lists(st.sampled_from([*CATALOG, "i9", "", "i\t1", "\udc80"]), max_size=5)


def _field(plausible):
    """Mostly a plausible value (so that the later rules are reached), else anything."""
    return st.one_of(plausible, plausible, plausible, json_values)


@st.composite
def _spaces(draw):
    """recalled ⊇ exposed ⊇ clicked from the catalog, the sets broken now and then."""
    recalled = draw(st.lists(st.sampled_from(list(CATALOG)), max_size=4))
    exposed = draw(st.lists(st.sampled_from(recalled), max_size=3)) if recalled else []
    clicked = draw(st.lists(st.sampled_from(exposed), max_size=2)) if exposed else []
    spaces = {"recalled": recalled, "exposed": exposed, "clicked": clicked}
    for field in draw(st.sets(st.sampled_from(list(spaces)), max_size=2)):
        spaces[field] = draw(st.one_of(items, json_values))
    return spaces


features = st.dictionaries(
    st.sampled_from(["age", "tags", "a/b", ""]),
    st.text(max_size=20) | st.lists(st.text(max_size=20), max_size=3) | scalars,
    max_size=3,
)


@st.composite
def _requests(draw):
    record = {
        "request_id": draw(_field(st.sampled_from(["r1", "r2"]) | ids)),
        "user_id": draw(_field(st.sampled_from(["u1", "u2"]) | ids)),
        "timestamp": draw(
            _field(
                st.integers(0, 4_102_444_800)
                | st.integers(-(2**70), 2**70)
                | st.floats()
                | st.sampled_from(["1700000000", "2023-11-14T22:13:20Z", "1e400", "nan"])
            )
        ),
        **draw(_spaces()),
        "user_features": draw(_field(features)),
    }
    for field in draw(st.sets(st.sampled_from(list(record)), max_size=1)):
        del record[field]  # an absent field, now and then
    return record


requests = _requests()
lines = (
    st.text(max_size=200)
    | requests.map(json.dumps)
    | st.binary(max_size=100).map(lambda b: b.decode("latin-1"))
    | st.integers(1, 3_000).map(lambda depth: "[" * depth + "]" * depth)
)


def _check_request(request):
    """A valid request keeps its promises, and its examples serialize."""
    assert set(request["clicked"]) <= set(request["exposed"]) <= set(request["recalled"])
    assert LIMITS.min_timestamp <= request["timestamp"] <= LIMITS.max_timestamp
    for item in request["recalled"]:
        assert len(item.encode()) <= LIMITS.max_id_bytes and "\t" not in item
    compact = examples.request_positives(request, OPTIONS)
    for _, example in examples.user_examples([compact], OPTIONS):
        assert tf_example.parse_example(examples.to_tf_example(example))


@SETTINGS
@given(requests)
def test_validate_request_raises_only_bad_records(record):
    try:
        request, _ = records.validate_request(record, LIMITS)
    except records.BadRecord as bad:
        assert bad.reason and bad.detail
        return
    _check_request(request)


@SETTINGS
@given(lines)
def test_any_line_parses_or_is_a_bad_record(line):
    try:
        request, _ = records.parse_request_line(line, LIMITS)
    except records.BadRecord as bad:
        assert bad.reason
        return
    _check_request(request)


@SETTINGS
@given(json_values)
def test_user_and_catalog_rows_raise_only_bad_records(value):
    for validate in (records.validate_user, catalog.validate_item):
        with contextlib.suppress(records.BadRecord):
            validate(value, LIMITS)


def _outputs(fn, raw, *args):
    fn.start_bundle()
    outputs = list(fn.process(raw, *args))
    return outputs, dict(fn._counts)


@SETTINGS
@given(lines, st.sampled_from([None, ("bad_encoding", "not UTF-8 at byte 0")]))
def test_parse_request_fn_counts_balance(line, error):
    raw = ("f.jsonl", 7, None, line, error)
    outputs, counts = _outputs(transforms.ParseRequestFn(OPTIONS, LIMITS), raw, CATALOG)
    tags = [getattr(o, "tag", "requests") for o in outputs]
    valid = counts.get("requests.valid:f.jsonl", 0)
    dead = counts.get("requests.dead_letter:f.jsonl", 0)
    assert counts["requests.read:f.jsonl"] == 1 == valid + dead
    if dead:
        assert tags == [transforms.DEAD_LETTER]
        row = outputs[0].value
        assert (row["source"], row["line"], row["record"]) == ("f.jsonl", 7, line)
        assert counts[f"reason:requests:{row['reason']}"] == 1
        assert sources.dead_letter_json(row)  # writing it cannot fail
    else:
        assert tags[0] == transforms.SEEN and set(tags[1:]) <= {"requests"}


@SETTINGS
@given(json_values)
def test_parse_user_fn_counts_balance(value):
    raw = ("users.parquet", None, 3, value, None)
    outputs, counts = _outputs(transforms.ParseUserFn(LIMITS), raw)
    valid = counts.get("users.valid:users.parquet", 0)
    dead = counts.get("users.dead_letter:users.parquet", 0)
    assert counts["users.read:users.parquet"] == 1 == valid + dead == len(outputs)
    if dead:
        assert sources.dead_letter_json(outputs[0].value)
