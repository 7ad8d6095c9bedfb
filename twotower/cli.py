"""The `twotower` command: one subcommand per stage, each a thin layer over a library call.

Exit codes follow the cluster's retry rules: 0 success, 1 bad input or config
(permanent: retrying will not help), 2 usage errors and features not available yet.
"""

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence

from twotower import __version__
from twotower.config import Config, ConfigError, describe_options, load_config

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


def _beam_args(args: argparse.Namespace) -> list[str]:
    flags = [f"--runner={args.runner}"]
    if args.runner == "DirectRunner":
        flags += [
            f"--direct_running_mode={args.direct_running_mode}",
            f"--direct_num_workers={args.direct_num_workers}",
        ]
    return flags + list(args.beam_args)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


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

    from pipelines.simulator_world import SimulatorConfig  # noqa: PLC0415  (numpy only)

    group = parser.add_argument_group("world")
    for field in dataclasses.fields(SimulatorConfig):
        kind = {"int": int, "float": float}[str(field.type)]
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kind,
            default=field.default,
            help=_SIMULATOR_HELP[field.name],
        )


def _simulate(args: argparse.Namespace) -> int:
    import dataclasses  # noqa: PLC0415

    from pipelines.simulator import SimulatorConfig, simulate  # noqa: PLC0415

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(SimulatorConfig)}
    config = SimulatorConfig(**values)
    try:
        config.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from e
    summary = simulate(config, args.output, progress=True)
    print(json.dumps(summary["counts"], indent=2))
    return 0


# Shortcuts for the most used data.* keys; each is the same as --set data.<key>=VALUE.
_DATA_SHORTCUTS = {
    "source": ("data.source", str, "input: movielens-100k, simulator or logs"),
    "input": ("data.input", str, "request logs (files, globs) or the simulator folder"),
    "catalog": ("data.catalog", str, "item catalog file(s)"),
    "users": ("data.users", str, "optional user table"),
    "format": ("data.format", str, "auto, jsonl, csv or parquet"),
    "max_bad_fraction": ("data.max_bad_fraction", float, "fail above this dead-letter share"),
    "num_a": ("data.num_a", int, "Space A negatives kept per positive"),
    "num_b": ("data.num_b", int, "Space B negatives kept per positive"),
    "history_length": ("data.history_length", int, "clicked items kept as history"),
    "eval_from": ("data.eval_from", int, "time split: first eval timestamp"),
}


def _add_data_shortcuts(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data (shortcuts for --set data.KEY=VALUE)")
    for name, (key, kind, help) in _DATA_SHORTCUTS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            type=kind,
            default=None,
            help=f"{help} ({key}; default: the config's)",
        )


def _data_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"{key}={getattr(args, name)}"
        for name, (key, _, _) in _DATA_SHORTCUTS.items()
        if getattr(args, name, None) is not None
    ]


def _preprocess(args: argparse.Namespace) -> int:
    from pipelines.preprocess import preprocess  # noqa: PLC0415

    args.overrides = [*args.overrides, *_data_overrides(args)]
    manifest = preprocess(
        _config(args), args.output, beam_args=_beam_args(args), overwrite=args.overwrite
    )
    print(
        json.dumps(
            {"splits": manifest["splits"], "reconciliation": manifest["reconciliation"]}, indent=2
        )
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    if args.emit_tfjob:
        from trainer.tfjob import TFJobSpec, emit_tfjob  # noqa: PLC0415

        spec = TFJobSpec(
            image=args.image,
            replicas=args.replicas,
            gpus=args.gpus,
            config=args.pod_config,
            dataset=args.data,
            run_dir=args.run_dir,
            namespace=args.namespace,
            overrides=tuple(args.overrides),
        )
        return emit_tfjob(spec, apply=args.apply)
    from trainer.distribute import exit_code  # noqa: PLC0415
    from trainer.train import train  # noqa: PLC0415

    config = _config(args)  # config errors keep their exit code 1 and message
    try:
        summary = train(config, args.data, args.run_dir, verbose=args.verbose)
    except (FileNotFoundError, FileExistsError, ValueError):
        raise
    except Exception as e:  # a lost peer is retryable (138); see docs/distributed.md
        print(f"twotower train: {type(e).__name__}: {e}", file=sys.stderr)
        return exit_code(e)
    print(f"trained {summary['epochs']} epochs in {summary['train_seconds']} s -> {args.run_dir}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate_run  # noqa: PLC0415
    from twotower.report import format_table  # noqa: PLC0415

    result = evaluate_run(args.run_dir, on=args.on, ground_truth=args.ground_truth)
    sets = {"logged eval clicks": result}
    if "random_exposure" in result:
        sets["random exposure"] = result["random_exposure"]
    for title, part in sets.items():
        rows = [{"method": name, **values} for name, values in part["methods"].items()]
        last = result["ks"][-1]
        columns = ["method", *(f"hit_rate@{k}" for k in result["ks"])]
        columns += [f"recall@{last}", f"ndcg@{last}"]
        if title == "random exposure":
            columns.append(f"true_top_k_overlap@{last}")
        columns += [f"aggregate_diversity@{last}", f"popularity_index@{last}"]
        print(f"{title}: {part['num_users']} users, {result['num_items']} items")
        print(format_table(rows, columns))
        print()
    print(f"saved {args.run_dir}/metrics.json and plots: {', '.join(result.get('plots', []))}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from serving.item_index import IndexConfig  # noqa: PLC0415
    from trainer.export import ExportOptions, export_run  # noqa: PLC0415

    index = IndexConfig(
        kind=args.index,
        num_leaves=args.num_leaves,
        num_leaves_to_search=args.leaves_to_search,
        reordering_num_neighbors=args.reorder,
    )
    options = ExportOptions(
        index=index, retrieval_model=args.retrieval_model, warmup_requests=args.warmup_requests
    )
    manifest = export_run(args.run_dir, version=args.version, options=options)
    tower = manifest["query_tower"]
    print(
        json.dumps(
            {
                "version": tower["latest"],
                "versions": tower["versions"],
                "inputs": list(tower["inputs"]),
                "items": manifest["items"]["count"],
                "index": manifest.get("index", {}).get("kind"),
            },
            indent=2,
        )
    )
    return 0


def _serve(args: argparse.Namespace) -> int:
    from serving.retrieval_service import ServiceConfig  # noqa: PLC0415
    from serving.service import serve  # noqa: PLC0415

    config = ServiceConfig(
        tf_serving=args.tf_serving,
        model_name=args.model_name,
        version=args.version,
        reload_interval_s=args.reload_interval,
        max_k=args.max_k,
        max_batch=args.max_batch,
        tf_serving_timeout_s=args.tf_serving_timeout,
    )
    serve(args.export_dir, args.host, args.port, config=config)
    return 0


def _bench(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    datasets = [d for d in args.datasets.split(",") if d]
    if args.name == "uma2":
        from trainer.bench_uma2 import benchmark_uma2  # noqa: PLC0415

        benchmark_uma2(args.output, datasets=datasets, seeds=seeds, epochs=args.epochs)
        return 0
    if args.name == "pipeline":
        from pipelines.benchmark import benchmark_pipeline  # noqa: PLC0415

        sizes = tuple(int(n) for n in args.sizes.split(",") if n)
        benchmark_pipeline(sizes, os.path.join(args.output, "pipeline"))
        return 0
    if args.name == "distributed":
        from trainer.bench_distributed import benchmark_distributed  # noqa: PLC0415

        benchmark_distributed(os.path.join(args.output, "distributed"), epochs=args.epochs)
        return 0
    if args.name == "serving":
        import dataclasses  # noqa: PLC0415

        from serving.benchmark import ServingBenchmarkConfig, benchmark_serving  # noqa: PLC0415

        config = dataclasses.replace(
            ServingBenchmarkConfig(),
            num_items=args.num_items,
            dim=args.dim,
            k=args.k,
            e2e_clients=args.clients,
        )
        benchmark_serving(config, output_dir=os.path.join(args.output, "serving"))
        return 0
    if args.name == "negatives":
        from trainer.bench_negatives import benchmark_negatives  # noqa: PLC0415

        benchmark_negatives(args.output, datasets=datasets, seeds=seeds, epochs=args.epochs)
        return 0
    raise AssertionError(f"unhandled benchmark {args.name}")  # argparse restricts the names


def _demo(args: argparse.Namespace) -> int:
    from twotower.demo import results_tables, run_demo  # noqa: PLC0415

    results = run_demo(
        _config(args), args.work_dir, beam_args=_beam_args(args), verbose=args.verbose
    )
    print(results_tables(results))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twotower",
        description="Debiased two-tower retrieval: preprocess logs with Beam, train with "
        "TFRS, evaluate, export for TF Serving.",
        epilog="`twotower COMMAND --help` lists a command's options and the config keys.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"twotower {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, help: str, handler: Callable[[argparse.Namespace], int], config: bool = True
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
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
        _simulate,
        config=False,
    )
    sub.add_argument("--output", required=True, metavar="DIR", help="folder to write")
    _add_simulator_options(sub)

    sub = command("preprocess", "request logs -> dataset directory (Beam)", _preprocess)
    sub.add_argument("--output", required=True, metavar="DIR", help="dataset directory to write")
    sub.add_argument("--overwrite", action="store_true", help="replace an existing output")
    _add_data_shortcuts(sub)
    _add_beam_options(sub)

    sub = command("train", "dataset directory -> run directory (two-tower model)", _train)
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
        _evaluate,
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
        "export", "trained run -> query tower SavedModel + item embeddings", _export, config=False
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

    sub = command("serve", "retrieval service over an export directory", _serve, config=False)
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
        _bench,
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
        "demo", "MovieLens-100K end to end: preprocess, train, evaluate, export, retrieve", _demo
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
