"""Shared fixtures. Importing twotower first selects Keras 2 before TensorFlow loads."""

import json
import os

import pytest

import twotower  # noqa: F401  (sets TF_USE_LEGACY_KERAS before any test imports TensorFlow)

IN_MEMORY_BEAM = ("--runner=DirectRunner", "--direct_running_mode=in_memory")


def write_jsonl(path: str, rows: list) -> str:
    """Writes dicts as JSON lines (strings are written verbatim, for broken lines)."""
    with open(path, "w") as f:
        for row in rows:
            f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")
    return path


def tiny_world_rows(num_users: int = 12, num_items: int = 30, requests_per_user: int = 4):
    """A small deterministic log: user u clicks items of their own cluster."""
    catalog = [
        {"item_id": f"i{i}", "cluster": f"c{i % 3}", "features": {"band": f"b{i % 2}"}}
        for i in range(num_items)
    ]
    requests = []
    for u in range(num_users):
        for r in range(requests_per_user):
            base = (u % 3) + 3 * ((u + r) % (num_items // 3))
            recalled = [f"i{(base + 3 * j) % num_items}" for j in range(6)]
            requests.append(
                {
                    "request_id": f"r{u}-{r}",
                    "user_id": f"u{u}",
                    "timestamp": 1_700_000_000 + 100 * r + u,
                    "recalled": recalled + [f"i{(base + 1) % num_items}"],
                    "exposed": recalled[:4],
                    "clicked": recalled[:1] if r % 2 == 0 else recalled[:2],
                    "user_features": {"segment": f"s{u % 2}"},
                }
            )
    return requests, catalog


def run_preprocess(output, requests, catalog, *overrides, expect_error=None):
    """Preprocesses `requests` with `catalog` into `output`; returns the manifest."""
    from common.config import load_config
    from pipelines.preprocess import preprocess

    config = load_config(
        overrides=[
            "data.source=logs",
            f"data.input={requests}",
            f"data.catalog={catalog}",
            "data.num_shards=2",
            *overrides,
        ]
    )
    if expect_error:
        with pytest.raises(expect_error) as raised:
            preprocess(config, str(output), beam_args=IN_MEMORY_BEAM, overwrite=True)
        return raised.value
    return preprocess(config, str(output), beam_args=IN_MEMORY_BEAM, overwrite=True)


@pytest.fixture(scope="session")
def tiny_logs(tmp_path_factory):
    """(requests.jsonl, items.jsonl) of `tiny_world_rows`."""
    folder = tmp_path_factory.mktemp("tiny_logs")
    requests, catalog = tiny_world_rows()
    return (
        write_jsonl(os.path.join(folder, "requests.jsonl"), requests),
        write_jsonl(os.path.join(folder, "items.jsonl"), catalog),
    )


@pytest.fixture(scope="session")
def tiny_dataset(tiny_logs, tmp_path_factory):
    """A dataset directory made from `tiny_logs` by the real Beam pipeline."""
    requests, catalog = tiny_logs
    output = str(tmp_path_factory.mktemp("tiny") / "dataset")
    run_preprocess(output, requests, catalog)
    return output


def export(run_dir, index=None, **options):
    """`twotower export RUN_DIR` as the command wires it: serving's item index builder
    (`index`: an IndexConfig, default auto) and `ExportOptions(**options)`."""
    from trainer.export import export_run
    from trainer.export_options import ExportOptions
    from twotower.wiring import export_builder

    return export_run(run_dir, index=export_builder(index), options=ExportOptions(**options))


DEMO_OVERRIDES = ["training.epochs=3", "training.deterministic=true"]


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """(work dir, results) of `twotower demo` on MovieLens-100K, Beam in memory, op
    determinism on (tests/test_reproducible.py runs it once more and compares)."""
    from common.config import load_config
    from twotower.demo import run_demo

    work_dir = str(tmp_path_factory.mktemp("demo"))
    config = load_config(overrides=DEMO_OVERRIDES)
    results = run_demo(config, work_dir, beam_args=IN_MEMORY_BEAM, verbose=0, log=lambda _: None)
    return work_dir, results
