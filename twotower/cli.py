"""The `twotower` command: one subcommand per stage, each a thin layer over a library call.

The arguments are defined here; `twotower/commands.py` holds the handlers. Exit codes
follow the cluster's retry rules: 0 success, 1 bad input or config (permanent:
retrying will not help), 2 usage errors.
"""

import argparse
import sys
from collections.abc import Callable, Sequence

from common.config import ConfigError, describe_options
from twotower import __version__, commands

EXIT_BAD_INPUT = 1
EXIT_USAGE = 2

_FORMATTER = argparse.RawDescriptionHelpFormatter


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, _FORMATTER):
    """Shows every option's default and keeps the epilog's line breaks."""


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON config file")
    parser.add_argument(
        "--set",
        dest="overrides",
        metavar="KEY=VALUE",
        action="append",
        default=[],
        help="override one config key, e.g. --set training.epochs=3 (repeatable)",
    )


def _add_beam_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Beam runner")
    group.add_argument(
        "--runner",
        default="DirectRunner",
        help="Beam runner (DataflowRunner, FlinkRunner, SparkRunner, ...)",
    )
    group.add_argument(
        "--direct-running-mode",
        default="multi_processing",
        choices=("in_memory", "multi_threading", "multi_processing"),
        help="DirectRunner execution mode",
    )
    group.add_argument(
        "--direct-num-workers", type=int, default=2, help="DirectRunner parallel workers"
    )
    group.add_argument(
        "--beam-arg",
        dest="beam_args",
        action="append",
        default=[],
        metavar="--OPTION=VALUE",
        help="any other Beam pipeline option, e.g. --beam-arg=--project=p (repeatable)",
    )


_SIMULATOR_HELP = {
    "num_users": "users in the world",
    "num_items": "items in the corpus",
    "num_clusters": "item clusters (categories)",
    "dim": "latent dimension of true preferences",
    "days": "logged days, eval period included",
    "eval_days": "last days that form the next (eval) period",
    "requests_per_user_per_day": "mean requests per user per day (Poisson)",
    "popularity_skew": "Zipf exponent of the legacy system's popularity prior",
    "recall_size": "items the legacy recall stage returns per request",
    "expose_size": "items the legacy ranker exposes per request",
    "random_exposure_users": "test users given a random-exposure request",
    "random_exposure_size": "items shown uniformly at random to each of them",
    "true_top_k": "length of each test user's true top-K list",
    "seed": "random seed (same seed, same bytes)",
    "start_timestamp": "first logged second",
}


def _add_simulator_options(parser: argparse.ArgumentParser) -> None:
    import dataclasses  # noqa: PLC0415

    from simulator.world import SimulatorConfig  # noqa: PLC0415  (numpy only)

    group = parser.add_argument_group("world")
    for field in dataclasses.fields(SimulatorConfig):
        kind = {"int": int, "float": float}[str(field.type)]
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            default=field.default,
            help=_SIMULATOR_HELP[field.name],
        )


def _add_data_shortcuts(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (shortcuts for --set data.KEY=VALUE)")
    for name, (key, kind, help) in commands.DATA_SHORTCUTS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"{help} ({key}; default: the config's)",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower",
        description="Debiased two-tower retrieval: preprocess logs with Beam, train with "
        "TFRS, evaluate, export for TF Serving.",
        epilog="`twotower COMMAND --help` lists a command's options and the config keys.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"twotower {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, handler: Callable[[argparse.Namespace], int], config: bool = True
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
        "simulate a logged multi-stage recommender with known truth",
        commands.simulate,
        config=False,
    )
    sub.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    _add_simulator_options(sub)

    sub = command("preprocess", "request logs -> dataset directory (Beam)", commands.preprocess)
    sub.add_argument("--output", required=True, metavar="DIR", help="dataset directory to write")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_data_shortcuts(sub)
    _add_beam_options(sub)

    sub = command("train", "dataset directory -> run directory (two-tower model)", commands.train)
    sub.add_argument("--data", required=True, metavar="DIR", help="dataset directory")
    sub.add_argument("--run-dir", required=True, metavar="DIR", help="run directory to write")
    sub.add_argument(
        "--verbose",
        type=int,
        default=1,
        choices=(0, 1, 2),
        help="Keras verbosity: 1 progress bar, 2 one line per epoch",
    )
    tfjob = sub.add_argument_group(
        "cluster (Kubeflow TFJob; with --emit-tfjob, --data and --run-dir are paths in the pods)"
    )
    tfjob.add_argument(
        "--emit-tfjob",
        action="store_true",
        help="print a TFJob manifest for this training instead of training",
    )
    tfjob.add_argument("--image", default="", help="trainer image, pinned by tag or digest")
    tfjob.add_argument("--replicas", type=int, default=2, help="worker pods (worker 0 is chief)")
    tfjob.add_argument("--gpus", type=int, default=1, help="GPUs per worker (0: CPU workers)")
    tfjob.add_argument(
        "--pod-config", default="/data/config.yaml", help="config file path inside the pods"
    )
    tfjob.add_argument("--namespace", default="default", help="Kubernetes namespace")
    tfjob.add_argument(
        "--apply", action="store_true", help="also run `kubectl apply -f -` with the manifest"
    )

    sub = command(
        "evaluate",
        "retrieval metrics of a trained run over the whole catalog",
        commands.evaluate,
        config=False,
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
        "trained run -> query tower SavedModel + item embeddings",
        commands.export,
        config=False,
    )
    sub.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run")
    sub.add_argument(
        "--version", type=int, default=0, help="version folder to write (0 = one above the newest)"
    )
    sub.add_argument(
        "--index",
        default="auto",
        choices=("auto", "brute_force", "scann"),
        help="item index: auto = brute force below 20k items, else ScaNN",
    )
    sub.add_argument(
        "--num-leaves",
        type=int,
        default=0,
        help="ScaNN partitioning leaves (0 = sqrt(items), used above 100k items)",
    )
    sub.add_argument(
        "--leaves-to-search",
        type=int,
        default=0,
        help="ScaNN leaves searched per query (0 = leaves / 10)",
    )
    sub.add_argument(
        "--reorder", type=int, default=1000, help="ScaNN candidates rescored exactly per query"
    )
    sub.add_argument(
        "--retrieval-model",
        default="none",
        choices=("none", "brute_force", "scann"),
        help="also write a TFRS retrieval SavedModel (needs TF Serving with ScaNN "
        "ops for scann; optional)",
    )
    sub.add_argument(
        "--warmup-requests",
        type=int,
        default=8,
        help="TF Serving warm-up requests built from eval users",
    )

    sub = command(
        "serve", "retrieval service over an export directory", commands.serve, config=False
    )
    sub.add_argument("export_dir", metavar="EXPORT_DIR", help="an export directory")
    sub.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sub.add_argument("--port", type=int, default=8080, help="port to listen on")
    sub.add_argument(
        "--tf-serving",
        default=None,
        metavar="URL",
        help="query tower from TF Serving: grpc://host:8500 or http://host:8501 "
        "(default: the SavedModel in process)",
    )
    sub.add_argument("--model-name", default="query_tower", help="TF Serving model name")
    sub.add_argument(
        "--version",
        type=int,
        default=None,
        help="serve this export version only (default: latest, hot-reloaded)",
    )
    sub.add_argument(
        "--reload-interval",
        type=float,
        default=10.0,
        help="seconds between checks for a new export version (0 = off)",
    )
    sub.add_argument("--max-k", type=int, default=1000, help="largest k a request may ask for")
    sub.add_argument("--max-batch", type=int, default=256, help="most queries in one request")
    sub.add_argument(
        "--tf-serving-timeout",
        type=float,
        default=5.0,
        help="deadline of one TF Serving call, seconds",
    )

    sub = command(
        "bench",
        "benchmarks that print a table and save JSON (and a PNG)",
        commands.bench,
        config=False,
    )
    sub.add_argument(
        "name",
        choices=("pipeline", "uma2", "negatives", "distributed", "serving"),
        help="which benchmark",
    )
    sub.add_argument(
        "--output", default="work/bench", metavar="DIR", help="where datasets, runs and results go"
    )
    sub.add_argument("--seeds", default="1,2,3", help="training benchmarks: comma-separated seeds")
    sub.add_argument("--epochs", type=int, default=5, help="training benchmarks: epochs per run")
    sub.add_argument(
        "--sizes",
        default="100000,1000000",
        help="pipeline: synthetic request counts, comma-separated",
    )
    sub.add_argument(
        "--datasets",
        default="simulator,movielens",
        help="training benchmarks: comma-separated, from simulator and movielens",
    )

    sub = command(
        "demo",
        "MovieLens-100K end to end: preprocess, train, evaluate, export, retrieve",
        commands.demo,
    )
    sub.add_argument(
        "--work-dir",
        default="work/demo",
        metavar="DIR",
        help="where the dataset, run and results go",
    )
    sub.add_argument(
        "--verbose",
        type=int,
        default=2,
        choices=(0, 1, 2),
        help="Keras verbosity: 1 progress bar, 2 one line per epoch",
    )
    _add_beam_options(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as e:
        print(f"twotower {args.command}: config error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"twotower {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
