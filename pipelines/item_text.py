"""The text stage: item text features -> sentence embeddings, one `.npy` per feature.

Each declared text feature (`data.text_features`, "item.<name>") of every catalog row is
embedded by `pipelines.text_encoder.EmbedTexts` (the `text` extra's sentence encoder,
`data.text_encoder`, batched per worker) and written to the staging dataset as
`item_text/<name>.npy`: `[num_items, dim]` float32 in catalog index order, a NaN row for
an item without that text. The encoder module is imported only when text features are
declared, so a dataset without them never needs the extra.
"""

import io
import json
import os
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from common.contracts import ITEM_FEATURE_PREFIX, TEXT
from pipelines import fs
from pipelines.feature_kinds import FeatureKinds
from pipelines.feature_stats import text_file


class TextExtraMissing(ValueError):
    """Text features are declared but the `text` extra is not installed."""


def text_features(kinds: FeatureKinds) -> list[str]:
    """The item text features' names (without prefix), sorted."""
    return list(kinds.named(ITEM_FEATURE_PREFIX, TEXT))


def encoder_description(encoder: str, names: list[str]) -> dict[str, Any] | None:
    """{"encoder": its name, "dim"} of `encoder` (data.text_encoder) when `names` (text
    features) is not empty, without loading its weights; None when there is none.

    Raises:
      TextExtraMissing: the `text` extra is unavailable (the message says why and how to
        install it).
      ConfigError: `encoder` names no usable model (`text_encoder.encoder_info`).
    """
    if not names:
        return None
    from pipelines import text_encoder  # noqa: PLC0415  (the text extra, only when used)

    why = text_encoder.missing_extra(encoder)
    if why:
        raise TextExtraMissing(
            f"data.text_features={[ITEM_FEATURE_PREFIX + n for n in names]}: {why} "
            "(or leave data.text_features empty)"
        )
    info = text_encoder.encoder_info(encoder)
    return {"encoder": info["name"], "dim": int(info["dim"])}


def _item_texts(line: str, names: list[str]) -> Iterator[tuple[tuple[str, int], str]]:
    row = json.loads(line)
    texts = row.get("text", {})
    for name in names:
        if name in texts:
            yield (name, row["index"]), texts[name]


def write_embeddings(
    name: str, grouped: dict[str, list[Any]], staging: str, num_items: int, dim: int
) -> str:
    """Writes `item_text/<name>.npy` from the (index, vector) pairs of one feature.

    Returns:
      The file written, relative to `staging`.

    Raises:
      ValueError: a vector of another shape than `[dim]`, or an index outside the catalog.
    """
    array = np.full((num_items, dim), np.nan, dtype=np.float32)
    for index, vector in grouped["vectors"]:
        vector = np.asarray(vector, dtype=np.float32)
        if vector.shape != (dim,) or not 0 <= index < num_items:
            raise ValueError(
                f"item.{name}: item {index} of {num_items} got an embedding of shape "
                f"{vector.shape}, expected ({dim},) (data.text_encoder's dim)"
            )
        array[index] = vector
    buffer = io.BytesIO()
    np.save(buffer, array)
    relative = text_file(name)
    path = fs.join(staging, relative)
    if fs.is_local(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(buffer.getvalue())
    return relative


@beam.ptransform_fn
def EmbedItemTexts(  # noqa: N802
    catalog_lines: beam.PCollection,
    names: list[str],
    staging: str,
    num_items: int,
    encoder: str,
    dim: int,
    batch_size: int,
) -> beam.PCollection:
    """Embeds the catalog's text features and writes one `.npy` per feature.

    Args:
      catalog_lines: the lines of the staging `item_catalog.jsonl`.
      names: the text features (without prefix).
      staging: the staging dataset directory.
      num_items: the catalog's items (rows of every array).
      encoder: data.text_encoder (a model name or directory).
      dim: the encoder's output size (`encoder_description`).
      batch_size: data.text_batch_size.

    Returns:
      The relative paths written, one per feature (also when no item has that text).
    """
    from pipelines import text_encoder  # noqa: PLC0415  (the text extra, only when used)

    vectors = (
        catalog_lines
        | "Texts" >> beam.FlatMap(_item_texts, names)
        | "Embed" >> text_encoder.EmbedTexts(encoder, batch_size)
        | "ByFeature" >> beam.MapTuple(lambda key, vector: (key[0], (key[1], vector)))
    )
    features = catalog_lines.pipeline | "Features" >> beam.Create([(n, None) for n in names])
    return (
        {"names": features, "vectors": vectors}
        | "GroupByFeature" >> beam.CoGroupByKey()
        | "WriteNpy" >> beam.Map(lambda pair: write_embeddings(*pair, staging, num_items, dim))
    )
