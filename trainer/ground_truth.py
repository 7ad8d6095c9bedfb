"""The simulator's ground truth, read from its output folder (a file contract).

`twotower simulate` writes, beside the logs:
  random_exposure.jsonl  {"user_id", "timestamp", "exposed": [...], "clicked": [...]}
  true_top_k.jsonl       {"user_id", "items": [best first by true affinity]}
  users.jsonl            {"user_id", "features": {name: value or [values]}}
  propensities.jsonl     {"user_id", "requests", "items", "p_recall", "p_expose"}
"""

import dataclasses
import json
import os
from typing import Any

from common import contracts


@dataclasses.dataclass(frozen=True)
class GroundTruth:
    random_exposure: list[dict[str, Any]]
    true_top_k: dict[str, list[str]]
    user_features: dict[str, dict[str, list[str]]]
    user_feature_names: list[str]


def _jsonl(path: str) -> list[dict[str, Any]]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _tokens(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


def load_ground_truth(directory: str) -> GroundTruth:
    """Reads a simulator folder's ground truth.

    Raises:
      FileNotFoundError: naming the missing file.
    """
    paths = {
        "random_exposure": os.path.join(directory, contracts.SIM_RANDOM_EXPOSURE),
        "true_top_k": os.path.join(directory, contracts.SIM_TRUE_TOP_K),
        "users": os.path.join(directory, contracts.SIM_USERS),
    }
    for path in paths.values():
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"{path}: missing; is {directory} a `twotower simulate` folder?"
            )
    users = {
        row["user_id"]: {k: _tokens(v) for k, v in row.get("features", {}).items()}
        for row in _jsonl(paths["users"])
    }
    names = sorted({name for features in users.values() for name in features})
    return GroundTruth(
        random_exposure=_jsonl(paths["random_exposure"]),
        true_top_k={row["user_id"]: row["items"] for row in _jsonl(paths["true_top_k"])},
        user_features=users,
        user_feature_names=names,
    )


def load_propensities(directory: str) -> list[dict[str, Any]]:
    """The true recall and exposure propensities a simulator folder measured.

    Raises:
      FileNotFoundError: naming the missing file (worlds simulated before it existed).
    """
    path = os.path.join(directory, contracts.SIM_PROPENSITIES)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: missing; simulate the world again to measure them")
    return _jsonl(path)
