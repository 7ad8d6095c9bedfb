"""Benchmark results for people (aligned tables) and for files (finite JSON)."""

import json
import math

import pytest

from twotower.report import format_table, save_results


def test_table_aligns_columns_and_rounds_floats_by_magnitude():
    rows = [
        {"stage": "simulate", "seconds": 85.6, "peak_rss_mb": 169},
        {"stage": "train", "seconds": 29.25, "peak_rss_mb": 831, "examples_per_second": 56426.8},
        {"stage": "evaluate", "seconds": 0.123456, "peak_rss_mb": 2355},
    ]
    lines = format_table(rows, ["stage", "seconds", "peak_rss_mb", "examples_per_second"]).split(
        "\n"
    )
    assert lines[0].split() == ["stage", "seconds", "peak_rss_mb", "examples_per_second"]
    assert set(lines[1]) == {"-", " "}
    assert lines[2].split() == ["simulate", "85.6000", "169"]
    assert lines[3].split() == ["train", "29.2500", "831", "56426.8"]
    assert lines[4].split() == ["evaluate", "0.1235", "2355"]
    # Every column starts where its header does.
    for header in ("seconds", "peak_rss_mb", "examples_per_second"):
        at = lines[0].index(header)
        assert lines[3][at - 1] == " " and lines[3][at] != " "


def test_results_are_saved_as_json_and_a_non_finite_number_is_refused(tmp_path):
    path = save_results({"a": {"b": [1.5, 2]}}, str(tmp_path / "out"), "bench")
    assert path == str(tmp_path / "out" / "bench.json")
    with open(path) as f:
        assert json.load(f) == {"a": {"b": [1.5, 2]}}
    with pytest.raises(ValueError, match=r"bench\.a\.b\[1\]"):
        save_results({"a": {"b": [1.5, math.nan]}}, str(tmp_path), "bench")
    assert not (tmp_path / "bench.json").exists()
