"""The `twotower` command: one subcommand per stage, each a thin layer over a library call.

Every flag is generated from a settings dataclass (`common.settings`): its type,
default, range and help are declared once, beside the code that uses it. The handlers
live in `twotower/commands.py`. Exit codes are `common.exit_codes` (docs/cli.md): 0 done,
1 bad input or config, 2 usage, 138 retryable, 130 interrupted.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

from common import exit_codes
from common.config import DataConfig, describe_options
from common.settings import ConfigError, add_flags
from pipelines.daily_schedule import DailySchedule
from pipelines.runner_options import RunnerOptions
from serving.index_config import IndexConfig
from serving.service_config import ServiceConfig
from simulator.config import PRESETS, SimulatorConfig
from trainer.export_options import ExportOptions
from trainer.tfjob import TFJobSpec
from twotower import __version__, commands
from twotower.bench.settings import BENCHMARKS


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's line breaks (the config keys, one a line)."""


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (docs/cli.md; every key below)")
    group.add_argument("--config", metavar="FILE", help="YAML or JSON config file")
    group.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, e.g. --set training.epochs=3 (repeatable)",
    )


def _add_runner_options(parser: argparse.ArgumentParser) -> None:
    add_flags(parser.add_argument_group("Beam runner (docs/pipeline.md)"), RunnerOptions)


def _verbose(parser: argparse.ArgumentParser, default: int) -> None:
    parser.add_argument(
        "--verbose",
        type=int,
        default=default,
        choices=(0, 1, 2),
        help=f"Keras verbosity: 1 progress bar, 2 one line per epoch (default: {default})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower",
        description="Debiased two-tower retrieval: preprocess logs with Beam, train with "
        "TFRS, evaluate against the truth, export for TF Serving with a ScaNN index.",
        epilog="`twotower COMMAND --help` lists a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"twotower {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, handler: Callable[[argparse.Namespace], int], config: bool = False
    ) -> argparse.ArgumentParser:
        sub = subcommands.add_parser(
            name,
            help=help,
            description=help,
            formatter_class=_Formatter,
            epilog=describe_options() if config else None,
        )
        if config:
            _add_config_options(sub)
        sub.set_defaults(handler=handler)
        return sub

    sub = command(
        "simulate",
        "simulate a logged multi-stage recommender with known truth (docs/simulator.md)",
        commands.simulate,
    )
    sub.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    sub.add_argument(
        "--preset",
        choices=tuple(PRESETS),
        default=None,
        help="a named world of the family (docs/simulator.md); the flags below override it",
    )
    add_flags(sub.add_argument_group("world"), SimulatorConfig)

    sub = command(
        "preprocess",
        "request logs -> dataset directory, with Apache Beam (docs/pipeline.md)",
        commands.preprocess,
        config=True,
    )
    sub.add_argument(
        "--output",
        required=True,
        metavar="DIR",
        help="dataset directory to write (with --daily: the root of the dated datasets)",
    )
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output")
    add_flags(sub.add_argument_group("data (the same as --set data.KEY=VALUE)"), DataConfig)
    sub.set_defaults(data_flags=True)
    daily = sub.add_argument_group(
        "scheduled run (the CronJob): OUTPUT/<date>/, then OUTPUT/LATEST moves to it"
    )
    daily.add_argument(
        "--daily", action="store_true", help="read the days before the run date from --logs"
    )
    add_flags(daily, DailySchedule)
    _add_runner_options(sub)

    sub = command(
        "train",
        "dataset directory -> run directory: the two-tower model (docs/run_directory.md)",
        commands.train,
        config=True,
    )
    sub.add_argument("--data", required=True, metavar="DIR", help="dataset directory")
    sub.add_argument("--run-dir", required=True, metavar="DIR", help="run directory to write")
    sub.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a finished run in --run-dir (it stays whole until this training "
        "finishes), or discard an interrupted training of another config",
    )
    _verbose(sub, 1)
    tfjob = sub.add_argument_group(
        "cluster (Kubeflow TFJob, docs/distributed.md): print the manifest of this training "
        "instead of training; --data and --run-dir are then paths in the pods"
    )
    tfjob.add_argument("--emit-tfjob", action="store_true", help="print the TFJob manifest")
    tfjob.add_argument("--apply", action="store_true", help="also run `kubectl apply -f -` with it")
    add_flags(tfjob, TFJobSpec, skip=("dataset", "run_dir", "overrides"))

    sub = command(
        "evaluate",
        "retrieval metrics of a trained run over the whole catalog (docs/metrics.md)",
        commands.evaluate,
    )
    sub.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run")
    sub.add_argument(
        "--on",
        metavar="DATASET",
        default=None,
        help="dataset directory to evaluate on (default: the run's own)",
    )
    sub.add_argument(
        "--ground-truth",
        metavar="DIR",
        default=None,
        help="simulator folder with random_exposure.jsonl and true_top_k.jsonl "
        "(default: the dataset's own simulator input, if any)",
    )

    sub = command(
        "export",
        "trained run -> query tower SavedModel + item embeddings + item index (docs/serving.md)",
        commands.export,
    )
    sub.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run")
    add_flags(sub.add_argument_group("export"), ExportOptions)
    add_flags(sub.add_argument_group("item index"), IndexConfig, prefix="index-")

    sub = command(
        "serve", "retrieval service over an export directory (docs/serving.md)", commands.serve
    )
    sub.add_argument("export_dir", metavar="EXPORT_DIR", help="an export directory")
    add_flags(sub.add_argument_group("service"), ServiceConfig)

    sub = command(
        "bench", "benchmarks: print a table, save OUTPUT/NAME.json (and a PNG)", commands.bench
    )
    benchmarks = sub.add_subparsers(dest="name", metavar="NAME", required=True)
    for name, settings in BENCHMARKS.items():
        bench = benchmarks.add_parser(
            name, help=settings.__doc__, description=settings.__doc__, formatter_class=_Formatter
        )
        bench.add_argument(
            "--output",
            default="work/bench",
            metavar="DIR",
            help="where NAME.json, data and runs go",
        )
        bench.add_argument(
            "--quick", action="store_true", help="tiny sizes (about a minute on 2 cores)"
        )
        add_flags(bench.add_argument_group(name), settings)
        if name == "serving":
            add_flags(bench.add_argument_group("item index"), IndexConfig, prefix="index-")

    sub = command(
        "demo",
        "MovieLens-100K end to end: preprocess, train, evaluate, export, retrieve",
        commands.demo,
        config=True,
    )
    sub.add_argument(
        "--work-dir",
        default="work/demo",
        metavar="DIR",
        help="where the dataset, run and results go",
    )
    sub.add_argument("--top-k", type=int, default=10, help="items retrieved per demo user")
    _verbose(sub, 2)
    _add_runner_options(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code (`common.exit_codes`)."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (Exception, KeyboardInterrupt) as e:  # every failure becomes an exit code
        code = exit_codes.exit_code(e)
        expected = isinstance(e, exit_codes.RetryableError)
        if (
            code == exit_codes.RETRYABLE
            and not expected
            and not type(e).__module__.startswith("tensorflow")
        ):
            import traceback  # noqa: PLC0415

            traceback.print_exception(e)  # unexpected: the trace is what a person needs
        kind = {
            exit_codes.BAD_INPUT: "config error" if isinstance(e, ConfigError) else "error",
            exit_codes.INTERRUPTED: "interrupted",
        }.get(code, "retryable error")
        print(f"twotower {args.command}: {kind}: {e}", file=sys.stderr, flush=True)
        return code
