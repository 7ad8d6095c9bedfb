"""Feature kinds through `twotower preprocess`: numeric, vector, categorical and text
features of users and items, inferred or declared, their statistics (training split
only), their dead letters, the cold-item hold-out and MovieLens' title text.

Text is embedded by a fake encoder (`FakeEmbedTexts`), so no model is needed here;
tests/pipelines/test_text_encoder.py tests the real one.
"""

import hashlib
import json
import math
import os

import apache_beam as beam
import numpy as np
import pytest

from pipelines import text_encoder
from pipelines.preprocess import DataError
from tests.conftest import tiny_world_rows, write_jsonl
from tests.pipelines.conftest import read_dead_letters, read_examples, run_preprocess

T0 = 1_700_000_000
FAKE_DIM = 3


def fake_vector(text):
    """The fake encoder's embedding: [characters, commas, 1], L2-normalised."""
    vector = np.array([len(text), text.count(","), 1.0], dtype=np.float32)
    return vector / np.linalg.norm(vector)


class FakeEmbedTexts(beam.PTransform):
    """`text_encoder.EmbedTexts`' interface without a model."""

    def __init__(self, encoder, batch_size):
        super().__init__()
        assert encoder == "fake-encoder" and batch_size == 2

    def expand(self, texts):
        return texts | "Fake" >> beam.MapTuple(lambda key, text: (key, fake_vector(text)))


@pytest.fixture(scope="module")
def fake_encoder():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(text_encoder, "EmbedTexts", FakeEmbedTexts)
        patch.setattr(text_encoder, "missing_extra", lambda encoder=None: None)
        patch.setattr(text_encoder, "encoder_info", lambda e: {"name": e, "dim": FAKE_DIM})
        yield ["data.text_encoder=fake-encoder", "data.text_batch_size=2"]


def _request(request_id, user, t, item, **features):
    return {
        "request_id": request_id,
        "user_id": user,
        "timestamp": T0 + t,
        "recalled": [item, "i0" if item != "i0" else "i1"],
        "exposed": [item],
        "clicked": [item],
        "user_features": features,
    }


# Run A: kinds inferred (user.visits is declared by data.log_features, item.blurb is
# declared text). Train: r1, r2, r4, r5; eval (each user's last click): r3, r6, whose
# huge values must not move the statistics.
REQUESTS_A = [
    _request("r1", "u1", 0, "i0", age=20, emb=[1, 2], segment="s0", visits=math.expm1(1)),
    _request("r2", "u1", 10, "i1", age=30, emb=[3, 4], segment="s0", visits=math.expm1(2)),
    _request("r3", "u1", 20, "i2", age=1e6, emb=[100, 100], segment="s0", visits=1e9),
    _request("r4", "u2", 5, "i3", age=40, emb=[5, 6], segment="s1", visits=math.expm1(3)),
    _request("r5", "u2", 15, "i4", age=None, segment="s1"),  # null and absent: missing
    _request("r6", "u2", 25, "i5", age=1e6, visits=1e9),
    json.dumps(_request("r7", "u3", 30, "i0", age=float("nan"))),  # line 7: NaN
    _request("r8", "u3", 31, "i0", emb=[1, 2, 3]),  # line 8: the most common length is 2
]
CATALOG_A = [
    {"item_id": "i0", "features": {"band": "b0", "price": 1, "emb": [1, 0], "blurb": "a, b"}},
    {"item_id": "i1", "features": {"band": "b1", "price": 2, "emb": [0, 1], "blurb": "cc"}},
    {"item_id": "i2", "features": {"band": "b0", "price": 3, "emb": [1, 1], "blurb": "d"}},
    {"item_id": "i3", "features": {"band": "b1", "price": 4, "emb": [0, 0], "blurb": ""}},
    {"item_id": "i4", "features": {"band": "b0", "price": 5}},
    {"item_id": "i5", "features": {"band": "b1", "emb": [2, 2], "blurb": "e,f,g"}},
    {"item_id": "i6", "features": {"emb": [1, 2, 3]}},  # line 7: wrong_dimension
    '{"item_id": "i7", "features": {"price": 1e400}}',  # line 8: JSON's inf
]


@pytest.fixture(scope="module")
def inferred(tmp_path_factory, fake_encoder):
    folder = tmp_path_factory.mktemp("kinds_inferred")
    output = folder / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(folder / "requests.jsonl"), REQUESTS_A),
        write_jsonl(str(folder / "items.jsonl"), CATALOG_A),
        "data.max_bad_fraction=1",
        "data.numeric_buckets=2",
        "data.log_features=user.visits",
        "data.text_features=item.blurb",
        *fake_encoder,
    )
    return output, built


def test_kinds_are_inferred_from_the_values(inferred):
    _, built = inferred
    kinds = {name: entry["kind"] for name, entry in built["features"].items()}
    assert kinds == {
        "item.band": "categorical",
        "item.blurb": "text",
        "item.emb": "vector",
        "item.price": "numeric",
        "user.age": "numeric",
        "user.emb": "vector",
        "user.segment": "categorical",
        "user.visits": "numeric",
    }
    assert built["user_features"] == ["age", "emb", "segment", "visits"]
    assert built["item_features"] == ["band"]  # the categorical ones: token tables
    spec = built["feature_spec"]
    assert spec["user.age"] == {"dtype": "float32", "shape": "fixed", "dim": 1}
    assert spec["user.emb"] == {"dtype": "float32", "shape": "fixed", "dim": 2}
    assert spec["user.segment"] == {"dtype": "string", "shape": "list"}
    assert "user.segment" in built["vocabularies"]
    assert not {"user.age", "user.emb", "user.visits"} & set(built["vocabularies"])


def test_user_statistics_come_from_the_training_split_only(inferred):
    _, built = inferred
    # Train ages 20, 30, 40 and r5's missing one; the eval rows' 1e6 count for nothing.
    assert built["features"]["user.age"] == {
        "kind": "numeric",
        "dim": 1,
        "log": False,
        "mean": pytest.approx(30.0),
        "std": pytest.approx(math.sqrt(200 / 3)),  # population std of 20, 30, 40
        "count": 3,
        "missing": 1,
        "boundaries": [30.0],  # numeric_buckets=2: the median
    }
    visits = built["features"]["user.visits"]
    # log1p(expm1(k)) = k for k = 1, 2, 3: mean 2, std sqrt(2/3).
    assert visits["log"] is True and (visits["count"], visits["missing"]) == (3, 1)
    assert visits["mean"] == pytest.approx(2.0) and visits["std"] == pytest.approx(0.816496)
    assert visits["boundaries"] == [pytest.approx(2.0)]
    assert built["features"]["user.emb"] == {"kind": "vector", "dim": 2, "count": 3, "missing": 1}


def test_item_statistics_come_from_the_catalog(inferred):
    output, built = inferred
    # Prices 1..5 and i5's missing one: mean 3, population std sqrt(2).
    assert built["features"]["item.price"] == {
        "kind": "numeric",
        "dim": 1,
        "log": False,
        "mean": pytest.approx(3.0),
        "std": pytest.approx(math.sqrt(2)),
        "count": 5,
        "missing": 1,
        "boundaries": [3.0],
    }
    assert built["features"]["item.emb"] == {"kind": "vector", "dim": 2, "count": 5, "missing": 1}
    with open(os.path.join(output, "item_catalog.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert rows[0]["features"] == {"band": ["b0"]}
    assert rows[0]["dense"] == {"price": [1.0], "emb": [1.0, 0.0]}
    assert rows[0]["text"] == {"blurb": "a, b"}
    assert "price" not in rows[5]["dense"] and "text" not in rows[4]
    assert "text" not in rows[3]  # an empty text is a missing one


def test_text_embeddings_are_written_in_catalog_order(inferred):
    output, built = inferred
    assert built["features"]["item.blurb"] == {
        "kind": "text",
        "dim": FAKE_DIM,
        "encoder": "fake-encoder",
        "file": "item_text/blurb.npy",
        "count": 4,  # i0, i1, i2, i5 (i3's text is empty, i4 has none)
        "missing": 2,
    }
    array = np.load(os.path.join(output, "item_text", "blurb.npy"))
    assert array.shape == (6, FAKE_DIM) and array.dtype == np.float32
    for index, text in ((0, "a, b"), (1, "cc"), (2, "d"), (5, "e,f,g")):
        np.testing.assert_allclose(array[index], fake_vector(text), rtol=1e-6)
    assert np.isnan(array[3]).all() and np.isnan(array[4]).all()


def test_dense_user_features_are_float_lists_nan_when_missing(inferred):
    import tensorflow as tf

    from tests.pipelines.conftest import read_records

    output, built = inferred
    by_request = {e["request_id"][0]: e for e in read_examples(output, "train")}
    assert by_request["r1"]["user.age"] == [20.0]
    assert by_request["r1"]["user.emb"] == [1.0, 2.0]
    assert by_request["r1"]["user.segment"] == ["s0"]
    assert "user.age" not in by_request["r5"] and "user.emb" not in by_request["r5"]
    spec = {
        "request_id": tf.io.FixedLenFeature([], tf.string),
        "user.age": tf.io.FixedLenFeature([1], tf.float32, default_value=[np.nan]),
        "user.emb": tf.io.FixedLenFeature([2], tf.float32, default_value=[np.nan] * 2),
    }
    parsed = tf.io.parse_example(read_records(output, "train"), spec)
    rows = dict(
        zip(parsed["request_id"].numpy().astype(str), parsed["user.emb"].numpy(), strict=True)
    )
    np.testing.assert_array_equal(rows["r4"], [5.0, 6.0])
    assert np.isnan(rows["r5"]).all()


def test_bad_values_of_inferred_kinds_are_dead_lettered(inferred):
    output, built = inferred
    requests = [
        (r["line"], r["reason"], r["detail"]) for r in read_dead_letters(output, "requests")
    ]
    assert requests == [
        (7, "not_finite", "user_features.age: nan is not a finite float32"),
        (8, "wrong_dimension", "user_features.emb: expected 2 numbers, got 3"),
    ]
    catalog = [(r["line"], r["reason"], r["detail"]) for r in read_dead_letters(output, "catalog")]
    assert catalog == [
        (7, "wrong_dimension", "features.emb: expected 2 numbers, got 3"),
        (8, "not_finite", "features.price: inf is not a finite float32"),
    ]
    for table, (read, valid) in {"requests": (8, 6), "catalog": (8, 6)}.items():
        total = built["reconciliation"][table]["total"]
        assert (total["read"], total["valid"], total["dead_letter"]) == (read, valid, read - valid)
        assert built["reconciliation"][table]["balanced"]


# Run B: kinds declared. Numeric strings are numbers; user.code's numbers are tokens.
REQUESTS_B = [
    _request("r1", "u1", 0, "i0", age="35", code=7, emb=["0.5", 1], visits=0),
    _request("r2", "u1", 10, "i1", age=45, code=8),
    _request("r3", "u1", 20, "i0", age=50),
    _request("r4", "u2", 0, "i0", age="old"),  # line 4
    _request("r5", "u2", 1, "i0", age=True),  # 5
    _request("r6", "u2", 2, "i0", emb="x"),  # 6
    _request("r7", "u2", 3, "i0", emb=["a", "b"]),  # 7
    _request("r8", "u2", 4, "i0", visits=-2),  # 8
    _request("r9", "u2", 5, "i0", age=1e39),  # 9: beyond float32
    _request("r10", "u2", 6, "i0", emb=[1]),  # 10
]
EXPECTED_B = [
    (4, "not_a_number", "user_features.age: expected a number, got 'old'"),
    (5, "not_a_number", "user_features.age: expected a number, got True"),
    (6, "bad_type", "user_features.emb: expected a list of 2 numbers, got 'x'"),
    (7, "not_a_number", "user_features.emb[0]: expected a number, got 'a'"),
    (
        8,
        "out_of_log_domain",
        "user_features.visits: -2 <= -1, which log1p cannot take (data.log_features)",
    ),
    (9, "not_finite", "user_features.age: 1e+39 is not a finite float32"),
    (10, "wrong_dimension", "user_features.emb: expected 2 numbers, got 1"),
]
USERS_B = [
    {"user_id": "u1", "features": {"age": 99, "emb": [9, 9]}},  # fills what requests lack
    {"user_id": "u3", "features": {"age": "x"}},  # line 2
]
CATALOG_B = [
    {"item_id": "i0", "features": {"price": "1.5"}},
    {"item_id": "i1", "features": {"price": 2}},
    {"item_id": "i2", "features": {"price": "cheap"}},  # line 3
]


@pytest.fixture(scope="module")
def declared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("kinds_declared")
    output = folder / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(folder / "requests.jsonl"), REQUESTS_B),
        write_jsonl(str(folder / "items.jsonl"), CATALOG_B),
        f"data.users={write_jsonl(str(folder / 'users.jsonl'), USERS_B)}",
        "data.max_bad_fraction=1",
        "data.numeric_features=user.age,item.price",
        "data.vector_features=user.emb:2",
        "data.categorical_features=user.code",
        "data.log_features=user.visits",
    )
    return output, built


def test_declarations_win_over_inference(declared):
    output, built = declared
    kinds = {name: (e["kind"], e.get("dim")) for name, e in built["features"].items()}
    assert kinds == {
        "item.price": ("numeric", 1),
        "user.age": ("numeric", 1),
        "user.code": ("categorical", None),  # numbers, but declared categorical
        "user.emb": ("vector", 2),
        "user.visits": ("numeric", 1),
    }
    (r1, r2) = read_examples(output, "train")
    assert (r1["user.age"], r1["user.code"], r1["user.emb"]) == ([35.0], ["7"], [0.5, 1.0])
    assert r1["user.visits"] == [0.0] and r2["user.code"] == ["8"]
    assert r2["user.emb"] == [9.0, 9.0]  # from the user table; r2's own age wins
    assert built["vocabulary_sizes"]["user.code"] == 2
    # Train ages 35 and 45 (r3 is eval): mean 40, std 5.
    age = built["features"]["user.age"]
    assert (age["mean"], age["std"], age["count"], age["missing"]) == (40.0, 5.0, 2, 0)
    assert age["boundaries"] == []  # data.numeric_buckets=0
    price = built["features"]["item.price"]
    assert (price["mean"], price["std"], price["count"]) == (1.75, 0.25, 2)


def test_each_bad_declared_value_is_dead_lettered_with_its_reason(declared):
    output, built = declared
    rows = read_dead_letters(output, "requests")
    assert [(r["line"], r["reason"], r["detail"]) for r in rows] == EXPECTED_B
    (user,) = read_dead_letters(output, "users")
    assert (user["line"], user["reason"], user["detail"]) == (
        2,
        "not_a_number",
        "features.age: expected a number, got 'x'",
    )
    (item,) = read_dead_letters(output, "catalog")
    assert (item["line"], item["reason"], item["detail"]) == (
        3,
        "not_a_number",
        "features.price: expected a number, got 'cheap'",
    )
    assert built["dead_letter_reasons"]["requests"] == {
        "bad_type": 1,
        "not_a_number": 3,
        "not_finite": 1,
        "out_of_log_domain": 1,
        "wrong_dimension": 1,
    }
    assert built["reconciliation"]["requests"]["total"]["valid"] == 3


def _cold(item_id, fraction):
    """Independently of the pipeline: md5's first 8 bytes below fraction * 2**64."""
    return int.from_bytes(hashlib.md5(item_id.encode()).digest()[:8], "big") < fraction * 2**64


def test_cold_items_never_reach_the_training_split(tmp_path):
    requests, catalog = tiny_world_rows()
    output = tmp_path / "dataset"
    built = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "requests.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), catalog),
        "data.cold_item_fraction=0.3",
    )
    cold = {row["item_id"] for row in catalog if _cold(row["item_id"], 0.3)}
    assert 3 <= len(cold) <= 15  # about 30% of 30 items
    assert built["cold_items"] == {"fraction": 0.3, "count": len(cold)}
    train = read_examples(output, "train")
    assert not {e["item_id"][0] for e in train} & cold
    # Eval: each user's last click (last request, last clicked item) plus every cold click.
    expected = set()
    for user in {r["user_id"] for r in requests}:
        own = sorted((r for r in requests if r["user_id"] == user), key=lambda r: r["timestamp"])
        expected.add((own[-1]["request_id"], own[-1]["clicked"][-1]))
        expected |= {(r["request_id"], i) for r in own for i in r["clicked"] if i in cold}
    evaluated = {(e["request_id"][0], e["item_id"][0]) for e in read_examples(output, "eval")}
    assert evaluated == expected
    assert len(train) + len(evaluated) == sum(len(r["clicked"]) for r in requests)
    with open(os.path.join(output, "item_frequency.tsv")) as f:
        counted = {line.split("\t")[0] for line in f}
    assert counted and not counted & cold


def _write_movielens(folder):
    """A MovieLens-shaped folder: 4 movies, 3 users."""
    os.makedirs(folder)
    with open(os.path.join(folder, "ml-100k.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        f.write("1\tToy Story\t1995\tAnimation Children's Comedy\n")
        f.write("2\tGoldenEye\t1995\tAction Adventure Thriller\n")
        f.write("3\tFour Rooms\t\tThriller\n")  # no year
        f.write("4\tUntitled\t1996\t\n")  # no genre
    with open(os.path.join(folder, "ml-100k.user"), "w") as f:
        f.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        f.writelines(f"{u}\t{20 + u}\tF\twriter\t9{u}000\n" for u in range(1, 4))
    ratings = [(u, i, 5, 100 * i + u) for u in range(1, 4) for i in range(1, 5)]
    with open(os.path.join(folder, "ml-100k.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings)
    return str(folder)


MOVIE_TEXTS = [
    "Toy Story (1995) — Animation, Children's, Comedy",
    "GoldenEye (1995) — Action, Adventure, Thriller",
    "Four Rooms — Thriller",
    "Untitled (1996)",
]


def test_movielens_titles_become_a_text_feature(tmp_path, monkeypatch, fake_encoder):
    monkeypatch.setenv("TWOTOWER_MOVIELENS_DIR", _write_movielens(tmp_path / "ml"))
    from common.config import load_config
    from pipelines.preprocess import preprocess
    from tests.conftest import IN_MEMORY_BEAM

    config = load_config(
        overrides=["data.num_shards=1", "data.text_features=item.title", *fake_encoder]
    )
    output = str(tmp_path / "dataset")
    built = preprocess(config, output, beam_args=IN_MEMORY_BEAM)
    with open(os.path.join(output, "item_catalog.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [row["text"]["title"] for row in rows] == MOVIE_TEXTS
    assert rows[0]["features"] == {
        "genres": ["Animation", "Children's", "Comedy"],
        "year": ["1995"],
    }
    assert built["features"]["item.title"]["count"] == 4
    assert built["features"]["item.year"] == {"kind": "categorical"}  # strings, as before
    assert built["features"]["user.age"] == {"kind": "categorical"}  # the age band
    array = np.load(os.path.join(output, built["features"]["item.title"]["file"]))
    np.testing.assert_allclose(array, [fake_vector(t) for t in MOVIE_TEXTS], rtol=1e-6)


def test_movielens_rows_are_unchanged_without_title_text(tmp_path):
    from pipelines import movielens

    folder = _write_movielens(tmp_path / "ml")
    plain = movielens.write_movielens_logs(folder, str(tmp_path / "plain"), 4.0)
    titled = movielens.write_movielens_logs(folder, str(tmp_path / "titled"), 4.0, title_text=True)
    with open(plain["catalog"]) as f:
        plain_rows = [json.loads(line) for line in f]
    with open(titled["catalog"]) as f:
        titled_rows = [json.loads(line) for line in f]
    assert plain_rows[0] == {
        "item_id": "1",
        "cluster": "Animation",
        "features": {"genres": ["Animation", "Children's", "Comedy"], "year": "1995"},
    }
    for row, with_title, text in zip(plain_rows, titled_rows, MOVIE_TEXTS, strict=True):
        assert with_title["features"].pop("title") == text
        assert with_title == row


def test_text_features_without_the_extra_fail_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setattr(text_encoder, "missing_extra", lambda encoder=None: "no transformers")
    requests, catalog = tiny_world_rows(num_users=2, num_items=6, requests_per_user=1)
    output = tmp_path / "dataset"
    error = run_preprocess(
        output,
        write_jsonl(str(tmp_path / "requests.jsonl"), requests),
        write_jsonl(str(tmp_path / "items.jsonl"), catalog),
        "data.text_features=item.band",
        expect_error=DataError,
    )
    assert str(error) == (
        "data.text_features=['item.band']: no transformers (or leave data.text_features empty)"
    )
    assert sorted(os.listdir(tmp_path)) == ["items.jsonl", "requests.jsonl"]
