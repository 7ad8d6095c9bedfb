"""simulate -> preprocess -> train -> evaluate through the command line, on a small world."""

import json

import pytest

from twotower import cli

BEAM = ["--direct-running-mode", "in_memory"]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    root = tmp_path_factory.mktemp("sim")
    world, dataset, run = root / "world", root / "dataset", root / "run"
    assert (
        cli.main(
            [
                "simulate",
                "--output",
                str(world),
                "--num-users",
                "400",
                "--num-items",
                "600",
                "--days",
                "8",
                "--random-exposure-users",
                "150",
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "preprocess",
                "--output",
                str(dataset),
                *BEAM,
                "--set",
                "data.source=simulator",
                "--set",
                f"data.input={world}",
                "--set",
                "data.split=time",
            ]
        )
        == 0
    )
    overrides = ["training.epochs=4", "training.batch_size=128", "evaluation.ks=[10,50,100]"]
    assert (
        cli.main(
            [
                "train",
                "--data",
                str(dataset),
                "--run-dir",
                str(run),
                "--verbose",
                "0",
                *(arg for o in overrides for arg in ("--set", o)),
            ]
        )
        == 0
    )
    assert cli.main(["evaluate", str(run)]) == 0
    return run


def test_metrics_cover_logged_and_random_exposure_sets(evaluated):
    result = json.loads((evaluated / "metrics.json").read_text())
    assert result["num_items"] == 600
    assert result["random_exposure"]["num_users"] == 150
    assert set(result["methods"]) == {"two_tower", "most_popular", "random"}
    # The random-exposure set also has the oracle: the true affinity's own ranking.
    exposure = result["random_exposure"]["methods"]
    assert set(exposure) == {"two_tower", "most_popular", "random", "oracle"}
    assert exposure["oracle"]["oracle_share@100"] == 1.0
    assert exposure["oracle"]["recall@100"] > exposure["two_tower"]["recall@100"]
    assert exposure["two_tower"]["oracle_share@100"] == pytest.approx(
        exposure["two_tower"]["recall@100"] / exposure["oracle"]["recall@100"]
    )
    assert "true_top_k_overlap@50" in exposure["two_tower"]
    assert "true_top_k_overlap@50" not in result["methods"]["two_tower"]
    # The trained model must beat random on the unbiased set and on the true top-K.
    assert exposure["two_tower"]["recall@100"] > exposure["random"]["recall@100"]
    assert (
        exposure["two_tower"]["true_top_k_overlap@100"]
        > exposure["random"]["true_top_k_overlap@100"]
    )
    # Most-popular recommends the fewest distinct items; random nearly the whole catalog.
    assert (
        result["methods"]["most_popular"]["aggregate_diversity@100"]
        < result["methods"]["two_tower"]["aggregate_diversity@100"]
        <= result["methods"]["random"]["aggregate_diversity@100"]
    )


def test_plots_are_written(evaluated):
    for name in ("hit_rate_at_k.png", "popularity_buckets.png"):
        data = (evaluated / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_simulate_rejects_bad_knobs(tmp_path, capsys):
    code = cli.main(
        ["simulate", "--output", str(tmp_path), "--expose-size", "500", "--recall-size", "100"]
    )
    assert code == 1
    assert (
        "config error: --expose-size: 500 must be <= recall_size (100)" in capsys.readouterr().err
    )


def test_evaluate_without_ground_truth_files_names_them(evaluated, tmp_path, capsys):
    code = cli.main(["evaluate", str(evaluated), "--ground-truth", str(tmp_path)])
    assert code == 1
    assert "random_exposure.jsonl: missing" in capsys.readouterr().err


def test_written_config_reproduces_the_run(evaluated):
    from common.config import load_config

    written = load_config(str(evaluated / "config.yaml"))
    # The defaults with exactly the command line's overrides: nothing lost, nothing added.
    overrides = ["training.epochs=4", "training.batch_size=128", "evaluation.ks=[10,50,100]"]
    assert written == load_config(overrides=overrides)
    assert written != load_config()
