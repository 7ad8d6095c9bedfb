"""The `twotower` that tests/test_docs.py puts first on PATH: the real command line with
the documented flags, shrunk to tiny data.

- `simulate` builds a small world (flags the doc gives win);
- `preprocess` runs Beam in one process; `train` and `demo` run one epoch;
- `serve` loads the export, answers `/healthz` and `/v1/metadata` once, then stops;
- `bench NAME` parses and validates its settings only: every benchmark runs for real with
  `--quick` in tests/bench/test_quick.py, and a doc's full-size flags would take hours.
"""

import sys

TINY_WORLD = {
    "--num-users": "200",
    "--num-items": "400",
    "--num-clusters": "8",
    "--days": "4",
    "--eval-days": "1",
    "--recall-size": "50",
    "--random-exposure-users": "60",
    "--random-exposure-size": "30",
    "--true-top-k": "200",
}


def _given(argv: list[str], flag: str) -> bool:
    return any(a == flag or a.startswith(f"{flag}=") for a in argv)


def tiny(argv: list[str]) -> list[str]:
    """The documented arguments with the tiny-data flags added (see module docstring)."""
    command = argv[0] if argv else ""
    extra: list[str] = []
    if command == "simulate":
        for flag, value in TINY_WORLD.items():
            if not _given(argv, flag):
                extra += [flag, value]
    if command in ("preprocess", "demo") and not _given(argv, "--runner"):
        extra += ["--direct-running-mode", "in_memory"]
    if command in ("train", "demo") and "--emit-tfjob" not in argv:
        extra += ["--set", "training.epochs=1", "--verbose", "0"]
    return [*argv, *extra]


def _serve_once(argv: list[str]) -> int:
    import urllib.request

    from common.settings import from_flags
    from serving.retrieval_service import RetrievalService
    from serving.service import run_in_thread
    from serving.service_config import ServiceConfig
    from twotower.cli import build_parser

    args = build_parser().parse_args(argv)
    config = from_flags(ServiceConfig, args)
    service = RetrievalService(args.export_dir, config)
    server = run_in_thread(service, config.host, 0)  # any free port: CI runs in parallel
    try:
        for path in ("/healthz", "/v1/metadata"):
            with urllib.request.urlopen(server.url + path, timeout=30) as response:
                assert response.status == 200, path
                print(response.read().decode()[:200])
    finally:
        server.stop()
        service.close()
    return 0


def _validate_bench(argv: list[str]) -> int:
    import importlib

    from twotower import cli
    from twotower.bench.settings import BENCHMARKS

    validated = []
    for name, settings_class in BENCHMARKS.items():
        module = importlib.import_module(f"twotower.bench.{name}")

        def record(settings, output_dir, expected=settings_class):
            assert isinstance(settings, expected) and output_dir
            validated.append(settings)

        module.run = record
    code = cli.main(argv)
    if code == 0:
        assert len(validated) == 1
        print(f"validated {validated[0]}; run with --quick by tests/bench/test_quick.py")
    return code


def main(argv: list[str]) -> int:
    argv = tiny(argv)
    if argv[:1] == ["serve"]:
        return _serve_once(argv)
    if argv[:1] == ["bench"]:
        return _validate_bench(argv)
    from twotower import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
