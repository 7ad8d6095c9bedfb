"""Serving: an export directory -> top-K items for a user (docs/serving.md).

export_version   one loaded version of an export directory (manifest, ids, index)
index_config     IndexConfig; item_index the base; brute_force_index, scann_index
index_io         build_index, load_index, IndexBuilder (what the trainer's export is handed)
query_features   raw user features -> the signature's padded string batch
query_embedder   query embeddings in process, or from TF Serving (gRPC / REST)
service_config, retrieval_service, service, api   the HTTP service (FastAPI), hot reload
retriever        the in-process library form
"""

from common import env as _env  # noqa: F401  (must run before TensorFlow is imported)
