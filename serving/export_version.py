"""One version of an export directory, as the serving side reads it.

  export/export_manifest.json          the latest version's manifest (the switch: it is
                                       replaced atomically once a version is complete)
  export/query_tower/<v>/              SavedModel (+ assets.extra/ warm-up), TF Serving's
  export/items/<v>/manifest.json       that version's manifest
  export/items/<v>/item_embeddings.npy, item_ids.txt, index/
  export/retrieval/<v>/                optional TFRS retrieval SavedModel (ScaNN ops)

The query tower and the item side of one version come from the same trained model, so
embeddings of version v are only ever scored against items of version v.
"""

import dataclasses
import functools
import json
import os
from typing import Any

from common.contracts import (
    EXPORT_MANIFEST,
    ITEMS_DIR,
    USER_FEATURE_PREFIX,
    VERSION_MANIFEST,
)
from serving.index_io import load_index
from serving.item_index import ItemIndex
from serving.query_features import InputSpec, input_specs


def read_manifest(export_dir: str, version: int | None = None) -> dict[str, Any]:
    """The manifest of `version` (default: the latest) of `export_dir`.

    Raises:
      FileNotFoundError: no export there, or no such version.
    """
    path = os.path.join(export_dir, EXPORT_MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no export manifest; run `twotower export RUN_DIR`")
    with open(path) as f:
        manifest = json.load(f)
    if version is None or version == manifest["version"]:
        return manifest
    path = os.path.join(export_dir, ITEMS_DIR, str(version), VERSION_MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: export version {version} does not exist")
    with open(path) as f:
        return json.load(f)


def latest_version(export_dir: str) -> int:
    """The version the export manifest points at."""
    return int(read_manifest(export_dir)["version"])


@dataclasses.dataclass
class ExportVersion:
    """A loaded version: its manifest, item ids and item index."""

    export_dir: str
    version: int
    manifest: dict[str, Any]
    item_ids: list[str]
    index: ItemIndex

    @functools.cached_property
    def row(self) -> dict[str, int]:
        """Item id -> its row in the embeddings and the index."""
        return {item: i for i, item in enumerate(self.item_ids)}

    @property
    def input_names(self) -> list[str]:
        """The query tower signature's inputs: "user_id", "history", "user.<name>"..."""
        return list(self.manifest["query_tower"]["inputs"])

    @functools.cached_property
    def inputs(self) -> dict[str, InputSpec]:
        """The signature's inputs with their dtypes and kinds (string/categorical for a
        manifest written before feature kinds)."""
        return input_specs(self.manifest["query_tower"]["inputs"])

    @property
    def user_inputs(self) -> dict[str, InputSpec]:
        """User feature name (prefix removed) -> its input spec, in signature order."""
        return {
            name.removeprefix(USER_FEATURE_PREFIX): spec
            for name, spec in self.inputs.items()
            if name.startswith(USER_FEATURE_PREFIX)
        }

    @property
    def user_features(self) -> list[str]:
        """User feature names (the signature's "user.<name>" inputs, prefix removed)."""
        return [
            name.removeprefix(USER_FEATURE_PREFIX)
            for name in self.input_names
            if name.startswith(USER_FEATURE_PREFIX)
        ]

    @property
    def saved_model_dir(self) -> str:
        return os.path.join(self.export_dir, self.manifest["query_tower"]["path"])

    def path(self, relative: str) -> str:
        return os.path.join(self.export_dir, relative)


def load_export_version(export_dir: str, version: int | None = None) -> ExportVersion:
    """Loads `version` (default: the latest) of `export_dir`: ids and index.

    Raises:
      FileNotFoundError: missing manifest or version.
      ValueError: the index and the id map disagree on the corpus size, or an input of
        the query tower has an unknown kind, a wrong dtype or no dim.
    """
    manifest = read_manifest(export_dir, version)
    input_specs(manifest["query_tower"]["inputs"])  # a bad spec fails the load, not a request
    with open(os.path.join(export_dir, manifest["items"]["ids"])) as f:
        item_ids = [line.rstrip("\n") for line in f]
    index = load_index(os.path.join(export_dir, manifest["index"]["path"]))
    if index.num_items != len(item_ids):
        raise ValueError(
            f"{export_dir} version {manifest['version']}: index holds {index.num_items} "
            f"items, {manifest['items']['ids']} {len(item_ids)}"
        )
    return ExportVersion(export_dir, int(manifest["version"]), manifest, item_ids, index)
