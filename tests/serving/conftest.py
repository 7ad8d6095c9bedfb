"""A tiny trained run shared by the serving tests, and helpers to call the service."""

import json
import os
import shutil
import urllib.error
import urllib.request

import pytest

from common.config import load_config
from tests.conftest import export
from trainer.train import train

TINY_MODEL = [
    "training.epochs=3",
    "training.batch_size=16",
    "model.hidden_units=[16]",
    "model.output_dim=8",
    "model.embedding_dim=8",
    "evaluation.ks=[1, 5]",
]


@pytest.fixture(scope="session")
def trained_run(tiny_dataset, tmp_path_factory):
    """A finished training run on the tiny dataset (never exported: copy it first)."""
    path = str(tmp_path_factory.mktemp("serving_run") / "run")
    train(load_config(overrides=TINY_MODEL), tiny_dataset, path, verbose=0)
    return path


@pytest.fixture
def fresh_run(trained_run, tmp_path):
    """A copy of the trained run with no export yet, for tests that write exports."""
    path = str(tmp_path / "run")
    shutil.copytree(trained_run, path)
    return path


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """(run copy, export dir) with version 1 exported, shared read-only."""
    path = str(tmp_path_factory.mktemp("exported") / "run")
    shutil.copytree(trained_run, path)
    export(path)
    return path, os.path.join(path, "export")


def post_json(url: str, body: object, raw: bytes | None = None) -> tuple[int, dict]:
    """(status, JSON body) of a POST; 4xx/5xx are returned, not raised."""
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as e:
        return e.code, json.load(e)


def get_json(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, json.load(response)
