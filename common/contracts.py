"""The file contracts between the stages: every name a writer and its readers share.

Each stage talks to the next through a folder, never through the other's code:
  simulator folder   simulator/ writes; pipelines/ (logs) and trainer/ (ground truth) read
  dataset directory  pipelines/ writes; trainer/ reads (docs/dataset.md)
  run directory      trainer/ writes and reads back (docs/run_directory.md)
  export directory   trainer/ writes; serving/ and TF Serving read (docs/run_directory.md)
Writers and readers import these names from here, so a name is spelled once.
"""

# --- Simulator folder (`twotower simulate --output DIR`, docs/simulator.md) ---
SIM_REQUESTS = "requests.jsonl"
SIM_ITEMS = "items.jsonl"
SIM_USERS = "users.jsonl"
SIM_RANDOM_EXPOSURE = "random_exposure.jsonl"
SIM_TRUE_TOP_K = "true_top_k.jsonl"
SIM_PROPENSITIES = "propensities.jsonl"  # true P(recalled), P(exposed | recalled) per pair
SIM_WORLD_SUMMARY = "world.json"  # config, eval_from, end_timestamp, counts
SIM_WORLD_ARRAYS = "world.npz"
SIM_COLD_ITEMS = "cold_items.txt"  # ids of items never shown before eval_from, one a line

# --- Dataset directory (`twotower preprocess --output DIR`, docs/dataset.md) ---
DATASET_SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"  # written last: a directory without it is unfinished
CONFIG_FILE = "config.yaml"  # also in every run directory
CATALOG_FILE = "item_catalog.jsonl"
ITEM_FREQUENCY_FILE = "item_frequency.tsv"  # item <TAB> training clicks (logQ)
ITEM_EXPOSURE_FILE = "item_exposure.tsv"  # item <TAB> training exposures (propensities)
VOCABULARY_DIR = "vocab"
DEAD_LETTER_DIR = "dead_letter"
TRAIN = "train"
EVAL = "eval"
SHARD_SUFFIX = ".tfrecord.gz"
LATEST_FILE = "LATEST"  # daily runs: the folder name of the newest good dataset
LATEST_LINK = "latest"

# Example features (manifest `feature_spec`); user features are "user.<name>".
USER_FEATURE_PREFIX = "user."
ITEM_FEATURE_PREFIX = "item."
REQUEST_ID = "request_id"
USER_ID = "user_id"
ITEM_ID = "item_id"
TIMESTAMP = "timestamp"
HISTORY = "history"
SPACE_A = "space_a"
SPACE_B = "space_b"
NUM_SPACE_A = "num_space_a"
NUM_SPACE_B = "num_space_b"
SCALAR_STRING = {"dtype": "string", "shape": "scalar"}
SCALAR_INT = {"dtype": "int64", "shape": "scalar"}
STRING_LIST = {"dtype": "string", "shape": "list"}
BASE_FEATURE_SPEC = {
    REQUEST_ID: SCALAR_STRING,
    USER_ID: SCALAR_STRING,
    ITEM_ID: SCALAR_STRING,
    TIMESTAMP: SCALAR_INT,
    HISTORY: STRING_LIST,
    SPACE_A: STRING_LIST,
    SPACE_B: STRING_LIST,
    NUM_SPACE_A: SCALAR_INT,
    NUM_SPACE_B: SCALAR_INT,
}


# Feature kinds (docs/features.md). Every user and item feature has one; manifest.json
# `features` maps its qualified name ("user.<name>", "item.<name>") to its description:
#   categorical: {"kind"}                         tokens (a string list), as always
#   numeric:     {"kind", "dim": 1, "log", "mean", "std", "count", "missing",
#                 "boundaries": [...]}            a float; statistics of the transformed
#                                                 value (log1p if "log") from the training
#                                                 split (user features) or the catalog (items)
#   vector:      {"kind", "dim", "count", "missing"}  a fixed-length float list
#   text:        {"kind", "dim", "encoder", "file", "count", "missing"}  items only: the
#                 pipeline embeds it; `file` is the [num_items, dim] float32 .npy of the
#                 embeddings (NaN rows: no text), relative to the dataset directory
# In examples, numeric and vector user features are float lists (absent when missing);
# their feature_spec entry is FLOAT_VECTOR with its "dim", parsed with NaN defaults.
# In item_catalog.jsonl, "features" keeps the categorical tokens, "dense" {name: [floats]}
# the numeric (one float) and vector features, "text" {name: string} the text features;
# a missing value is absent.
IDENTIFIER = "id"  # the export manifest's kind of the "user_id" input
CATEGORICAL = "categorical"
NUMERIC = "numeric"
VECTOR = "vector"
TEXT = "text"
FEATURE_KINDS = (CATEGORICAL, NUMERIC, VECTOR, TEXT)
FLOAT_VECTOR = {"dtype": "float32", "shape": "fixed"}  # + "dim"
ITEM_TEXT_DIR = "item_text"  # <dataset>/item_text/<name>.npy
DEFAULT_TEXT_ENCODER = "all-MiniLM-L6-v2"  # the `text` extra's packaged model


def shard_pattern(split: str) -> str:
    """The glob of one split's TFRecord shards inside a dataset directory."""
    return f"{split}-*{SHARD_SUFFIX}"


# --- Run directory (`twotower train --run-dir DIR`, docs/run_directory.md) ---
RUN_FILE = "run.json"
WEIGHTS = "checkpoints/final"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
METRICS_FILE = "metrics.json"
EXPORT_DIR = "export"

# --- Export directory (`twotower export RUN_DIR`, docs/run_directory.md) ---
EXPORT_MANIFEST = "export_manifest.json"  # the latest version's; replaced atomically
QUERY_TOWER_DIR = "query_tower"  # TF Serving's model base path: <v>/saved_model.pb
ITEMS_DIR = "items"
RETRIEVAL_DIR = "retrieval"
VERSION_MANIFEST = "manifest.json"  # items/<v>/manifest.json
ITEM_EMBEDDINGS = "item_embeddings.npy"
ITEM_IDS = "item_ids.txt"
INDEX_DIR = "index"
WARMUP_FILE = "assets.extra/tf_serving_warmup_requests"
SIGNATURE = "serving_default"
EMBEDDING_OUTPUT = "embedding"
INTENTIONS_OUTPUT = "intentions"  # Multi-CLRec exports: [batch, H, dim] beside the embedding
MODEL_NAME = "query_tower"  # TF Serving's model name (k8s/serving/tf-serving-config.yaml)
