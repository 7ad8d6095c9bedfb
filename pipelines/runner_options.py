"""RunnerOptions: which Apache Beam runner executes the preprocessing, and how."""

import dataclasses

from common.settings import Settings, setting


@dataclasses.dataclass(frozen=True)
class RunnerOptions(Settings):
    """Beam runner settings (`twotower preprocess` and `demo` flags, docs/pipeline.md)."""

    runner: str = setting(
        "DirectRunner", "Beam runner: DirectRunner, DataflowRunner, FlinkRunner, SparkRunner, ..."
    )
    direct_running_mode: str = setting(
        "multi_processing",
        "DirectRunner execution mode",
        choices=("in_memory", "multi_threading", "multi_processing"),
    )
    direct_num_workers: int = setting(2, "DirectRunner parallel workers", min=1)
    beam_arg: list[str] = setting(
        [], "any other Beam pipeline option, e.g. --beam-arg=--project=p", repeat=True
    )

    def pipeline_args(self) -> list[str]:
        """The options as Beam's own command-line flags."""
        flags = [f"--runner={self.runner}"]
        if self.runner == "DirectRunner":
            flags += [
                f"--direct_running_mode={self.direct_running_mode}",
                f"--direct_num_workers={self.direct_num_workers}",
            ]
        return flags + list(self.beam_arg)
