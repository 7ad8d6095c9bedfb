"""The training configuration: one section per stage, loaded once at the entry point.

Sections are `common.settings.Settings` dataclasses (type, default, range and help
declared once per key). `load_config` reads YAML or JSON, applies `--set
section.key=value` overrides and validates everything, naming the key at fault.
"""

import dataclasses
import os
import typing
from typing import Any

import yaml

from common.contracts import (
    CONFIG_FILE,
    DEFAULT_TEXT_ENCODER,
    ITEM_FEATURE_PREFIX,
    USER_FEATURE_PREFIX,
)
from common.settings import ConfigError, Settings, describe, from_dict, parse_value, to_dict
from common.settings import setting as _field

__all__ = ["CONFIG_FILE", "Config", "ConfigError", "config_from_dict", "load_config"]


@dataclasses.dataclass
class DataConfig(Settings):
    """Where the data comes from and how examples are made from it."""

    source: str = _field(
        "movielens-100k",
        "input: movielens-100k (built in), simulator (a `twotower simulate` folder) or logs",
        choices=("movielens-100k", "simulator", "logs"),
    )
    input: str = _field(
        "", "logs: request-log files (globs, comma-separated, .gz ok); simulator: its folder"
    )
    catalog: str = _field("", "logs: item catalog file(s), same formats as the logs")
    users: str = _field("", "optional user table {user_id, features}; fills missing user_features")
    format: str = _field(
        "auto",
        "input format of logs, catalog and users: auto (by extension), jsonl, csv or parquet",
        choices=("auto", "jsonl", "csv", "parquet"),
    )
    max_bad_fraction: float = _field(
        0.01, "fail (exit 1) when more than this share of rows is dead-lettered", min=0, max=1
    )
    min_click_rating: float = _field(4.0, "movielens-100k: a rating >= this is a click", min=0)
    recall_size: int = _field(
        50, "movielens-100k: items the logged legacy recall adds beyond the exposed ones", min=0
    )
    recall_popularity_weight: float = _field(
        0.5,
        "movielens-100k: legacy recall score = w*popularity + (1-w)*co-occurrence",
        min=0,
        max=1,
    )
    history_length: int = _field(20, "clicked items before the request kept as history", min=0)
    num_a: int = _field(1, "Space A negatives (exposed, not clicked) kept per positive", min=0)
    num_b: int = _field(4, "Space B negatives (recalled, not exposed) kept per positive", min=0)
    split: str = _field(
        "leave-last-click-out",
        "eval split: leave-last-click-out (each user's last click) or time (eval_from)",
        choices=("leave-last-click-out", "time"),
    )
    eval_from: int = _field(0, "time split: first eval timestamp (0 = the source's own)", min=0)
    eval_days: int = _field(
        0, "time split without eval_from: the last N UTC days of the logs are eval", min=0
    )
    num_oov_buckets: int = _field(1, "out-of-vocabulary buckets per vocabulary", min=1)
    num_shards: int = _field(
        4, "TFRecord shards per split (0: the runner decides, saving a shuffle)", min=0
    )
    shard_spill_mb: int = _field(
        64,
        "with num_shards > 0: each worker sorts the shards' records in runs of about this "
        "many MB on disk, merged per shard (memory flat in the input size); 0: a "
        "GroupByKey per shard (in memory on the DirectRunner)",
        min=0,
    )
    group_spill_mb: int = _field(
        64,
        "the groupings by user and by request id wait in sorted runs on disk, written "
        "by each worker every this many MB and merged per partition (memory flat in the "
        "input size); 0: Beam's GroupByKey/CoGroupByKey/CombinePerKey (in memory on the "
        "DirectRunner; the better choice on distributed runners, which shuffle on disk)",
        min=0,
    )
    min_count: int = _field(
        1,
        "vocabularies keep tokens seen in at least this many training examples (catalog "
        "items: clicks + history); the rest share the OOV buckets",
        min=1,
    )
    max_vocab_size: int = _field(
        0, "vocabularies keep at most this many (most frequent) tokens; 0: no limit", min=0
    )
    min_timestamp: int = _field(
        0,
        "requests before this time (seconds since the epoch) are dead-lettered as "
        "timestamp_out_of_range (0: 1970-01-01)",
        min=0,
    )
    max_timestamp: int = _field(
        4_102_444_800,
        "requests after this time (seconds since the epoch) are dead-lettered as "
        "timestamp_out_of_range (4102444800: 2100-01-01)",
        min=0,
        max=2**63 - 1,
    )
    max_id_bytes: int = _field(
        256,
        "an id, feature name or token longer than this (UTF-8 bytes) dead-letters its row "
        "as too_large",
        min=1,
    )
    max_row_bytes: int = _field(
        1 << 20,
        "a line or row longer than this (bytes) is dead-lettered as too_large, unparsed",
        min=1,
    )

    numeric_features: list[str] = _field(
        [],
        "features read as numbers (user.<name>, item.<name>); undeclared features are "
        "inferred: JSON numbers numeric, lists of numbers vectors, strings categorical",
    )
    vector_features: list[str] = _field(
        [], "features read as fixed-length float vectors, as name:dim (user.emb:16)"
    )
    text_features: list[str] = _field(
        [],
        "item features embedded by data.text_encoder in the pipeline (item.<name>; needs "
        "the text extra). MovieLens-100K: item.title adds title + genres + year",
    )
    categorical_features: list[str] = _field(
        [], "features read as tokens even when their values are numbers"
    )
    log_features: list[str] = _field(
        [], "numeric features transformed by log1p before standardising (counts, prices)"
    )
    numeric_buckets: int = _field(
        0,
        "numeric features also get an embedding of their quantile bucket (this many "
        "buckets, boundaries from the training split; 0: the standardised value only)",
        min=0,
    )
    text_encoder: str = _field(
        DEFAULT_TEXT_ENCODER,
        "sentence encoder for text features: all-MiniLM-L6-v2 (the text extra's packaged "
        "model) or a directory with model.safetensors, config.json and tokenizer.json",
    )
    text_batch_size: int = _field(64, "texts per encoder call in the pipeline", min=1)
    cold_item_fraction: float = _field(
        0.0,
        "hold every click of this random share of items (by a hash of the item id) out "
        "of training; their examples go to eval (the cold-start view)",
        min=0,
        max=0.9,
    )

    def check(self) -> None:
        declared = {
            "numeric_features": self.numeric_features,
            "vector_features": [v.rpartition(":")[0] or v for v in self.vector_features],
            "text_features": self.text_features,
            "categorical_features": self.categorical_features,
        }
        seen: dict[str, str] = {}
        for key, names in declared.items():
            for name in names:
                prefixes = (USER_FEATURE_PREFIX, ITEM_FEATURE_PREFIX)
                if not name.startswith(prefixes) or name in prefixes:
                    raise ConfigError(f"{name!r}: expected user.<name> or item.<name>", key)
                if name in seen:
                    raise ConfigError(f"{name} is also in data.{seen[name]}", key)
                seen[name] = key
        for entry in self.vector_features:
            _, _, dim = entry.rpartition(":")
            if not dim.isdigit() or int(dim) < 1:
                raise ConfigError(
                    f"{entry!r}: expected name:dim, e.g. user.emb:16", "vector_features"
                )
        for name in self.text_features:
            if name.startswith(USER_FEATURE_PREFIX):
                raise ConfigError(
                    f"{name}: text features are item features only (the query tower serves "
                    "raw features and holds no text encoder); embed user text yourself and "
                    "declare it in data.vector_features",
                    "text_features",
                )
        for name in self.log_features:
            if name in seen and seen[name] != "numeric_features":
                raise ConfigError(f"{name} is declared {seen[name]}, not numeric", "log_features")
        if self.min_timestamp > self.max_timestamp:
            raise ConfigError(
                f"{self.min_timestamp} is after data.max_timestamp {self.max_timestamp}",
                "min_timestamp",
            )


@dataclasses.dataclass
class ModelConfig(Settings):
    """Tower architecture."""

    tower: str = _field(
        "youtube_dnn",
        "youtube_dnn (MLP towers) or dat (Dual Augmented Two-tower: per-user and per-item "
        "augmented vectors that mimic the other tower)",
        choices=("youtube_dnn", "dat"),
    )
    embedding_dim: int = _field(32, "size of every id and feature embedding", min=1)
    hidden_units: list[int] = _field([128], "MLP hidden layer sizes of each tower")
    output_dim: int = _field(32, "size of the user and item embeddings", min=1)
    output_projection: bool = _field(
        True,
        "a linear output layer after the hidden layers; false: none, the towers' input "
        "is their output (needs hidden_units=[] and model.inputs=ids with embedding_dim = "
        "output_dim: TFRS's basic retrieval model)",
    )
    similarity: str = _field("dot", "score of a user and an item", choices=("dot", "cosine"))
    item_id_init: str = _field(
        "uniform",
        "start of the item id embeddings: uniform (Keras's), or zeros, so that items no "
        "training example reached score by their cluster and features alone",
        choices=("uniform", "zeros"),
    )
    mimic_weight: float = _field(0.5, "dat: weight of the adaptive-mimic loss", min=0)
    inputs: str = _field(
        "all",
        "what the towers read: all (user id, history, user features; item id, cluster, item "
        "features) or ids (user id and item id only: TFRS's basic retrieval model)",
        choices=("all", "ids"),
    )
    item_id_dropout: float = _field(
        0.0,
        "share of training encodings whose item id embedding is hidden (DropoutNet), so "
        "the item tower learns to place items by their cluster and features alone, as it "
        "must place cold items",
        min=0,
        max=1,
    )
    content_features: bool = _field(
        True,
        "the towers read the numeric, vector and text features (false: ids and "
        "categorical features only, the cold-start baseline)",
    )

    def check(self) -> None:
        if not self.output_projection and self.hidden_units:
            raise ConfigError(
                "output_projection=false leaves the towers without layers; it needs "
                f"hidden_units=[] (got {self.hidden_units})",
                "output_projection",
            )


@dataclasses.dataclass
class NegativesConfig(Settings):
    """Where negatives come from and how the loss corrects for them (docs/negatives.md)."""

    loss: str = _field(
        "softmax",
        "softmax (sampled softmax over all sources), bce (binary cross-entropy, UMA²) or "
        "tfrs (TFRS's own Retrieval task: in-batch softmax only, the baseline)",
        choices=("softmax", "bce", "tfrs"),
    )
    temperature: float = _field(0.1, "logits are divided by this (cosine similarity)", min=1e-6)
    remove_accidental_hits: bool = _field(True, "mask negatives equal to the row's positive")
    in_batch: bool = _field(True, "other rows' clicked items are negatives")
    cross_replica_in_batch: bool = _field(
        False, "several replicas: in-batch negatives from the global batch (all-gathered)"
    )
    in_batch_correction: str = _field(
        "static",
        "logQ correction of in-batch negatives: none, static (training click share) or "
        "streaming (Yi et al. 2019 frequency estimation)",
        choices=("none", "static", "streaming"),
    )
    frequency_alpha: float = _field(0.01, "streaming estimation learning rate", min=0, max=1)
    exposure_correction: str = _field(
        "item",
        "divide the legacy system's exposure out: item adds log(the item's training "
        "exposures per request) to every candidate's logit while training (docs/negatives.md)",
        choices=("none", "item"),
    )
    exposure_smoothing: float = _field(
        1.0, "exposure pseudo-count of every item (all a never-shown item has)", min=1e-6
    )
    exposure_strength: float = _field(
        0.5, "exposure_correction: the offset is strength x log(exposure rate)", min=0, max=1
    )
    frequency_buckets: int = _field(1_000_003, "streaming estimation hash buckets", min=1)
    corpus: int = _field(
        0, "uniform corpus negatives per batch, shared (Mixed Negative Sampling)", min=0
    )
    queue_size: int = _field(0, "CLRec FIFO queue of earlier items; 0 = off", min=0)
    queue_mode: str = _field(
        "embeddings",
        "queue holds embeddings (cached, no gradient), ids (re-encoded each step) or "
        "momentum (cached from a momentum copy of the item tower, MoCo-style, its own loss)",
        choices=("embeddings", "ids", "momentum"),
    )
    queue_momentum: float = _field(
        0.99, "momentum of the item tower copy that fills a momentum queue", min=0, max=0.9999
    )
    intentions: int = _field(
        0,
        "Multi-CLRec: H intention queues of queue_size / H items each, kept as queue_mode "
        "says (momentum: the main queue's momentum tower encodes them); 0 = off",
        min=0,
    )
    cluster: int = _field(0, "same-cluster hard negatives per positive", min=0)
    cluster_random: int = _field(0, "random out-of-batch negatives mixed with them", min=0)
    cluster_shared: bool = _field(
        False,
        "rows whose positives share a cluster share its draws: fewer distinct items "
        "through the item tower per step",
    )
    cluster_skip: bool = _field(
        False,
        "skip same-cluster negatives the model scores within cluster_margin of the "
        "positive (likely items the user likes: false negatives)",
    )
    cluster_margin: float = _field(
        0.0, "cluster_skip: skip draws scored >= the positive's score minus this"
    )
    cluster_source: str = _field(
        "catalog",
        "clusters from the catalog, k-means of the learned item embeddings (kmeans, "
        "refreshed during training), or k-means of the items' content embeddings "
        "(content: text and vector features, computed once at train start)",
        choices=("catalog", "kmeans", "content"),
    )
    kmeans_clusters: int = _field(0, "k-means clusters; 0 = as many as catalog clusters", min=0)
    kmeans_every_steps: int = _field(200, "recompute k-means clusters every N steps", min=1)
    space_a: int = _field(0, "UMA² Space A (exposed, not clicked) negatives per positive", min=0)
    space_b: int = _field(0, "UMA² Space B (recalled, not exposed) negatives per positive", min=0)
    space_c: int = _field(
        0, "UMA² Space C (uniform from the catalog) negatives per positive", min=0
    )
    space_c_pool: int = _field(
        0,
        "Space C's per-row draws come from this many catalog items drawn for the batch "
        "(each row's draws still uniform over the catalog): fewer distinct items through "
        "the item tower per step; 0: every draw straight from the catalog",
        min=0,
    )

    def check(self) -> None:
        if self.loss == "tfrs" and self.exposure_correction != "none":
            raise ConfigError(
                "loss=tfrs is TFRS's plain task; the exposure correction needs softmax or bce",
                "exposure_correction",
            )
        if self.intentions and not self.queue_size:
            raise ConfigError(
                "Multi-CLRec needs the main queue: set negatives.queue_size (CLRec uses 10x "
                "the batch size)",
                "intentions",
            )
        if self.intentions > self.queue_size:
            raise ConfigError(
                f"{self.intentions} intention queues cannot share a queue of {self.queue_size}",
                "intentions",
            )


@dataclasses.dataclass
class Uma2Config(Settings):
    """UMA²: sampling strategy presets and the negative samples debias network."""

    strategy: str = _field(
        "none",
        "preset that sets loss=bce and the space counts: SS-A, SS-AB, SS-ABC-random "
        "(space_c only), SS-ABC-fixed (A:B:C = 1:4:20), UMA2 (fixed + NSDN weights); "
        "none = use negatives.* as given",
        choices=("none", "SS-A", "SS-AB", "SS-ABC-random", "SS-ABC-fixed", "UMA2"),
    )
    propensity: bool = _field(False, "train the two propensity heads and weight A/B by IPW")
    lambda_a: float = _field(1.0, "weight of the Space A loss", min=0)
    lambda_b: float = _field(1.0, "weight of the Space B loss", min=0)
    lambda_c: float = _field(1.0, "weight of the Space C loss", min=0)
    lambda_er: float = _field(1.0, "weight of the Entire->Recall propensity loss", min=0)
    lambda_re: float = _field(1.0, "weight of the Recall->Exposure propensity loss", min=0)
    max_weight: float = _field(20.0, "IPW weights are clipped to [1, max_weight]", min=1)
    self_normalize: bool = _field(False, "divide IPW weights by their batch mean")
    weigh_positives: bool = _field(
        True,
        "also weight each click by 1/(p1·p2) of its own (user, item) in the BCE loss "
        "(inverse-propensity scoring of both classes); false = the paper's negatives-only "
        "weights, which push down items the legacy system rarely shows (docs/uma2.md)",
    )
    heads_train_towers: bool = _field(
        False,
        "let the propensity heads' losses train the towers' embeddings too (the paper's "
        "shared embeddings); false: the heads read them without gradient, so the towers "
        "do not learn to predict the legacy system's exposure (docs/uma2.md)",
    )
    head_units: list[int] = _field([64], "hidden layer sizes of each propensity head")
    head_item_dim: int = _field(
        8,
        "size of the heads' own item embedding (a row per catalog item), "
        "trained by the heads alone: what the legacy system learned about each item; 0: none",
        min=0,
    )
    head_negatives: int = _field(
        16,
        "catalog items the Entire->Recall head draws per step (shared by the batch) when "
        "the loss has no Space C of its own",
        min=1,
    )
    head_space_c: int = _field(
        0,
        "the Entire->Recall head learns from the first k of each row's Space C draws (a "
        "uniform subsample, weighted by its own rate): fewer head passes per step; 0: all",
        min=0,
    )


@dataclasses.dataclass
class TrainingConfig(Settings):
    """Optimisation."""

    batch_size: int = _field(512, "global batch size", min=1)
    epochs: int = _field(8, "passes over the training split", min=1)
    learning_rate: float = _field(0.05, "optimizer learning rate", min=0)
    optimizer: str = _field("adagrad", "optimizer", choices=("adagrad", "adam", "sgd"))
    seed: int = _field(42, "random seed (weights, shuffling, sampling)", min=0)
    shuffle_buffer: int = _field(20_000, "examples in the shuffle buffer", min=1)
    collective: str = _field(
        "auto",
        "multi-worker all-reduce: ring (gRPC, CPU), nccl (GPU) or auto (nccl when GPUs)",
        choices=("auto", "ring", "nccl"),
    )
    shard: str = _field(
        "auto",
        "multi-worker input sharding: file (each worker its own shards), data (every worker "
        "reads all, keeps its rows) or auto (file when shards >= workers, else data)",
        choices=("auto", "file", "data"),
    )
    lr_scaling: str = _field(
        "none",
        "learning rate x replicas (linear) or x sqrt(replicas) (sqrt); none keeps it, right "
        "when batch_size (global) stays as tuned",
        choices=("none", "linear", "sqrt"),
    )
    backup: str = _field(
        "auto",
        "BackupAndRestore for preemption: always, never, or auto (under TF_CONFIG only)",
        choices=("auto", "always", "never"),
    )
    backup_every_steps: int = _field(100, "steps between preemption backups", min=1)
    cluster_timeout_seconds: int = _field(
        600, "multi-worker: exit 1 when the peers are not all up within this time", min=1
    )
    summary_every_steps: int = _field(
        50,
        "TensorBoard step summaries (losses, IPW histograms) every N steps; 0: per epoch only "
        "(their in-graph conditionals cost ~2 ms a step on 2 CPU cores)",
        min=0,
    )
    steps_per_execution: int = _field(
        1, "training steps per call into the graph (Keras); more saves Python per step", min=1
    )
    mixed_precision: bool = _field(
        False, "float16 compute with float32 weights (GPUs; slower on CPUs)"
    )
    drop_remainder: bool = _field(
        False,
        "train on full batches only: static batch shapes, faster steps; each epoch's last "
        "partial batch (fewer than batch_size examples, a different set each epoch as the "
        "data are shuffled) is skipped",
    )
    jit_compile: bool = _field(
        False,
        "compile the training step with XLA (Keras's jit_compile); the step must hold only "
        "ops XLA compiles (see docs/performance.md)",
    )
    cache: bool = _field(False, "keep the training split's records in memory after the first epoch")
    intra_op_threads: int = _field(
        0,
        "threads of TensorFlow's intra-op pool (one op's parallel work); 0: TensorFlow's "
        "default, every core. On 2 CPU cores 1 made the sampled-negative recipes 10-25% "
        "faster and the 10x-batch cached queues slower (docs/performance.md). Sized once "
        "per process",
        min=0,
    )
    inter_op_threads: int = _field(
        0,
        "threads of TensorFlow's inter-op pool (independent ops at once); 0: TensorFlow's "
        "default, every core. Sized once per process",
        min=0,
    )
    parallel_reads: str = _field(
        "auto",
        "read the train shards in parallel threads (on) or in turn in the input pipeline's "
        "own thread (off); auto: off on machines of 2 cores or fewer, where the reading "
        "threads took the training step's cores (docs/performance.md)",
        choices=("auto", "on", "off"),
    )
    deterministic: bool = _field(
        False,
        "op determinism (tf.config.experimental.enable_op_determinism): the same dataset, "
        "config and seed give the same weights and metrics on CPU; some GPU ops get slower",
    )
    memory_budget_gb: float = _field(
        16.0,
        "memory one replica may give the tables (weights + optimizer slots); train warns "
        "above it (0: no check)",
        min=0,
    )


@dataclasses.dataclass
class EvaluationConfig(Settings):
    """Offline retrieval evaluation."""

    ks: list[int] = _field([10, 50, 100], "cut-offs K of the metrics")
    exclude_train_clicks: bool = _field(True, "never recommend an item the user clicked in train")
    scann: bool = _field(
        False, "also retrieve through a ScaNN index of the item embeddings (two_tower_scann)"
    )


@dataclasses.dataclass
class Config(Settings):
    """The whole configuration, one section per stage."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    negatives: NegativesConfig = dataclasses.field(default_factory=NegativesConfig)
    uma2: Uma2Config = dataclasses.field(default_factory=Uma2Config)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def _hint(key: str) -> Any:
    """The declared type of a dotted key, or None for a key Config does not have."""
    cls: Any = Config
    for part in key.split("."):
        hints = typing.get_type_hints(cls) if dataclasses.is_dataclass(cls) else {}
        if part not in hints:
            return None
        cls = hints[part]
    return cls


def _apply_override(values: dict[str, Any], override: str) -> None:
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {override!r}: expected section.key=value")
    try:
        # Typed by the key's declaration: a string key keeps "1.0" as text.
        hint = _hint(key)
        value = parse_value(raw, hint) if hint is not None else yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {key}: cannot parse value {raw!r}: {e}") from e
    *sections, leaf = key.split(".")
    node = values
    for section in sections:
        node = node.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {section} is not a section")
    node[leaf] = value


def load_config(path: str | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Loads, overrides and validates a configuration.

    Args:
      path: a YAML or JSON file, or None for the defaults.
      overrides: `section.key=value` strings; values are parsed as YAML scalars/lists.

    Returns:
      The validated Config.

    Raises:
      ConfigError: an unreadable file, an unknown key, a wrong type or an out-of-range value.
    """
    values: dict[str, Any] = {}
    if path:
        try:
            with open(path) as f:
                loaded = yaml.safe_load(f)  # JSON is a subset of YAML.
        except OSError as e:
            raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML or JSON: {e}") from e
        values = loaded or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of sections, got {values!r}")
    for override in overrides:
        _apply_override(values, override)
    return from_dict(Config, values)


def save_config(config: Config, directory: str) -> str:
    """Writes the resolved config into `directory` so the run can be reproduced from it."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, CONFIG_FILE)
    with open(path, "w") as f:
        yaml.safe_dump(config.to_dict(), f, sort_keys=False)
    return path


def config_from_dict(values: dict[str, Any]) -> Config:
    """Validates a plain dict (e.g. a manifest's copy) into a Config."""
    return from_dict(Config, values)


def describe_options() -> str:
    """Every config key with its default and help, for `--help` epilogs."""
    return describe(Config, "config keys (set with --set section.key=value)")
