"""Every command shown in README.md and docs/*.md runs, as written, on tiny data.

A fence marked ```bash (or ```sh) holds commands; every other fence is text and may not
hold a `twotower` command. Each document's blocks run in order with bash, in one sandbox
folder shared by all documents, with `twotower` (and `.venv/bin/twotower`) resolving to
tests/doc_sandbox.py: the real command line, the data made tiny. The sandbox holds
small stand-ins for the user data the docs name (`logs/`, `catalog/`, `users/`,
`work/logs/`) and a MovieLens-100K cut to 60 users. Commands that need a cluster, cloud
storage, Docker or TF Serving are excepted below, each with its reason, and listed.
"""

import gzip
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest

from tests.conftest import tiny_world_rows, write_jsonl

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOCS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
COMMAND_FENCES = ("bash", "sh")

# (pattern, why it cannot run here): matched against each logical command line.
EXCEPTED = [
    (r"^make test\b", "the README's test command is CI itself (`.ci/run`)"),
    (
        r"^make demo\b",
        "`make setup` (a fresh virtualenv) + `twotower demo`, which tests/test_demo.py runs",
    ),
    (r"^docker ", "no Docker engine on this machine"),
    (r"^make image\b", "`docker build` of k8s/Dockerfile: no Docker engine on this machine"),
    (r"^kubectl ", "no Kubernetes cluster"),
    (r"^curl .*localhost:850[01]", "TF Serving's ports: no TF Serving binary can be installed"),
    (r"\b(gs|s3|hdfs)://", "cloud storage and a cloud or cluster Beam runner"),
    (r"--apply\b", "applies a manifest to a cluster"),
]

# What some documents must leave behind (beyond exit code 0), to catch a silent no-op.
EXPECTED_FILES = {
    "README.md": ["work/run/metrics.json", "work/run/export/export_manifest.json"],
    "docs/distributed.md": ["work/run-2w/run.json"],
    "docs/pipeline.md": ["work/datasets/LATEST", "work/logs-ds/manifest.json"],
    "docs/run_directory.md": ["work/layout-run/export/query_tower/5/saved_model.pb"],
    "docs/serving.md": ["work/serving-run/export/export_manifest.json"],
    "docs/simulator.md": ["work/sim-run/metrics.json"],
}


def fences(path: pathlib.Path) -> list[tuple[int, str, str]]:
    """(first line, language, text) of every fenced block of a markdown file."""
    blocks, current = [], None
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.startswith("```"):
            if current is None:
                current = (number + 1, line[3:].strip(), [])
            else:
                blocks.append((current[0], current[1], "\n".join(current[2])))
                current = None
        elif current is not None:
            current[2].append(line)
    return blocks


def logical_lines(script: str) -> list[str]:
    """Commands of a script: continuations joined, comments and blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [
        line.strip()
        for line in joined.splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]


def excepted(line: str) -> str | None:
    return next((why for pattern, why in EXCEPTED if re.search(pattern, line)), None)


def _write_tiny_movielens(folder: pathlib.Path) -> None:
    from pipelines.movielens import locate_movielens_100k

    source = pathlib.Path(locate_movielens_100k())
    folder.mkdir(parents=True)
    for name in ("ml-100k.item", "ml-100k.user"):
        (folder / name).write_bytes((source / name).read_bytes())
    with (
        open(source / "ml-100k.inter", encoding="utf-8") as f,
        open(folder / "ml-100k.inter", "w", encoding="utf-8") as out,
    ):
        out.write(f.readline())  # the header
        out.writelines(line for line in f if int(line.split("\t")[0]) <= 60)


def _write_user_data(root: pathlib.Path) -> None:
    """Stand-ins for the logs, catalog and user table the pipeline docs point at."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    requests, catalog = tiny_world_rows()
    later = [
        dict(r, request_id=f"d2-{r['request_id']}", timestamp=r["timestamp"] + 86_400)
        for r in requests
    ]
    for day, rows in (("2024-06-06", requests), ("2024-06-07", later)):
        (root / "work" / "logs" / day).mkdir(parents=True)
        write_jsonl(str(root / "work" / "logs" / day / "part-0.jsonl"), rows)
    (root / "work" / "catalog").mkdir(parents=True)
    write_jsonl(str(root / "work" / "catalog" / "items.jsonl"), catalog)
    # `logs/2024-06-0*/*.jsonl.gz,logs/backfill/*.parquet`, catalog/items.csv, users/users.parquet
    (root / "logs" / "2024-06-01").mkdir(parents=True)
    with gzip.open(root / "logs" / "2024-06-01" / "part-0.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in requests)
    (root / "logs" / "backfill").mkdir(parents=True)
    flat = [
        {
            **{k: v for k, v in r.items() if k != "user_features"},
            "request_id": f"b-{r['request_id']}",
            "timestamp": r["timestamp"] + 86_400,
        }
        for r in requests
    ]
    pq.write_table(pa.Table.from_pylist(flat), root / "logs" / "backfill" / "part-0.parquet")
    (root / "catalog").mkdir()
    lines = ["item_id,cluster,features.band"] + [
        f"{c['item_id']},{c['cluster']},{c['features']['band']}" for c in catalog
    ]
    (root / "catalog" / "items.csv").write_text("\n".join(lines) + "\n")
    (root / "users").mkdir()
    users = [{"user_id": f"u{u}", "features": {"segment": f"s{u % 2}"}} for u in range(12)]
    pq.write_table(pa.Table.from_pylist(users), root / "users" / "users.parquet")


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A working folder with the tiny `twotower` first on PATH and the stand-in data."""
    root = tmp_path_factory.mktemp("docs")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    wrapper = bin_dir / "twotower"
    wrapper.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from tests.doc_sandbox import main\nsys.exit(main(sys.argv[1:]))\n"
    )
    wrapper.chmod(0o755)
    _write_tiny_movielens(root / "ml-100k")
    _write_user_data(root)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "TWOTOWER_MOVIELENS_DIR": str(root / "ml-100k"),
        "PYTHONPATH": str(ROOT),
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("TF_CONFIG", None)
    return root, env


def test_every_command_fence_is_marked():
    for doc in DOCS:
        for line, language, text in fences(ROOT / doc):
            if language not in COMMAND_FENCES:
                commands = [
                    c for c in logical_lines(text) if re.match(r"(\.venv/bin/)?twotower ", c)
                ]
                assert not commands, f"{doc}:{line}: a ```{language} fence holds {commands[0]!r}"


def test_the_exceptions_are_what_the_docs_show():
    shown = {
        (doc, line_text)
        for doc in DOCS
        for _, language, text in fences(ROOT / doc)
        if language in COMMAND_FENCES
        for line_text in logical_lines(text)
        if excepted(line_text)
    }
    print("\ncommands that cannot run here:")
    for doc, line_text in sorted(shown):
        print(f"  {doc}: {line_text[:90]}  <- {excepted(line_text)}")
    # Each exception still matches something the docs show, or it goes.
    for pattern, why in EXCEPTED:
        assert any(re.search(pattern, text) for _, text in shown), f"unused exception: {why}"


@pytest.mark.parametrize("doc", DOCS)
def test_documented_commands_run(doc, sandbox):
    root, env = sandbox
    ran = 0
    for line, language, text in fences(ROOT / doc):
        if language not in COMMAND_FENCES:
            continue
        lines = logical_lines(text)
        runnable = [c for c in lines if not excepted(c)]
        if not runnable:
            continue
        script = "\n".join(["set -e", *runnable])
        done = subprocess.run(
            ["bash", "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=900
        )
        assert done.returncode == 0, (
            f"{doc}:{line}: exit {done.returncode}\n{script}\n"
            f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-5000:]}"
        )
        ran += len(runnable)
    for expected in EXPECTED_FILES.get(doc, []):
        assert (root / expected).exists(), f"{doc}: ran, but left no {expected}"
    if ran == 0:
        pytest.skip(f"{doc} shows no command")
