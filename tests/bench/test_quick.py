"""Every `twotower bench NAME --quick` runs through the command line and writes
OUTPUT/NAME.json with its keys and finite numbers (the docs' commands cannot rot)."""

import json
import math

import numpy as np
import pytest

from twotower import cli
from twotower.bench.settings import BENCHMARKS


def _numbers(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _numbers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _numbers(item)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        yield value


def _run(tmp_path, name, *flags):
    assert cli.main(["bench", name, "--quick", "--output", str(tmp_path), *flags]) == 0
    with open(tmp_path / f"{name}.json") as f:
        result = json.load(f)
    numbers = list(_numbers(result))
    assert numbers and all(math.isfinite(n) for n in numbers)
    return result


def test_every_benchmark_is_tested_here():
    assert set(BENCHMARKS) == {
        "pipeline",
        "uma2",
        "negatives",
        "distributed",
        "serving",
        "debias",
        "train",
        "scale",
        "soak",
        "content",
    }


def test_pipeline(tmp_path):
    result = _run(tmp_path, "pipeline", "--running-mode=in_memory")
    rows = {row["system"]: row for row in result["rows"]}
    assert set(rows) == {"reference", "beam"}
    assert rows["beam"]["requests"] == 2_000  # PipelineBench.QUICK
    assert rows["beam"]["examples"] == rows["reference"]["examples"] > 0
    for row in rows.values():
        assert row["rps"] > 0 and row["peak_rss_mb"] > 10
    assert not (tmp_path / "pipeline" / "out-beam-2000").exists()  # outputs are removed


def test_serving(tmp_path):
    # partition_above=0 puts the tree in front of AH even at the quick corpus's 5k items.
    result = _run(tmp_path, "serving", "--index-partition-above=0", "--k=10", "--e2e-k=10")
    assert result["scann"]["config"]["num_leaves"] == 71  # round(sqrt(5000))
    assert result["scann"]["recall"] >= 0.9
    assert result["e2e"]["requests"] == 200 and result["e2e"]["errors"] == 0
    for part in (result["brute_force"], result["scann"]):
        for mode in ("single", "batched_per_query"):
            assert 0 < part[mode]["p50_ms"] <= part[mode]["p99_ms"]
    assert result["query_tower"]["p50_ms"] > 0
    assert "POST /v1/retrieve" in result["table"]


@pytest.mark.parametrize("name", ["negatives", "uma2"])
def test_training_grids(tmp_path, name):
    result = _run(tmp_path, name)
    (cells,) = result.values()  # one dataset: tiny
    for cell in cells.values():
        assert len(cell["seeds"]) == 1
        summary = cell["summary"]
        sets = {"random_exposure", "logged", "examples_per_second"}
        if "propensities" in summary:  # cells with UMA²'s heads, checked against the truth
            for values in summary["propensities"].values():
                assert np.isfinite(values["mean"])
            assert -1 <= summary["propensities"]["p1_spearman"]["mean"] <= 1
            sets.add("propensities")
        assert set(summary) == sets
        for values in summary["random_exposure"].values():
            assert values["std"] == 0.0  # one seed
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    if name == "negatives":
        assert "tfrs_retrieval" in cells and "clrec_queue_ids" in cells
    else:
        assert set(cells) == {
            f"{s}/{t}" for s in BENCHMARKS["uma2"]().strategies for t in ("youtube_dnn", "dat")
        }
        assert "propensities" in cells["UMA2/youtube_dnn"]["summary"]


def test_debias(tmp_path):
    result = _run(tmp_path, "debias")
    quick = BENCHMARKS["debias"].QUICK
    assert set(result["worlds"]) == set(quick["worlds"])
    for cells in result["worlds"].values():
        # a Multi-CLRec recipe is also scored on its merged intention lists
        assert set(cells) == set(quick["recipes"]) | {"multi_clrec+merge"}
        for cell in cells.values():
            assert 0 < cell["share"]["mean"] < 1.5 and cell["share"]["std"] == 0.0  # one seed
            assert cell["popularity_index"]["mean"] >= 0 and cell["diversity"]["mean"] > 0
    overall = result["overall"]
    for recipe, row in overall.items():
        shares = [result["worlds"][w][recipe]["share"]["mean"] for w in quick["worlds"]]
        assert row["mean_share"] == pytest.approx(sum(shares) / len(shares))
        assert row["worst_share"] == min(shares)
    assert "mean share" in result["table"] and (tmp_path / "debias.png").stat().st_size > 0
    heads = result["propensities"]["uma2"]  # UMA²'s heads against the simulator's truth
    assert set(heads) == set(quick["worlds"])
    for values in heads.values():
        assert -1 <= values["p1_spearman"]["mean"] <= 1 and values["p1_mean_ratio"]["mean"] > 0
    assert "p2_spearman" in result["propensity_table"]


def test_distributed(tmp_path):
    result = _run(tmp_path, "distributed")
    assert [run["workers"] for run in result["runs"]] == [1, 2]
    assert result["runs"][1]["distribution"]["workers"] == 2
    assert result["ratio_2_to_1"] > 0
    assert result["queue_all_gather_ms"]["gather_ms"] > 0


def test_a_bad_flag_names_it(tmp_path, capsys):
    assert cli.main(["bench", "uma2", "--output", str(tmp_path), "--towers=cnn"]) == 1
    assert "--towers: ['cnn'] not among youtube_dnn, dat" in capsys.readouterr().err
    assert cli.main(["bench", "debias", "--output", str(tmp_path), "--recipes=defualt"]) == 1
    assert "--recipes: ['defualt'] not among default, exposure_full" in capsys.readouterr().err
    assert not (tmp_path / "debias").exists()  # refused before any work


def test_train(tmp_path):
    result = _run(tmp_path, "train")
    assert result["catalog"]["sizes"] == [300, 3_000]  # TrainBench.QUICK
    timed = result["timed"]
    assert {
        "catalog/300",
        "catalog/3000",
        "tfrs/plain",
        "tfrs/twotower",
        "tfrs/twotower_full",
        "input/default",
    } <= set(timed)
    tfrs_ = result["tfrs"]
    assert tfrs_["ratio_full_batches"] == round(
        timed["tfrs/plain"]["median_ms"] / timed["tfrs/twotower_full"]["median_ms"], 3
    )
    for cell in timed.values():
        # 5 steps, or one call of 8 (steps_per_execution=8)
        assert cell["steps"] in (5, 8) and cell["median_ms"] > 0 and len(cell["rounds"]) == 1
    catalog = result["catalog"]["median_ms"]
    assert result["catalog"]["ratio"] == round(catalog[1] / catalog[0], 3)
    # UMA² with and without the Space C pool at each catalog size beside the default.
    assert set(result["catalog"]["recipes"]) == {"uma2", "uma2_pool"}
    for recipe, values in result["catalog"]["recipes"].items():
        cells = [timed[f"catalog/{recipe}/{c}"]["median_ms"] for c in (300, 3_000)]
        assert values == {"median_ms": cells, "ratio": round(cells[1] / cells[0], 3)}
    # The default on the smallest catalog, timed twice (QUICK's history length 20 is the
    # default's): the faster is the relative costs' baseline.
    default = result["default"]
    assert default["cells"] == ["catalog/300", "history/20"]
    assert default["median_ms"] == min(timed[c]["median_ms"] for c in default["cells"])
    assert result["relative"]["uma2"] == round(
        timed["relative/uma2"]["median_ms"] / default["median_ms"], 3
    )
    assert set(result["relative"]) == {
        "clrec_cached",
        "clrec_momentum_1024",
        "uma2",
        "uma2_pool",
        "cluster",
        "cluster_shared",
        "multi_clrec",
        "multi_clrec_cached",
        "multi_clrec_momentum_1024",
    }
    # An item feature of 10 and 300 values (QUICK), on the smallest catalog (300 items).
    vocabulary = result["vocabulary"]
    assert vocabulary["brands"] == [10, 300] and vocabulary["catalog"] == 300
    for recipe in ("default", "clrec_momentum_1024"):
        cells = [timed[f"vocabulary/{recipe}/{b}"]["median_ms"] for b in (10, 300)]
        assert vocabulary[recipe]["median_ms"] == cells
        assert vocabulary[recipe]["ratio"] == round(cells[1] / cells[0], 3)
    datasets = tmp_path / "train"
    for brands in (10, 300):
        with open(datasets / f"dataset-300-brands{brands}" / "manifest.json") as f:
            assert "brand" in json.load(f)["item_features"]
    assert set(result["optimizer_ms"]["3000"]) == {"adagrad", "adam", "sgd"}
    loss = result["loss"]
    assert loss["queue"] == 10 * loss["batch"]
    for timing in (loss["without_queue"], loss["with_queue"]):
        assert timing["softmax_ms"] > 0 and timing["floor_ms"] > 0
    assert (tmp_path / "train.png").stat().st_size > 10_000
    assert not list((tmp_path / "train").glob("run-*"))  # runs are removed


def test_train_gpu_check_runs_its_cells(tmp_path, monkeypatch, capsys):
    # `make gpu-bench` is run only where a GPU is lent: its cells run here on the CPU
    # (a GPU named, no nvidia-smi), so the command is known to work before then.
    from twotower.bench import train

    monkeypatch.setattr(train, "gpu_devices", lambda: ["/physical_device:GPU:0"])
    result = _run(tmp_path, "train", "--device", "gpu")
    assert result["devices"] == ["/physical_device:GPU:0"]
    cells = {(r["variant"], r["mixed_precision"], r["xla"]) for r in result["gpu"]}
    assert cells == {
        (variant, mixed, xla)
        for variant, xla in (("base", False), ("queue", False), ("uma2", False), ("base", True))
        for mixed in (False, True)
    }
    for row in result["gpu"]:
        assert row["batch"] == 64 and "error" not in row  # TrainBench.QUICK's gpu_batches
        assert row["steps"] == 5 and row["examples_per_second"] > 0
        assert row["gpu_utilisation"] is None  # no nvidia-smi here
    assert "xla" in capsys.readouterr().out


def test_scale(tmp_path):
    result = _run(tmp_path, "scale")
    stages = [row["stage"] for row in result["stages"]]
    assert stages[:5] == ["simulate", "preprocess", "train", "evaluate", "export"]
    assert stages[5] == "serve + 30 retrievals"
    for row in result["stages"]:
        assert row["seconds"] > 0 and row["peak_rss_mb"] > 30
    assert result["stages"][0]["requests"] > 100
    assert result["stages"][2]["examples_per_second"] > 0
    served = result["stages"][-1]
    assert served["requests"] == 30 and served["errors"] == 0
    assert result["total_seconds"] == round(sum(r["seconds"] for r in result["stages"]), 1)
    assert not (tmp_path / "scale").exists()  # removed unless --keep


def test_soak(tmp_path):
    result = _run(tmp_path, "soak")
    load = result["load"]
    assert result["passed"] and load["errors"] == 0
    assert set(load["statuses"]) == {"200", "422"}  # the 10% with an unknown feature: 422
    assert load["statuses"]["422"] >= load["requests"] // 20
    assert result["reloads"] == 1 and result["final_version"] == 2  # SoakBench.QUICK
    # served while the load ran (both measured from the load's start, on one clock)
    assert result["served_at_seconds"][0] < result["load_stopped_at_seconds"]
    assert result["rss_mb"]["growth"] < 0.1


def test_content(tmp_path):
    result = _run(tmp_path, "content")
    quick = BENCHMARKS["content"].QUICK
    assert set(result["overall"]) == set(quick["variants"])
    world = result["datasets"]["default"]
    for variant, row in result["overall"].items():
        summary = world[variant]["summary"]
        # one world: its share is the mean and the worst; late items make the cold view
        share = summary["random_exposure"]["oracle_share@100"]["mean"]
        assert row["mean_share"] == row["worst_share"] == pytest.approx(share) and share > 0
        cold = summary["cold/random_exposure"]
        assert row["world_cold_recall"] == pytest.approx(cold["recall@100"]["mean"])
        assert 0 <= cold["recall@100"]["mean"] <= 1 and cold["users"]["mean"] > 0
        assert 0 < cold["slot_share@100"]["mean"] < 1
    assert "content+cluster_content" in result["table"]
    assert (tmp_path / "content.png").exists()


def test_train_without_its_vocabulary_part_needs_no_brands(tmp_path):
    result = _run(tmp_path, "train", "--parts=input", "--brands=")
    assert "vocabulary" not in result and result["input"]["ratio"] > 0
