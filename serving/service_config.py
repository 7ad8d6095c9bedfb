"""ServiceConfig: the retrieval service's settings (`twotower serve` flags)."""

import dataclasses

from common import contracts
from common.settings import Settings, setting


@dataclasses.dataclass(frozen=True)
class ServiceConfig(Settings):
    """Settings of the retrieval service (docs/serving.md)."""

    host: str = setting("127.0.0.1", "address to listen on")
    port: int = setting(8080, "port to listen on", min=0, max=65535)
    tf_serving: str | None = setting(
        None,
        "query tower from TF Serving: grpc://host:8500 or http://host:8501 (default: the "
        "SavedModel in process)",
    )
    model_name: str = setting(contracts.MODEL_NAME, "the query tower's model name in TF Serving")
    version: int | None = setting(
        None, "serve this export version only (default: follow the latest, hot-reloaded)", min=1
    )
    intentions: bool = setting(
        True,
        "Multi-CLRec exports: merge the top-k of every intention vector with the main "
        "embedding's (round robin, docs/serving.md); off = the embedding alone",
    )
    max_k: int = setting(1000, "largest k a request may ask for", min=1)
    max_batch: int = setting(256, "most queries in one request", min=1)
    max_list: int = setting(
        1000, "most history items, excluded items or tokens of one feature per query", min=1
    )
    max_body_bytes: int = setting(4 * 1024 * 1024, "largest request body", min=1)
    reload_interval_s: float = setting(
        10.0, "seconds between checks for a new export version (0 = off)", min=0
    )
    tf_serving_timeout_s: float = setting(5.0, "deadline of one TF Serving call, seconds", min=1e-3)
    close_grace_s: float = setting(
        30.0, "seconds a replaced version's connections stay open", min=0
    )
