"""Handlers of the `twotower` subcommands: each turns parsed arguments into library calls.

This is the top layer: the only code (with the demo and the benchmarks) that imports
several packages, and where they are wired together (the serving side's index builder
handed to the trainer's export, for one). Heavy imports (TensorFlow, Beam) happen inside
the handlers, so `--help` stays fast.
"""

import argparse
import dataclasses
import importlib
import json

from common.config import Config, DataConfig, load_config
from common.settings import ConfigError, from_flags
from pipelines.runner_options import RunnerOptions
from twotower.report import format_table


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file, then `--set`, then the data flags (preprocess), validated."""
    config = load_config(args.config, args.overrides)
    if getattr(args, "data_flags", False):  # preprocess has a flag per data key
        config = dataclasses.replace(config, data=from_flags(DataConfig, args, base=config.data))
    return config


def runner_args(args: argparse.Namespace) -> list[str]:
    return from_flags(RunnerOptions, args).pipeline_args()


def simulate(args: argparse.Namespace) -> int:
    from simulator.config import SimulatorConfig, preset  # noqa: PLC0415
    from simulator.simulate import simulate  # noqa: PLC0415

    base = preset(args.preset) if args.preset else None
    summary = simulate(from_flags(SimulatorConfig, args, base=base), args.output, progress=True)
    print(json.dumps(summary["counts"], indent=2))
    return 0


def preprocess(args: argparse.Namespace) -> int:
    from pipelines.daily import run_daily  # noqa: PLC0415
    from pipelines.daily_schedule import DailySchedule  # noqa: PLC0415
    from pipelines.preprocess import preprocess  # noqa: PLC0415

    config = config_from_args(args)
    if args.daily:
        schedule = from_flags(DailySchedule, args)
        manifest = run_daily(schedule, config, args.output, beam_args=runner_args(args))
        print(f"LATEST -> {schedule.run_date.isoformat()}")
    else:
        given = [f"--{n}" for n in ("logs", "days", "date") if getattr(args, n) is not None]
        if given:
            raise ConfigError(f"{', '.join(given)} only apply with --daily")
        manifest = preprocess(
            config, args.output, beam_args=runner_args(args), overwrite=args.overwrite
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

        load_config(args.config, args.overrides)  # a bad key fails here, not in the pods
        spec = dataclasses.replace(
            from_flags(TFJobSpec, args),
            dataset=args.data,
            run_dir=args.run_dir,
            overrides=tuple(args.overrides),
        )
        return emit_tfjob(spec, apply=args.apply)
    import logging  # noqa: PLC0415

    from trainer.train import train  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="twotower train: %(message)s")
    summary = train(
        config_from_args(args),
        args.data,
        args.run_dir,
        verbose=args.verbose,
        overwrite=args.overwrite,
    )
    print(f"trained {summary['epochs']} epochs in {summary['train_seconds']} s -> {args.run_dir}")
    return 0


def evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate_run  # noqa: PLC0415
    from twotower.wiring import scann_builder  # noqa: PLC0415

    result = evaluate_run(
        args.run_dir, on=args.on, ground_truth=args.ground_truth, scann=scann_builder()
    )
    sets = {"logged eval clicks": result}
    if "random_exposure" in result:
        sets["random exposure"] = result["random_exposure"]
    for title, part in sets.items():
        rows = [{"method": name, **values} for name, values in part["methods"].items()]
        last = result["ks"][-1]
        columns = ["method", *(f"hit_rate@{k}" for k in result["ks"])]
        columns += [f"recall@{last}", f"ndcg@{last}"]
        if title == "random exposure":
            columns += [f"oracle_share@{last}", f"true_top_k_overlap@{last}"]
        columns += [f"aggregate_diversity@{last}", f"popularity_index@{last}"]
        print(f"{title}: {part['num_users']} users, {result['num_items']} items")
        print(format_table(rows, columns))
        print()
    print(f"saved {args.run_dir}/metrics.json and plots: {', '.join(result.get('plots', []))}")
    return 0


def export(args: argparse.Namespace) -> int:
    from serving.index_config import IndexConfig  # noqa: PLC0415
    from trainer.export import export_run  # noqa: PLC0415
    from trainer.export_options import ExportOptions  # noqa: PLC0415
    from twotower.wiring import export_builder  # noqa: PLC0415

    index = export_builder(from_flags(IndexConfig, args, prefix="index-"))
    manifest = export_run(args.run_dir, index=index, options=from_flags(ExportOptions, args))
    tower = manifest["query_tower"]
    print(
        json.dumps(
            {
                "version": tower["latest"],
                "versions": tower["versions"],
                "inputs": list(tower["inputs"]),
                "items": manifest["items"]["count"],
                "index": manifest["index"]["kind"],
            },
            indent=2,
        )
    )
    return 0


def serve(args: argparse.Namespace) -> int:
    from serving.service import serve  # noqa: PLC0415
    from serving.service_config import ServiceConfig  # noqa: PLC0415

    serve(args.export_dir, from_flags(ServiceConfig, args))
    return 0


def bench(args: argparse.Namespace) -> int:
    from twotower.bench.settings import BENCHMARKS  # noqa: PLC0415

    settings_class = BENCHMARKS[args.name]
    base = settings_class(**settings_class.QUICK) if args.quick else None
    settings = from_flags(settings_class, args, base=base)
    if args.name == "serving":
        from serving.index_config import IndexConfig  # noqa: PLC0415

        index = from_flags(IndexConfig, args, prefix="index-", base=settings.index)
        settings = dataclasses.replace(settings, index=index)
    importlib.import_module(f"twotower.bench.{args.name}").run(settings, args.output)
    return 0


def demo(args: argparse.Namespace) -> int:
    from twotower.demo import results_tables, run_demo  # noqa: PLC0415

    results = run_demo(
        config_from_args(args),
        args.work_dir,
        beam_args=runner_args(args),
        verbose=args.verbose,
        top_k=args.top_k,
    )
    print(results_tables(results))
    return 0
