"""Handlers of the `twotower` subcommands: each turns parsed arguments into one library call.

Heavy imports (TensorFlow, Beam) happen inside the handlers, so `--help` stays fast.
"""

import argparse
import json
import os
import sys

from common.config import Config, ConfigError, load_config
from twotower.report import format_table


def beam_args(args: argparse.Namespace) -> list[str]:
    flags = [f"--runner={args.runner}"]
    if args.runner == "DirectRunner":
        flags += [
            f"--direct_running_mode={args.direct_running_mode}",
            f"--direct_num_workers={args.direct_num_workers}",
        ]
    return flags + list(args.beam_args)


def config_from_args(args: argparse.Namespace) -> Config:
    return load_config(args.config, args.overrides)


def simulate(args: argparse.Namespace) -> int:
    import dataclasses  # noqa: PLC0415

    from simulator.simulate import SimulatorConfig, simulate  # noqa: PLC0415

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
DATA_SHORTCUTS = {
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


def data_overrides(args: argparse.Namespace) -> list[str]:
    return [
        f"{key}={getattr(args, name)}"
        for name, (key, _, _) in DATA_SHORTCUTS.items()
        if getattr(args, name, None) is not None
    ]


def preprocess(args: argparse.Namespace) -> int:
    from pipelines.preprocess import preprocess  # noqa: PLC0415

    args.overrides = [*args.overrides, *data_overrides(args)]
    manifest = preprocess(
        config_from_args(args), args.output, beam_args=beam_args(args), overwrite=args.overwrite
    )
    print(
        json.dumps(
            {"splits": manifest["splits"], "reconciliation": manifest["reconciliation"]}, indent=2
        )
    )
    return 0


def train(args: argparse.Namespace) -> int:
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

    config = config_from_args(args)  # config errors keep their exit code 1 and message
    try:
        summary = train(config, args.data, args.run_dir, verbose=args.verbose)
    except (FileNotFoundError, FileExistsError, ValueError):
        raise
    except Exception as e:  # a lost peer is retryable (138); see docs/distributed.md
        print(f"twotower train: {type(e).__name__}: {e}", file=sys.stderr)
        return exit_code(e)
    print(f"trained {summary['epochs']} epochs in {summary['train_seconds']} s -> {args.run_dir}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate_run  # noqa: PLC0415

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


def export(args: argparse.Namespace) -> int:
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


def serve(args: argparse.Namespace) -> int:
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


def bench(args: argparse.Namespace) -> int:
    seeds = [int(s) for s in args.seeds.split(",") if s]
    datasets = [d for d in args.datasets.split(",") if d]
    if args.name == "uma2":
        from twotower.bench.uma2 import benchmark_uma2  # noqa: PLC0415

        benchmark_uma2(args.output, datasets=datasets, seeds=seeds, epochs=args.epochs)
        return 0
    if args.name == "pipeline":
        from twotower.bench.pipeline import benchmark_pipeline  # noqa: PLC0415

        sizes = tuple(int(n) for n in args.sizes.split(",") if n)
        benchmark_pipeline(sizes, os.path.join(args.output, "pipeline"))
        return 0
    if args.name == "distributed":
        from twotower.bench.distributed import benchmark_distributed  # noqa: PLC0415

        benchmark_distributed(os.path.join(args.output, "distributed"), epochs=args.epochs)
        return 0
    if args.name == "serving":
        import dataclasses  # noqa: PLC0415

        from twotower.bench.serving import ServingBenchmarkConfig, benchmark_serving  # noqa: PLC0415

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
        from twotower.bench.negatives import benchmark_negatives  # noqa: PLC0415

        benchmark_negatives(args.output, datasets=datasets, seeds=seeds, epochs=args.epochs)
        return 0
    raise AssertionError(f"unhandled benchmark {args.name}")  # argparse restricts the names


def demo(args: argparse.Namespace) -> int:
    from twotower.demo import results_tables, run_demo  # noqa: PLC0415

    results = run_demo(
        config_from_args(args), args.work_dir, beam_args=beam_args(args), verbose=args.verbose
    )
    print(results_tables(results))
    return 0
