"""`twotower preprocess --daily`: the scheduled run over the last N days of logs.

The logs are laid out by day and `--logs` names them with a `{date}` placeholder
(YYYY-MM-DD), e.g. `gs://bucket/logs/{date}/*.jsonl.gz`. A run on date D (default: today,
UTC) reads the N complete days before it, D-N .. D-1, writes the dataset to
`<output-root>/<D>/` and only then points `<output-root>/LATEST` (a one-line text file
holding the folder name; locally also a `latest` symlink) at it. A failed run (bad
input, too many bad rows, no valid request, no training example) leaves LATEST and the
datasets where they were, so trainers keep reading the last good dataset. `{date}` in
data.catalog and data.users becomes D-1 (that day's snapshot).

Exit codes (`common.exit_codes`), which k8s/preprocess-cronjob.yaml maps to its retry
policy: 0 success, 1 bad input or config (permanent: the job fails without retries), 138
anything else (a runner or storage failure: retried).
"""

import dataclasses
import datetime
import os
from collections.abc import Sequence
from typing import Any

from common.config import Config
from common.contracts import LATEST_FILE, LATEST_LINK
from pipelines import fs
from pipelines.daily_schedule import DailySchedule, day_patterns
from pipelines.preprocess import preprocess


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
    schedule: DailySchedule,
    config: Config,
    output_root: str,
    *,
    beam_args: Sequence[str] = (),
) -> dict[str, Any]:
    """Preprocesses the `schedule.days` days before its run date into
    `<output_root>/<run date>/`, then points LATEST at it.

    Args:
      schedule: the logs pattern, the days and the run date.
      config: the run's configuration; its data.source and data.input are set from the
        schedule, `{date}` in data.catalog and data.users becomes the day before the run.
      output_root: where the dated datasets and LATEST live.
      beam_args: Beam pipeline options.

    Returns:
      The manifest of the new dataset (LATEST now points at it).

    Raises:
      DataError, ConfigError, ValueError: bad input or config (LATEST unchanged).
    """
    run_date = schedule.run_date
    output_root = fs.absolute(output_root)
    snapshot = (run_date - datetime.timedelta(days=1)).isoformat()
    data = dataclasses.replace(
        config.data,
        source="logs",
        input=",".join(day_patterns(schedule.logs, run_date, schedule.days)),
        catalog=config.data.catalog.replace("{date}", snapshot),
        users=config.data.users.replace("{date}", snapshot),
    )
    folder = run_date.isoformat()
    built = preprocess(
        dataclasses.replace(config, data=data),
        fs.join(output_root, folder),
        beam_args=list(beam_args),
        overwrite=True,
    )
    point_latest(output_root, folder)
    return built
