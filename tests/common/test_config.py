import json
import pathlib

import pytest
import yaml

from common.config import (
    Config,
    ConfigError,
    config_from_dict,
    describe_options,
    load_config,
    save_config,
)


def test_defaults_are_valid():
    config = load_config()
    assert config == Config()
    assert config.training.batch_size == 512
    assert config.evaluation.ks == [10, 50, 100]


def test_yaml_file_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 3\nmodel:\n  hidden_units: [64, 32]\n")
    config = load_config(str(path), ["training.learning_rate=0.5", "evaluation.ks=[5, 20]"])
    assert config.training.epochs == 3
    assert config.model.hidden_units == [64, 32]
    assert config.training.learning_rate == 0.5
    assert config.evaluation.ks == [5, 20]


def test_json_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": {"num_b": 2}}))
    assert load_config(str(path)).data.num_b == 2


def test_int_is_accepted_for_float():
    assert load_config(overrides=["training.learning_rate=1"]).training.learning_rate == 1.0


@pytest.mark.parametrize(
    "text, message",
    [
        ("training:\n  batch_sise: 32\n", "training.batch_sise: unknown key"),
        ("trainig:\n  epochs: 1\n", "trainig: unknown key"),
        ("training:\n  batch_size: -4\n", "training.batch_size: -4 is below the minimum 1"),
        ("training:\n  batch_size: 2.5\n", "training.batch_size: expected an integer"),
        ("training:\n  batch_size: true\n", "training.batch_size: expected an integer"),
        ("model:\n  similarity: l1\n", "model.similarity: 'l1' is not one of dot, cosine"),
        ("model:\n  hidden_units: [64, x]\n", "model.hidden_units[1]: expected an integer"),
        ("negatives:\n  remove_accidental_hits: 1\n", "expected true or false"),
        ("training: 5\n", "training: expected a mapping, got 5"),
        ("[1, 2]\n", "expected a mapping of sections"),
    ],
)
def test_invalid_files_name_the_key(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_config(str(path))


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(overrides=["training.epochs"])
    with pytest.raises(ConfigError, match="training.epochs: 0 is below the minimum 1"):
        load_config(overrides=["training.epochs=0"])


def test_missing_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(str(tmp_path / "absent.yaml"))


def test_saved_config_reloads_identically(tmp_path):
    config = load_config(overrides=["training.epochs=2", "model.hidden_units=[16]"])
    path = save_config(config, str(tmp_path))
    assert load_config(path) == config
    assert config_from_dict(yaml.safe_load(pathlib.Path(path).read_text())) == config


def test_describe_options_lists_every_key_with_default():
    text = describe_options()
    assert "training.batch_size=512" in text
    assert 'data.source="movielens-100k"' in text
    assert "training.batch_size=512  global batch size (>= 1)" in text
    for section in ("data", "model", "negatives", "uma2", "training", "evaluation"):
        assert f"  {section}:" in text
