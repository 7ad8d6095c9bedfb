"""`python -m pipelines.daily`: the scheduled run over the last N days of logs.

The logs are laid out by day and `--logs` names them with a `{date}` placeholder
(YYYY-MM-DD), e.g. `gs://bucket/logs/{date}/*.jsonl.gz`. A run on date D (default: today,
UTC) reads the N complete days before it, D-N .. D-1, writes the dataset to
`<output-root>/<D>/` and only then points `<output-root>/LATEST` (a one-line text file
holding the folder name; locally also a `latest` symlink) at it. A failed run leaves
LATEST where it was, so trainers keep reading the last good dataset. `{date}` in
data.catalog and data.users becomes D-1 (that day's snapshot).

Exit codes, which k8s/preprocess-cronjob.yaml maps to its retry policy: 0 success, 1 bad
input or config (permanent: the job fails without retries), 3 anything else (a runner or
storage failure: retried).
"""

import argparse
import datetime
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from common.config import ConfigError, load_config
from pipelines import fs
from pipelines.preprocess import DataError, preprocess

EXIT_OK, EXIT_BAD_INPUT, EXIT_RETRY = 0, 1, 3
LATEST_FILE = "LATEST"
LATEST_LINK = "latest"


def day_patterns(logs: str, run_date: datetime.date, days: int) -> list[str]:
    """The `{date}` pattern filled with each of the `days` days before `run_date`, oldest first."""
    if "{date}" not in logs:
        raise ValueError(f"--logs {logs!r} has no {{date}} placeholder")
    first = run_date - datetime.timedelta(days=days)
    return [logs.format(date=first + datetime.timedelta(days=i)) for i in range(days)]


def point_latest(output_root: str, folder: str) -> None:
    """Atomically points LATEST (and locally the `latest` symlink) at `folder`."""
    temporary = fs.join(output_root, f".{LATEST_FILE}.tmp-{os.getpid()}")
    fs.write_lines(temporary, [folder + "\n"])
    if fs.is_local(output_root):
        os.replace(temporary, os.path.join(output_root, LATEST_FILE))
        link = os.path.join(output_root, f".{LATEST_LINK}.tmp-{os.getpid()}")
        os.symlink(folder, link)
        os.replace(link, os.path.join(output_root, LATEST_LINK))
    else:
        from apache_beam.io.filesystems import FileSystems  # noqa: PLC0415

        FileSystems.rename([temporary], [fs.join(output_root, LATEST_FILE)])


def run_daily(
    logs: str,
    output_root: str,
    *,
    days: int,
    run_date: datetime.date,
    config_path: str | None = None,
    overrides: Sequence[str] = (),
    beam_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Preprocesses the `days` days before `run_date` into `<output_root>/<run_date>/`.

    Returns:
      The manifest of the new dataset (LATEST now points at it).

    Raises:
      DataError, ConfigError, ValueError: bad input or config (LATEST unchanged).
    """
    if days < 1:
        raise ValueError(f"--days must be at least 1, got {days}")
    output_root = fs.absolute(output_root)
    snapshot = (run_date - datetime.timedelta(days=1)).isoformat()
    config = load_config(config_path, overrides)
    data = config.data
    data.source = "logs"
    data.input = ",".join(day_patterns(logs, run_date, days))
    data.catalog = data.catalog.replace("{date}", snapshot)
    data.users = data.users.replace("{date}", snapshot)
    folder = run_date.isoformat()
    built = preprocess(
        config, fs.join(output_root, folder), beam_args=list(beam_args), overwrite=True
    )
    point_latest(output_root, folder)
    return built


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m pipelines.daily", description=__doc__)
    parser.add_argument("--logs", required=True, help="log files of one day, with {date}")
    parser.add_argument("--output-root", required=True, help="dated datasets and LATEST go here")
    parser.add_argument("--days", type=int, default=7, help="days of logs before the run date")
    parser.add_argument("--date", help="run date YYYY-MM-DD (default: today, UTC)")
    parser.add_argument("--config", help="YAML or JSON config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--runner", default="DirectRunner")
    parser.add_argument("--direct-running-mode", default="multi_processing")
    parser.add_argument("--direct-num-workers", type=int, default=2)
    parser.add_argument("--beam-arg", dest="beam_args", action="append", default=[])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs one scheduled preprocessing; returns the exit code (see module docstring)."""
    args = _parser().parse_args(argv)
    beam_args = [f"--runner={args.runner}"]
    if args.runner == "DirectRunner":
        beam_args += [
            f"--direct_running_mode={args.direct_running_mode}",
            f"--direct_num_workers={args.direct_num_workers}",
        ]
    try:
        run_date = (
            datetime.date.fromisoformat(args.date)
            if args.date
            else datetime.datetime.now(datetime.UTC).date()
        )
        built = run_daily(
            args.logs,
            args.output_root,
            days=args.days,
            run_date=run_date,
            config_path=args.config,
            overrides=args.overrides,
            beam_args=beam_args + args.beam_args,
        )
    except (DataError, ConfigError, ValueError, FileNotFoundError) as e:
        print(f"pipelines.daily: bad input: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception:  # noqa: BLE001  (anything else may be transient: let k8s retry)
        traceback.print_exc()
        return EXIT_RETRY
    counts = {split: block["examples"] for split, block in built["splits"].items()}
    print(f"pipelines.daily: {run_date} done, examples {counts}, LATEST -> {run_date}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
