"""Serving: an export directory -> top-K items for a user (docs/serving.md).

export_version   the export layout, and one loaded version (manifest, ids, index)
item_index       IndexConfig, build_index/load_index; brute_force_index, scann_index
query_features   raw user features -> the signature's padded string batch
query_embedder   query embeddings in process, or from TF Serving (gRPC / REST)
warmup           TF Serving warm-up requests; standard_ops: the stock-TF-Serving check
retrieval_service, service, api   the HTTP service (FastAPI), with hot reload
retriever        the in-process library form; benchmark, load_client: `bench serving`
"""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)
