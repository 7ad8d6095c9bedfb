"""`twotower preprocess --daily` (the CronJob's command) and k8s/preprocess-cronjob.yaml."""

import datetime
import json
import os
import pathlib

import kubernetes_validate
import pytest
import yaml

from common import exit_codes
from common.settings import ConfigError
from pipelines.daily_schedule import DailySchedule, day_patterns
from tests.conftest import tiny_world_rows, write_jsonl
from twotower import cli

CRONJOB = pathlib.Path(__file__).parents[2] / "k8s" / "preprocess-cronjob.yaml"
RUN_DATE = datetime.date(2024, 6, 8)


def test_day_patterns_are_the_days_before_the_run_date():
    patterns = day_patterns("gs://b/logs/{date}/*.jsonl.gz", RUN_DATE, 3)
    assert patterns == [
        "gs://b/logs/2024-06-05/*.jsonl.gz",
        "gs://b/logs/2024-06-06/*.jsonl.gz",
        "gs://b/logs/2024-06-07/*.jsonl.gz",
    ]


@pytest.mark.parametrize(
    "values, message",
    [
        ({"logs": "logs/*.jsonl"}, "logs: 'logs/\\*.jsonl' has no {date} placeholder"),
        ({"logs": "l/{date}", "date": "8 June"}, "date: '8 June' is not YYYY-MM-DD"),
        ({"logs": "l/{date}", "days": 0}, "days: 0 is below the minimum 1"),
    ],
)
def test_bad_schedules_name_the_setting(values, message):
    with pytest.raises(ConfigError, match=message):
        DailySchedule(**values)


@pytest.fixture
def logs_root(tmp_path):
    requests, catalog = tiny_world_rows(num_users=6)
    for day in ("2024-06-06", "2024-06-07"):
        folder = tmp_path / "logs" / day
        folder.mkdir(parents=True)
        rows = [dict(r, request_id=f"{day}-{r['request_id']}") for r in requests]
        write_jsonl(str(folder / "part-0.jsonl"), rows)
    (tmp_path / "catalog" / "2024-06-07").mkdir(parents=True)
    write_jsonl(str(tmp_path / "catalog" / "2024-06-07" / "items.jsonl"), catalog)
    return tmp_path


def _main(root, *extra):
    return cli.main(
        [
            "preprocess",
            "--daily",
            f"--logs={root}/logs/{{date}}/*.jsonl",
            f"--output={root}/datasets",
            "--days=2",
            "--date=2024-06-08",
            "--direct-running-mode=in_memory",
            "--direct-num-workers=1",
            f"--set=data.catalog={root}/catalog/{{date}}/items.jsonl",
            "--set=data.num_shards=1",
            *extra,
        ]
    )


def test_daily_run_writes_a_dated_dataset_then_moves_latest(logs_root):
    datasets = logs_root / "datasets"
    assert _main(logs_root) == 0
    assert (datasets / "LATEST").read_text() == "2024-06-08\n"
    assert os.readlink(datasets / "latest") == "2024-06-08"
    with open(datasets / "latest" / "manifest.json") as f:
        built = json.load(f)
    assert built["reconciliation"]["requests"]["total"]["read"] == 2 * 6 * 4
    assert len(built["reconciliation"]["requests"]["per_file"]) == 2

    # A later run whose input is bad fails with exit 1 and leaves LATEST alone.
    (logs_root / "logs" / "2024-06-08").mkdir()
    (logs_root / "logs" / "2024-06-08" / "part-0.jsonl").write_text("{broken\n" * 5)
    catalog = f"--set=data.catalog={logs_root}/catalog/2024-06-07/items.jsonl"
    assert _main(logs_root, "--date=2024-06-09", catalog) == exit_codes.BAD_INPUT
    assert (datasets / "LATEST").read_text() == "2024-06-08\n"
    assert os.readlink(datasets / "latest") == "2024-06-08"
    assert not (datasets / "2024-06-09" / "manifest.json").exists()
    assert (datasets / "2024-06-09.failed" / "failure.json").exists()


def test_empty_logs_keep_the_dataset_and_latest(logs_root):
    datasets = logs_root / "datasets"
    assert _main(logs_root) == 0
    manifest = (datasets / "2024-06-08" / "manifest.json").read_bytes()
    for day in ("2024-06-06", "2024-06-07"):  # the logs of both days arrive empty
        (logs_root / "logs" / day / "part-0.jsonl").write_text("")
    # Rerunning the same date used to replace the good dataset with an empty one.
    assert _main(logs_root) == exit_codes.BAD_INPUT
    assert (datasets / "2024-06-08" / "manifest.json").read_bytes() == manifest
    failure = json.loads((datasets / "2024-06-08.failed" / "failure.json").read_text())
    assert failure["error"].startswith("no valid request in data.input=")
    # A new date with nothing in it does not move LATEST either.
    (logs_root / "logs" / "2024-06-08").mkdir()
    (logs_root / "logs" / "2024-06-08" / "part-0.jsonl").write_text("")
    catalog = f"--set=data.catalog={logs_root}/catalog/2024-06-07/items.jsonl"
    assert _main(logs_root, "--date=2024-06-09", catalog) == exit_codes.BAD_INPUT
    assert (datasets / "LATEST").read_text() == "2024-06-08\n"
    assert not (datasets / "2024-06-09").exists()


def test_missing_day_is_bad_input(logs_root):
    assert _main(logs_root, "--days=5") == exit_codes.BAD_INPUT
    assert not (logs_root / "datasets" / "LATEST").exists()


def _cronjob():
    with open(CRONJOB) as f:
        return yaml.safe_load(f)


def test_cronjob_validates_against_the_kubernetes_schema():
    kubernetes_validate.validate(_cronjob(), "1.37.0", strict=True)
    broken = _cronjob()
    broken["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["resources"][
        "limit"
    ] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.37.0", strict=True)


def test_cronjob_is_locked_down():
    cronjob = _cronjob()
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    pod = job["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    (mount,) = container["volumeMounts"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert mount["mountPath"] == "/tmp" and "emptyDir" in volume
    # Exit 1 (bad input) fails the job without retries (common/exit_codes.py).
    (rule, *_) = job["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob"
    assert rule["onExitCodes"]["values"] == [exit_codes.BAD_INPUT]
    assert container["command"] == ["twotower", "preprocess", "--daily"]
    assert any(arg.startswith("--logs=") and "{date}" in arg for arg in container["args"])
