"""`twotower bench pipeline`: requests/second and peak memory of the preprocessing.

Writes OUTPUT/pipeline.json; the synthetic logs and the runs' outputs go to
OUTPUT/pipeline/.

For each size, synthetic JSONL logs (`twotower.bench.synthetic`) are preprocessed twice, each
in a fresh child process: by the Beam pipeline (DirectRunner, `num_workers` worker
processes) and by the single-process pure-Python reference (`twotower.bench.reference`, the
floor). Time is the child's wall time around the work (imports excluded); peak memory is
the largest sum of resident set sizes over the child and all its descendants (the Beam
worker processes included), sampled from /proc every SAMPLE_SECONDS, and at least the
child's own peak (`getrusage`) for runs shorter than a sample. Shared pages count once
per process, so the sum overstates the tree's true footprint a little.
"""

import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from common.settings import to_dict
from twotower.bench import synthetic
from twotower.bench.settings import PipelineBench
from twotower.report import format_table, save_results

SAMPLE_SECONDS = 0.2
SYSTEMS = ("reference", "beam")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                # The command name may hold spaces; the parent pid follows its ")".
                parent = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        tree.setdefault(parent, []).append(int(name))
    return tree


def tree_rss_bytes(pid: int) -> int:
    """Resident bytes of `pid` and all its descendants (0 where /proc is missing)."""
    if not os.path.isdir("/proc"):
        return 0
    tree, total, stack = _children(), 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while stack:
        current = stack.pop()
        stack.extend(tree.get(current, []))
        try:
            with open(f"/proc/{current}/statm") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue
    return total


def _run_measured(command: list[str]) -> tuple[dict[str, Any], int]:
    """Runs a child; returns (the JSON it printed last, peak tree RSS in bytes)."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = [0]

    def sample() -> None:
        while child.poll() is None:
            peak[0] = max(peak[0], tree_rss_bytes(child.pid))
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = child.communicate()
    sampler.join()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-3000:]}")
    measured = json.loads(stdout.strip().splitlines()[-1])
    # A child faster than one sample period is still measured: by its own peak.
    return measured, max(peak[0], measured.get("self_max_rss", 0))


def _work(
    system: str, data_dir: str, out_dir: str, workers: int, mode: str, overrides: list[str]
) -> dict[str, Any]:
    """The measured work, run inside the child process."""
    from pipelines import examples  # noqa: PLC0415

    requests = os.path.join(data_dir, synthetic.REQUESTS_FILE)
    catalog = os.path.join(data_dir, synthetic.CATALOG_FILE)
    start = time.perf_counter()
    if system == "reference":
        from twotower.bench.reference import reference_preprocess  # noqa: PLC0415

        summary = reference_preprocess(requests, catalog, out_dir, examples.ExampleOptions())
        produced = summary["examples"]
    else:
        from common.config import load_config  # noqa: PLC0415
        from pipelines.preprocess import preprocess  # noqa: PLC0415

        config = load_config(
            overrides=[
                "data.source=logs",
                f"data.input={requests}",
                f"data.catalog={catalog}",
                *overrides,
            ]
        )
        beam_args = [
            "--runner=DirectRunner",
            f"--direct_running_mode={mode}",
            f"--direct_num_workers={workers}",
        ]
        built = preprocess(config, out_dir, beam_args=beam_args, overwrite=True)
        produced = {split: block["examples"] for split, block in built["splits"].items()}
    seconds = time.perf_counter() - start
    self_max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    return {"seconds": seconds, "examples": produced, "self_max_rss": self_max_rss}


def _table(rows: list[dict[str, Any]]) -> str:
    columns = ["system", "requests", "seconds", "requests_per_second", "peak_rss_mb", "examples"]
    shown = [
        {**row, "seconds": f"{row['seconds']:.1f}", "requests_per_second": f"{row['rps']:,.0f}"}
        for row in rows
    ]
    return format_table(shown, columns)


def run(
    settings: PipelineBench,
    output_dir: str,
    *,
    systems: Sequence[str] = SYSTEMS,
    keep_outputs: bool = False,
    log: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Benchmarks the pipeline against the pure-Python reference on synthetic logs.

    Args:
      settings: sizes, DirectRunner workers and mode, shard count of the Beam run.
      output_dir: receives pipeline.json; the synthetic logs (pipeline/data-<n>/, reused
        when present) and each run's output (deleted unless keep_outputs) go under
        pipeline/.
      systems: which of "reference" and "beam" to run.
      keep_outputs: keep the datasets written by each run.
      log: where progress and the table go.

    Returns:
      {"rows": [{"system", "requests", "seconds", "rps", "peak_rss_mb", "examples"}],
       "settings", "cpus", "python", "beam"}; also saved as JSON.
    """
    import shutil  # noqa: PLC0415

    import apache_beam  # noqa: PLC0415

    work_dir = os.path.join(output_dir, "pipeline")
    overrides = [f"data.num_shards={settings.num_shards}"]
    rows = []
    for size in settings.sizes:
        data_dir = os.path.join(work_dir, f"data-{size}")
        if not os.path.exists(os.path.join(data_dir, synthetic.REQUESTS_FILE)):
            log(f"writing {size:,} synthetic requests -> {data_dir}")
            synthetic.write_synthetic_logs(data_dir, size)
        for system in systems:
            out_dir = os.path.abspath(os.path.join(work_dir, f"out-{system}-{size}"))
            log(f"{system}: {size:,} requests ...")
            command = [sys.executable, "-m", "twotower.bench.pipeline", system, data_dir, out_dir]
            extra = [str(settings.workers), settings.running_mode, json.dumps(overrides)]
            measured, peak = _run_measured(command + extra)
            row = {
                "system": system,
                "requests": size,
                "seconds": round(measured["seconds"], 2),
                "rps": round(size / measured["seconds"], 1),
                "peak_rss_mb": round(peak / 2**20),
                "examples": sum(measured["examples"].values()),
            }
            rows.append(row)
            log(f"  {row}")
            if not keep_outputs:
                shutil.rmtree(out_dir, ignore_errors=True)
    results = {
        "rows": rows,
        "settings": to_dict(settings),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "beam": apache_beam.__version__,
    }
    save_results(results, output_dir, "pipeline")
    log(_table(rows))
    return results


if __name__ == "__main__":  # the measured child: python -m twotower.bench.pipeline SYSTEM ...
    system, data, out, workers, mode, extra = sys.argv[1:7]
    print(json.dumps(_work(system, data, out, int(workers), mode, json.loads(extra))))
