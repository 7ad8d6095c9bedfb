"""RetrievalService: the serving logic behind the HTTP layer, with hot reload.

The service holds one immutable `_State` (an export version, its item index and a query
embedder pinned to that version). A request reads the reference once and uses that state
to the end, so a reload, which builds and probes a complete new state before it swaps the
reference, never drops or mixes a request. The old state's connections are closed after a
grace period, once requests that began before the swap are done.
"""

import dataclasses
import logging
import threading
import time
from typing import Any

from common.contracts import USER_FEATURE_PREFIX
from serving.api import RetrieveRequest
from serving.export_version import (
    ExportVersion,
    latest_version,
    load_export_version,
)
from serving.intention_search import search_outputs
from serving.query_embedder import EmbedderError, QueryEmbedder, make_embedder
from serving.query_features import feature_batch
from serving.service_config import ServiceConfig

log = logging.getLogger("twotower.serving")


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
        self._state = self._load(self._config.version)

    @property
    def config(self) -> ServiceConfig:
        return self._config

    @property
    def version(self) -> int:
        return self._state.export.version

    def _load(self, version: int | None) -> _State:
        """A complete, probed state for `version` (default: the latest)."""
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
            probe = embedder.embed(feature_batch([{"user_id": ""}], export.input_names))
        except Exception:
            embedder.close()
            raise
        if probe.shape != (1, export.index.dim):
            embedder.close()
            raise ValueError(
                f"version {export.version}: the query tower returns {probe.shape}, "
                f"the index expects (1, {export.index.dim})"
            )
        return _State(export, embedder, time.time())

    def reload(self) -> bool:
        """Switches to the latest export version if it is newer; True if it switched.

        Raises:
          Exception: whatever loading the new version raised; the current one stays.
        """
        if self._config.version is not None:
            return False
        with self._reload_lock:
            latest = latest_version(self._export_dir)
            if latest == self._state.export.version:
                return False
            new = self._load(latest)
            old, self._state = self._state, new
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
        known = set(export.user_features)
        for i, query in enumerate(request.queries):
            unknown = sorted(set(query.features) - known)
            missing = sorted(known - set(query.features))
            if unknown or missing:
                problem = f"unknown {unknown}" if unknown else f"missing {missing}"
                raise RequestError(
                    422,
                    f"queries[{i}].features: {problem}; expected exactly {sorted(known)} "
                    "(send [] for a value the caller does not know)",
                )
            lists = {"history": query.history, "exclude": query.exclude}
            lists |= {f"features.{n}": v for n, v in query.features.items() if isinstance(v, list)}
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
            outputs = state.embedder.outputs(feature_batch(users, export.input_names))
        except EmbedderError as e:
            raise RequestError(503, str(e)) from e
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
            "follows_latest": self._config.version is None,
        }

    def health(self) -> dict[str, Any]:
        return {"status": "ok", "model_version": self.version}

    def close(self) -> None:
        self.stop()
        self._state.embedder.close()
