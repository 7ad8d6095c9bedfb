"""Results for people: plain-text tables on the terminal, JSON files beside them."""

import json
import math
import os
from collections.abc import Sequence
from typing import Any


def _cell(value: Any) -> str:
    """Floats to four decimals (recalls, shares, milliseconds), or one from 100 up
    (seconds, examples/s), where more digits are noise that widens the column."""
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.4f}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows of dicts as an aligned text table with a header rule."""
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))  # noqa: E731
    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(columns), rule, *(line(r) for r in cells)])


def save_results(results: dict[str, Any], output_dir: str, name: str) -> str:
    """Writes `results` to OUTPUT/NAME.json (a benchmark's contract); returns the path.

    Raises:
      ValueError: a number in `results` is NaN or infinite (a benchmark that produced one
        is broken, and JSON has no spelling for it).
    """
    _check_finite(results, name)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f"{name}.json")
    with open(path, "w") as f:
        json.dump(results, f, indent=2, allow_nan=False)
    return path


def _check_finite(value: Any, where: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _check_finite(item, f"{where}.{key}")
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_finite(item, f"{where}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{where} is {value}: a benchmark result must be finite")
