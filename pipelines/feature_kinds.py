"""The kind of every user and item feature: declared by the `data` settings or inferred.

A feature is named by its qualified name, "user.<name>" (requests' `user_features` and
the user table's `features`) or "item.<name>" (the catalog's `features`). Its kind is
categorical (tokens), numeric (one float), vector (`dim` floats) or text (a string the
pipeline embeds; items only), see common/contracts.py.

Declared kinds (`data.numeric_features`, `vector_features` as "name:dim",
`text_features`, `categorical_features`; a `data.log_features` name is numeric) win.
An undeclared feature's kind is inferred from the values seen (`KindCounter`): only
JSON numbers (not booleans) make it numeric, only non-empty lists of numbers a vector
(its dim the most common length, ties to the shorter; numbers and number lists mixed:
the more common of the two, ties to numeric), and any string, list of strings or other
value makes it categorical, as every feature was before kinds existed (a number then
becomes its decimal string). A null, an empty list, and a number (or a list holding one)
that is not a finite float32 count for nothing, so a feature seen only with such values
stays categorical. Text is never inferred. A value that does not fit the kind
is dead-lettered (`records`). The catalog is inferred over all its rows; requests and the
user table from the first `SAMPLE_ROWS` rows of each (`preprocess`), so a feature absent
from that sample is categorical unless declared.

This module only decides kinds; it reads no file and imports nothing of the pipeline.
"""

import collections
import dataclasses
import math
from collections.abc import Mapping
from typing import Any

from common.contracts import (
    CATEGORICAL,
    ITEM_FEATURE_PREFIX,
    NUMERIC,
    TEXT,
    USER_FEATURE_PREFIX,
    VECTOR,
)

SAMPLE_ROWS = 1_000  # rows of the request logs and of the user table read to infer kinds
DENSE = (NUMERIC, VECTOR)
FLOAT32_MAX = 3.4028234663852886e38


@dataclasses.dataclass(frozen=True)
class FeatureKind:
    """How one feature is read.

    Attributes:
      kind: categorical, numeric, vector or text.
      dim: floats per value (1 for numeric; the vector's length).
      log: numeric only: the value is log1p-transformed before its statistics (and by
        the trainer), so a value <= -1 is a bad value.
    """

    kind: str = CATEGORICAL
    dim: int = 1
    log: bool = False


CATEGORICAL_KIND = FeatureKind()


@dataclasses.dataclass(frozen=True)
class FeatureKinds:
    """The kinds of the named features; any other feature is categorical.

    Attributes:
      kinds: qualified name ("user.<name>", "item.<name>") -> its kind.
    """

    kinds: Mapping[str, FeatureKind] = dataclasses.field(default_factory=dict)

    def of(self, prefix: str, name: str) -> FeatureKind:
        """The kind of feature `name` of `prefix` ("user." or "item.")."""
        return self.kinds.get(prefix + name, CATEGORICAL_KIND)

    def named(self, prefix: str, *kinds: str) -> dict[str, FeatureKind]:
        """{name (without prefix): kind} of the features of `prefix` of the given kinds."""
        return {
            qualified[len(prefix) :]: kind
            for qualified, kind in sorted(self.kinds.items())
            if qualified.startswith(prefix) and kind.kind in kinds
        }

    def has_non_categorical(self, prefix: str) -> bool:
        """Whether any feature of `prefix` is not categorical."""
        return bool(self.named(prefix, NUMERIC, VECTOR, TEXT))

    def merged(self, other: "FeatureKinds") -> "FeatureKinds":
        """These kinds, with `other`'s added (`other` wins on a name in both)."""
        return FeatureKinds({**self.kinds, **other.kinds})


def declared_kinds(data: Any) -> FeatureKinds:
    """The kinds the `data` settings declare (a `common.config.DataConfig`).

    Raises:
      ValueError: a `data.log_features` name declared as another kind (the config's own
        check reports it first).
    """
    kinds: dict[str, FeatureKind] = {}
    for name in data.categorical_features:
        kinds[name] = CATEGORICAL_KIND
    for name in data.text_features:
        kinds[name] = FeatureKind(TEXT)
    for entry in data.vector_features:
        name, _, dim = entry.rpartition(":")
        kinds[name] = FeatureKind(VECTOR, int(dim))
    logged = set(data.log_features)
    for name in dict.fromkeys([*data.numeric_features, *data.log_features]):
        if name in kinds:
            raise ValueError(f"data.log_features: {name} is declared {kinds[name].kind}")
        kinds[name] = FeatureKind(NUMERIC, 1, name in logged)
    return FeatureKinds(kinds)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_float32(value: Any) -> bool:
    """A number that is a finite float32 (the caller checked `_is_number`)."""
    try:
        return math.isfinite(value) and abs(value) <= FLOAT32_MAX
    except OverflowError:  # an int past float's range
        return False


class KindCounter:
    """Counts, per qualified feature name, which kind each value seen would have."""

    def __init__(self) -> None:
        self._numbers: collections.Counter[str] = collections.Counter()
        self._lengths: dict[str, collections.Counter[int]] = collections.defaultdict(
            collections.Counter
        )
        self._other: collections.Counter[str] = collections.Counter()

    def observe(self, prefix: str, features: Any) -> None:
        """Counts the values of one features object ({name: value}); anything that is
        not an object, a null or an empty list counts for nothing."""
        if not isinstance(features, dict):
            return
        for name, value in features.items():
            if not isinstance(name, str) or value is None or value == []:
                continue
            qualified = prefix + name
            if _is_number(value):
                self._numbers[qualified] += _is_float32(value)
            elif isinstance(value, list) and all(_is_number(v) for v in value):
                if all(_is_float32(v) for v in value):
                    self._lengths[qualified][len(value)] += 1
            else:
                self._other[qualified] += 1

    def observe_request(self, record: Any) -> None:
        """A request row: its `user_features`."""
        if isinstance(record, dict):
            self.observe(USER_FEATURE_PREFIX, record.get("user_features"))

    def observe_user(self, record: Any) -> None:
        """A user-table row: its `features`."""
        if isinstance(record, dict):
            self.observe(USER_FEATURE_PREFIX, record.get("features"))

    def observe_item(self, record: Any) -> None:
        """A catalog row: its `features`."""
        if isinstance(record, dict):
            self.observe(ITEM_FEATURE_PREFIX, record.get("features"))

    def inferred(self) -> FeatureKinds:
        """The numeric and vector features inferred (everything else is categorical)."""
        kinds = {}
        for name in sorted(set(self._numbers) | set(self._lengths)):
            lengths = self._lengths.get(name, collections.Counter())
            vectors = sum(lengths.values())
            if self._other[name] or not self._numbers[name] + vectors:
                continue
            if self._numbers[name] >= vectors:
                kinds[name] = FeatureKind(NUMERIC)
            else:
                dim = min(lengths, key=lambda length: (-lengths[length], length))
                kinds[name] = FeatureKind(VECTOR, dim)
        return FeatureKinds(kinds)


def resolve(declared: FeatureKinds, counter: KindCounter, prefix: str) -> FeatureKinds:
    """The kinds of `prefix`'s features: the declared ones, and for the rest what
    `counter` inferred (a declared log feature keeps its log flag)."""
    inferred = {
        name: kind
        for name, kind in counter.inferred().kinds.items()
        if name.startswith(prefix) and name not in declared.kinds
    }
    own = {name: kind for name, kind in declared.kinds.items() if name.startswith(prefix)}
    return FeatureKinds({**own, **inferred})
