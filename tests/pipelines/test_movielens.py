"""pipelines.movielens and pipelines.legacy_recall on a small MovieLens-shaped folder."""

import json
import os

import pytest

from pipelines import movielens
from pipelines.legacy_recall import LegacyRecall

ITEMS = 12


def _write_movielens(folder, ratings):
    """Writes RecBole atomic files: `ratings` is [(user, item, rating, timestamp)]."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "ml-100k.inter"), "w") as f:
        f.write("user_id:token\titem_id:token\trating:float\ttimestamp:float\n")
        f.writelines(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in ratings)
    with open(os.path.join(folder, "ml-100k.item"), "w") as f:
        f.write("item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n")
        f.writelines(f"{i}\tMovie {i}\t199{i % 10}\tDrama Comedy\n" for i in range(1, ITEMS + 1))
    with open(os.path.join(folder, "ml-100k.user"), "w") as f:
        f.write("user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n")
        f.writelines(f"{u}\t{20 + u}\tF\twriter\t9{u}000\n" for u in range(1, 6))
    return str(folder)


# Users 1-3 rate items in sequence; later ratings make item 7 popular and co-rated.
RATINGS = [
    (1, 1, 5, 100),
    (1, 2, 3, 100),
    (2, 1, 4, 200),
    (2, 3, 5, 300),
    (3, 2, 4, 300),
    (1, 4, 4, 400),
    (3, 7, 5, 500),
    (2, 7, 5, 600),
    (1, 7, 2, 700),
    (4, 7, 4, 800),
    (4, 1, 4, 900),
]


def _requests(folder, tmp_path, name, **kwargs):
    written = movielens.write_movielens_logs(folder, str(tmp_path / name), 4.0, **kwargs)
    with open(written["requests"]) as f:
        return [json.loads(line) for line in f], written


def test_requests_are_grouped_labelled_and_recalled(tmp_path):
    folder = _write_movielens(tmp_path / "ml", RATINGS)
    requests, written = _requests(folder, tmp_path, "out", recall_size=3)
    assert written["num_requests"] == 10 and written["num_items"] == ITEMS
    first = requests[0]
    # User 1 at 100 rated 1 (5 stars, a click) and 2 (3 stars, exposed only).
    assert (first["request_id"], first["exposed"], first["clicked"]) == (
        "ml-1-100",
        ["1", "2"],
        ["1"],
    )
    assert first["user_features"] == {
        "age": "18-24",
        "gender": "F",
        "occupation": "writer",
        "zip_region": "9",
    }
    # Nothing observed yet: all scores tie, so the lowest other items are recalled.
    assert first["recalled"] == ["1", "2", "3", "4", "5"]
    timestamps = [r["timestamp"] for r in requests]
    assert timestamps == sorted(timestamps)
    for request in requests:
        assert request["recalled"][: len(request["exposed"])] == request["exposed"]
        extra = request["recalled"][len(request["exposed"]) :]
        assert len(extra) == 3 and not set(extra) & set(request["exposed"])


def test_recall_never_looks_ahead(tmp_path):
    full, _ = _requests(_write_movielens(tmp_path / "full", RATINGS), tmp_path, "a", recall_size=4)
    for cut in (300, 500, 700):
        kept = [r for r in RATINGS if r[3] <= cut]
        truncated, _ = _requests(
            _write_movielens(tmp_path / f"cut{cut}", kept), tmp_path, f"b{cut}", recall_size=4
        )
        # Every request up to the cut is recalled exactly as with the later ratings present.
        assert truncated == [r for r in full if r["timestamp"] <= cut]
    # And the later ratings do change later recalls: user 4 at 800 gets item 1 (popular).
    assert "1" in full[-2]["recalled"]


def test_legacy_recall_blends_popularity_and_cooccurrence():
    recall = LegacyRecall(num_items=6, recall_size=2, popularity_weight=1.0)
    recall.observe("a", [0, 1])
    recall.observe("b", [1, 2])
    # Popularity only: item 1 (2 ratings) first, then 0 and 2 tie (1 each): the lower index.
    assert recall.recall("c", exposed=[]) == [1, 0]
    assert recall.recall("a", exposed=[]) == [2, 3]  # a's own items are never recalled
    co = LegacyRecall(num_items=6, recall_size=1, popularity_weight=0.0)
    co.observe("a", [0, 4])
    co.observe("b", [0, 5])
    co.observe("b", [3])  # 3 co-occurs with 5 and 0 (user b)
    co.observe("c", [5])
    # c rated 5; C(5, 0) = 1 (user b), C(5, 3) = 1 (user b): tie, the lower index wins.
    assert co.recall("c", exposed=[]) == [0]
    assert co.recall("c", exposed=[0]) == [3]
    with pytest.raises(ValueError, match="popularity_weight"):
        LegacyRecall(3, 1, 1.5)


def test_real_movielens_if_installed(tmp_path):
    try:
        folder = movielens.locate_movielens_100k()
    except movielens.MovieLensNotFoundError:
        pytest.skip("MovieLens-100K files not installed")
    titles = movielens.movie_titles(folder)
    assert len(titles) == 1682


def test_missing_movielens_names_the_setup_command(tmp_path, monkeypatch):
    monkeypatch.setenv(movielens.MOVIELENS_DIR_VARIABLE, str(tmp_path))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(movielens.MovieLensNotFoundError, match="recbole"):
        movielens.locate_movielens_100k()


def test_requests_of_one_timestamp_do_not_see_each_other(tmp_path):
    # Both rate at 100. Had user 1's rating of 5 been observed before user 2's recall,
    # item 5 would be the most popular; unobserved, all tie and item 1 (lowest) wins.
    folder = _write_movielens(tmp_path / "ml", [(1, 5, 5, 100), (2, 6, 5, 100), (3, 9, 5, 200)])
    requests, _ = _requests(folder, tmp_path, "out", recall_size=1, popularity_weight=1.0)
    assert [r["recalled"] for r in requests] == [["5", "1"], ["6", "1"], ["9", "5"]]
