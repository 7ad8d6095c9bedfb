"""ExportOptions: what `twotower export` writes besides the query tower and the items."""

import dataclasses

from common import contracts
from common.settings import Settings, setting


@dataclasses.dataclass(frozen=True)
class ExportOptions(Settings):
    """What `export_run` writes besides the query tower, the item embeddings and index."""

    version: int = setting(0, "version folder to write (0 = one above the newest)", min=0)
    retrieval_model: str = setting(
        "none",
        "also write a TFRS top-K SavedModel (needs a TF Serving built with ScaNN's ops for scann)",
        choices=("none", "brute_force", "scann"),
    )
    retrieval_k: int = setting(100, "items the retrieval SavedModel returns per query", min=1)
    warmup_requests: int = setting(
        8, "TF Serving warm-up records, built from eval users", min=1, max=1000
    )
    model_name: str = setting(contracts.MODEL_NAME, "TF Serving's model name (in the warm-up)")
    validation_users: int = setting(
        64, "eval users embedded by the trained and by the reloaded model", min=1
    )
    lock_timeout_s: float = setting(
        600.0, "seconds to wait for another export of the same directory to finish", min=0
    )
    tolerance: float = setting(
        1e-5,
        "largest |trained - reloaded| difference, relative to the values' size when above 1",
        min=0,
    )
