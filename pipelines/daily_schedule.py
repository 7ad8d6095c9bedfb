"""DailySchedule: which days of logs a scheduled preprocessing run reads."""

import dataclasses
import datetime

from common.settings import ConfigError, Settings, setting


@dataclasses.dataclass(frozen=True)
class DailySchedule(Settings):
    """Which days a scheduled run reads (`twotower preprocess --daily` flags)."""

    logs: str = setting(
        "", "log files of one day with a {date} (YYYY-MM-DD) placeholder, e.g. logs/{date}/*.gz"
    )
    days: int = setting(7, "complete days of logs before the run date", min=1)
    date: str = setting("", "run date YYYY-MM-DD (default: today, UTC)")

    def check(self) -> None:
        if "{date}" not in self.logs:
            raise ConfigError(f"{self.logs!r} has no {{date}} placeholder", "logs")
        if self.date:
            try:
                datetime.date.fromisoformat(self.date)
            except ValueError as e:
                raise ConfigError(f"{self.date!r} is not YYYY-MM-DD", "date") from e

    @property
    def run_date(self) -> datetime.date:
        if self.date:
            return datetime.date.fromisoformat(self.date)
        return datetime.datetime.now(datetime.UTC).date()


def day_patterns(logs: str, run_date: datetime.date, days: int) -> list[str]:
    """The `{date}` pattern filled with each of the `days` days before `run_date`, oldest first."""
    first = run_date - datetime.timedelta(days=days)
    return [logs.format(date=first + datetime.timedelta(days=i)) for i in range(days)]
