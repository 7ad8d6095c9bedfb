"""RetrievalService: the serving logic behind the HTTP layer, with hot reload.

The service holds one immutable `_State` (an export version, its item index and a query
embedder pinned to that version). A request reads the reference once and uses that state
to the end, so a reload, which builds and probes a complete new state before it swaps the
reference, never drops or mixes a request. The old state's connections are closed after a
grace period, once requests that began before the swap are done.

A version must pass `_verify` to be served: finite item embeddings, a probe query embedding
of the index's shape with finite values, finite index scores for it. A newer version that
fails is not swapped in: the service keeps the one it has, `/healthz` says `degraded`
with the reason (still 200: it serves), `/v1/metadata` carries it, and the same version is
not retried until the export manifest changes. At start-up, a latest version that fails
falls back to the newest older one that passes, with a warning. An unreachable TF Serving
at start-up is `BackendUnavailable` (exit 138, one line).
"""

import dataclasses
import logging
import os
import threading
import time
from typing import Any

import numpy as np

from common.contracts import EXPORT_MANIFEST, ITEMS_DIR, USER_FEATURE_PREFIX
from common.exit_codes import RetryableError
from serving.api import RetrieveRequest
from serving.export_version import (
    ExportVersion,
    latest_version,
    load_export_version,
)
from serving.intention_search import search_outputs
from serving.query_embedder import EmbedderError, QueryEmbedder, make_embedder
from serving.query_features import feature_batch, value_problem
from serving.service_config import ServiceConfig

log = logging.getLogger("twotower.serving")


class VersionRejected(ValueError):
    """An export version that fails the service's checks (non-finite values, shapes)."""


class BackendUnavailable(RetryableError):
    """TF Serving cannot be reached at start-up."""


_CHECK_ROWS = 65_536  # item embeddings are checked in slices of this many rows


def _verify(export: ExportVersion, probe: np.ndarray) -> None:
    """Raises VersionRejected unless `export`'s item embeddings, the probe query embedding
    and the index's scores for it are finite, and the probe has the index's shape."""
    where = f"version {export.version}"
    if probe.shape != (1, export.index.dim):
        raise VersionRejected(
            f"{where}: the query tower returns {probe.shape}, the index expects "
            f"(1, {export.index.dim})"
        )
    if not np.isfinite(probe).all():
        raise VersionRejected(f"{where}: the query tower returns NaN or infinite embeddings")
    path = export.path(export.manifest["items"]["embeddings"])
    embeddings = np.load(path, mmap_mode="r")
    for start in range(0, len(embeddings), _CHECK_ROWS):
        if not np.isfinite(embeddings[start : start + _CHECK_ROWS]).all():
            raise VersionRejected(f"{where}: {path} holds NaN or infinite item embeddings")
    found, scores = export.index.search(probe, min(10, export.index.num_items))
    if not np.isfinite(np.where(found >= 0, scores, 0.0)).all():
        raise VersionRejected(f"{where}: the item index returns NaN or infinite scores")


class RequestError(ValueError):
    """A request the service refuses; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class _State:
    export: ExportVersion
    embedder: QueryEmbedder
    loaded_at: float


class RetrievalService:
    """Query features -> query embedding -> item index -> top-K item ids with scores."""

    def __init__(self, export_dir: str, config: ServiceConfig | None = None):
        self._export_dir = export_dir
        self._config = config or ServiceConfig()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        self.reloads = 0
        self.reload_errors = 0
        self._degraded: str | None = None
        self._rejected: tuple[int, float] | None = None  # (version, manifest mtime)
        self._state = self._start()

    @property
    def config(self) -> ServiceConfig:
        return self._config

    @property
    def version(self) -> int:
        return self._state.export.version

    def _start(self) -> _State:
        """The state to serve first: the configured version, else the latest that passes
        its checks (older ones tried newest first, with a warning).

        Raises:
          BackendUnavailable: TF Serving does not answer.
          VersionRejected, FileNotFoundError, ValueError: no version can be served.
        """
        try:
            return self._load(self._config.version)
        except EmbedderError as e:
            raise BackendUnavailable(f"query tower backend unavailable: {e}") from e
        except Exception as e:  # a corrupt or missing part, a failed check: try older ones
            if self._config.version is not None:
                raise
            first = e
        latest = latest_version(self._export_dir)
        self._rejected = (latest, self._manifest_mtime())
        for version in self._older_versions(latest):
            try:
                state = self._load(version)
            except Exception as e:
                log.warning("export version %d cannot be served either: %s", version, e)
                continue
            self._degraded = f"latest version {latest} rejected: {first}"
            log.warning("%s; serving version %d instead", self._degraded, version)
            return state
        raise first

    def _older_versions(self, latest: int) -> list[int]:
        items = os.path.join(self._export_dir, ITEMS_DIR)
        found = [int(n) for n in os.listdir(items) if n.isdigit()] if os.path.isdir(items) else []
        return sorted((v for v in found if v < latest), reverse=True)

    def _manifest_mtime(self) -> float:
        try:
            return os.stat(os.path.join(self._export_dir, EXPORT_MANIFEST)).st_mtime
        except OSError:
            return 0.0

    def _load(self, version: int | None) -> _State:
        """A complete, probed and verified state for `version` (default: the latest).

        Raises:
          EmbedderError: the query tower does not answer (TF Serving down or without it).
          VersionRejected: the version fails `_verify`.
        """
        export = load_export_version(self._export_dir, version)
        embedder = make_embedder(
            self._config.tf_serving,
            export.saved_model_dir,
            export.version,
            model_name=self._config.model_name,
            timeout_s=self._config.tf_serving_timeout_s,
        )
        # A version TF Serving has not loaded yet fails here, before any request sees it.
        try:
            probe = embedder.embed(feature_batch([{"user_id": ""}], export.inputs))
            _verify(export, probe)
        except Exception:
            embedder.close()
            raise
        return _State(export, embedder, time.time())

    def reload(self) -> bool:
        """Switches to the latest export version if it is newer; True if it switched.

        Raises:
          Exception: whatever loading the new version raised; the current one stays.
        """
        if self._config.version is not None:
            return False
        with self._reload_lock:
            mtime = self._manifest_mtime()
            latest = latest_version(self._export_dir)
            if latest == self._state.export.version or self._rejected == (latest, mtime):
                return False
            try:
                new = self._load(latest)
            except VersionRejected as e:
                self._rejected = (latest, mtime)  # not retried until the manifest changes
                self._degraded = f"version {latest} rejected: {e}"
                raise
            old, self._state = self._state, new
            self._degraded, self._rejected = None, None
            self.reloads += 1
            log.info("serving export version %d (was %d)", latest, old.export.version)
        timer = threading.Timer(self._config.close_grace_s, old.embedder.close)
        timer.daemon = True
        timer.start()
        return True

    def _watch(self) -> None:
        while not self._stop.wait(self._config.reload_interval_s):
            try:
                self.reload()
            except Exception as e:  # keep serving the current version; retry next tick
                self.reload_errors += 1
                if not isinstance(e, VersionRejected):
                    self._degraded = f"reload failed: {e}"
                log.warning("reload failed, still serving %d: %s", self.version, e)

    def start(self) -> None:
        """Starts watching the export manifest (if `reload_interval_s` > 0)."""
        if self._config.reload_interval_s > 0 and self._watcher is None:
            self._stop.clear()
            self._watcher = threading.Thread(target=self._watch, name="reload", daemon=True)
            self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join()
            self._watcher = None

    def _check(self, request: RetrieveRequest, export: ExportVersion) -> None:
        config = self._config
        if len(request.queries) > config.max_batch:
            raise RequestError(
                413, f"queries: {len(request.queries)} queries, at most {config.max_batch}"
            )
        largest = min(config.max_k, export.index.num_items)
        if not 1 <= request.k <= largest:
            raise RequestError(422, f"k: must be in [1, {largest}], got {request.k}")
        specs = export.user_inputs
        for i, query in enumerate(request.queries):
            unknown = sorted(set(query.features) - set(specs))
            missing = sorted(set(specs) - set(query.features))
            if unknown or missing:
                problem = f"unknown {unknown}" if unknown else f"missing {missing}"
                raise RequestError(
                    422,
                    f"queries[{i}].features: {problem}; expected exactly {sorted(specs)} "
                    "(send [] for tokens, null for a number or vector the caller does not know)",
                )
            lists = {"history": query.history, "exclude": query.exclude}
            for name, value in query.features.items():
                field = f"queries[{i}].features.{name}"
                problem = value_problem(field, specs[name], value)
                if problem:
                    raise RequestError(422, problem)
                if isinstance(value, list) and not specs[name].dense:
                    lists[f"features.{name}"] = value
            for name, values in lists.items():
                if len(values) > config.max_list:
                    raise RequestError(
                        422,
                        f"queries[{i}].{name}: {len(values)} entries, at most {config.max_list}",
                    )

    def retrieve(self, request: RetrieveRequest) -> dict[str, Any]:
        """Top-k items per query of a validated request.

        Raises:
          RequestError: limits or feature names violated (4xx), TF Serving failing (503).
        """
        state = self._state  # one read: the whole request uses this version
        export = state.export
        self._check(request, export)
        users = [
            {"user_id": q.user_id, "history": q.history}
            | {USER_FEATURE_PREFIX + name: value for name, value in q.features.items()}
            for q in request.queries
        ]
        try:
            outputs = state.embedder.outputs(feature_batch(users, export.inputs))
        except EmbedderError as e:
            raise RequestError(503, str(e)) from e
        if not all(np.isfinite(v).all() for v in outputs.values()):
            raise RequestError(503, "the query tower returned NaN or infinite embeddings")
        row = export.row
        exclude = [[row[i] for i in q.exclude if i in row] for q in request.queries]
        indices, scores, origin = search_outputs(
            export.index, outputs, request.k, exclude, self._config.intentions
        )
        ids = export.item_ids
        return {
            "model_version": export.version,
            "results": [
                {
                    "user_id": query.user_id,
                    "items": [
                        {"item_id": ids[i], "score": float(s)}
                        | ({"intention": int(origin[r, j])} if origin is not None else {})
                        for j, (i, s) in enumerate(zip(indices[r], scores[r], strict=True))
                        if i >= 0
                    ],
                }
                for r, query in enumerate(request.queries)
            ],
        }

    def metadata(self) -> dict[str, Any]:
        state = self._state
        export = state.export
        return {
            "model_version": export.version,
            "export_dir": self._export_dir,
            "created_at": export.manifest.get("created_at"),
            "query_tower": {
                "source": state.embedder.target,
                "tf_serving": self._config.tf_serving,
                "model_name": self._config.model_name,
                "inputs": export.manifest["query_tower"]["inputs"],
            },
            "user_features": export.user_features,
            "user_feature_kinds": {
                name: spec.describe() for name, spec in export.user_inputs.items()
            },
            "items": {"count": export.index.num_items, "dim": export.index.dim},
            "index": {"kind": export.index.kind, "config": export.index.config.get_config()},
            "similarity": export.manifest.get("similarity"),
            "limits": {
                "max_k": min(self._config.max_k, export.index.num_items),
                "max_batch": self._config.max_batch,
                "max_list": self._config.max_list,
            },
            "loaded_at": state.loaded_at,
            "reloads": self.reloads,
            "reload_errors": self.reload_errors,
            "degraded": self._degraded,
            "follows_latest": self._config.version is None,
        }

    def health(self) -> dict[str, Any]:
        """`ok`, or `degraded` with the reason while a rejected newer version waits."""
        if self._degraded:
            return {"status": "degraded", "model_version": self.version, "reason": self._degraded}
        return {"status": "ok", "model_version": self.version}

    def close(self) -> None:
        self.stop()
        self._state.embedder.close()
