import subprocess
import sys

import pytest

from twotower import cli

COMMANDS = ["simulate", "preprocess", "train", "evaluate", "export", "serve", "bench", "demo"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert command in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert "usage: twotower " + command in capsys.readouterr().out


def test_train_help_shows_options_defaults_and_config_keys(capsys):
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--run-dir DIR" in out
    assert "(default: 1)" in out  # --verbose
    assert "training.batch_size=512" in out


def test_serve_without_an_export_exits_1(capsys):
    assert cli.main(["serve", "/nowhere"]) == 1
    assert "/nowhere" in capsys.readouterr().err


@pytest.mark.parametrize(
    "text, key",
    [
        ("training:\n  batch_size: -1\n", "training.batch_size"),
        ("trainig:\n  epochs: 1\n", "trainig"),
    ],
)
def test_bad_config_exits_1_naming_the_key(tmp_path, capsys, text, key):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    code = cli.main(["train", "--config", str(path), "--data", "d", "--run-dir", "r"])
    assert code == 1
    assert f"config error: {key}" in capsys.readouterr().err


def test_missing_dataset_exits_1(tmp_path, capsys):
    code = cli.main(["train", "--data", str(tmp_path / "none"), "--run-dir", str(tmp_path / "r")])
    assert code == 1
    assert "no manifest" in capsys.readouterr().err


def test_console_script_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "twotower", "--version"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert done.stdout.startswith("twotower ")


def test_train_emits_a_tfjob_instead_of_training(capsys):
    code = cli.main(
        [
            "train",
            "--emit-tfjob",
            "--image",
            "registry.example/twotower:0.1.0",
            "--data",
            "/data/dataset",
            "--run-dir",
            "/data/runs/a",
            "--replicas",
            "3",
            "--set",
            "training.epochs=3",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "kind: TFJob" in out and "replicas: 3" in out
    assert "training.epochs=3" in out and "registry.example/twotower:0.1.0" in out


def test_tfjob_refuses_an_unpinned_image(capsys):
    code = cli.main(
        ["train", "--emit-tfjob", "--image", "twotower:latest", "--data", "d", "--run-dir", "r"]
    )
    assert code == 1
    assert "image" in capsys.readouterr().err
