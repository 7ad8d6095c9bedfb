"""Raw user features -> the batch the query tower's signature takes.

Each signature input has a kind (the export manifest's `query_tower.inputs`):

  id           "user_id": one string per user, `[batch_size]`
  categorical  "history", "user.<name>": tokens, `[batch_size, width]` bytes padded with b""
  numeric      "user.<name>": one float, `[batch_size, 1]` float32
  vector       "user.<name>": `dim` floats, `[batch_size, dim]` float32

A missing numeric or vector value is NaN in every position: the tower replaces it by its
learned "missing" value. Manifests written before feature kinds have no "kind": every
input is then a string input, as it always was.
"""

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from common.contracts import CATEGORICAL, IDENTIFIER, NUMERIC, USER_ID, VECTOR

PAD = b""
STRING, FLOAT32 = "string", "float32"
_DTYPES = {IDENTIFIER: STRING, CATEGORICAL: STRING, NUMERIC: FLOAT32, VECTOR: FLOAT32}
# The largest finite float32: a bigger JSON number would reach the tower as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """One signature input: its name, dtype ("string" or "float32"), kind and, for the
    float inputs, its width `dim`."""

    name: str
    dtype: str
    kind: str
    dim: int | None = None

    @property
    def dense(self) -> bool:
        return self.dtype == FLOAT32

    def describe(self) -> dict[str, Any]:
        """{"kind"} plus "dim" for a dense input (`/v1/metadata`)."""
        return {"kind": self.kind} | ({"dim": self.dim} if self.dense else {})


def _spec(name: str, entry: Mapping[str, Any]) -> InputSpec:
    where = f"export manifest query_tower.inputs.{name}"
    kind = entry.get("kind")
    if kind is None:  # a manifest from before feature kinds: strings only
        if entry.get("dtype", STRING) != STRING:
            raise ValueError(f"{where}: dtype {entry['dtype']!r} without a kind")
        return InputSpec(name, STRING, IDENTIFIER if name == USER_ID else CATEGORICAL)
    if kind not in _DTYPES:
        raise ValueError(f"{where}: unknown kind {kind!r}, expected one of {sorted(_DTYPES)}")
    dtype = entry.get("dtype", _DTYPES[kind])
    if dtype != _DTYPES[kind]:
        raise ValueError(f"{where}: a {kind} input has dtype {_DTYPES[kind]!r}, got {dtype!r}")
    if dtype == STRING:
        return InputSpec(name, dtype, kind)
    dim = entry.get("dim")
    valid = isinstance(dim, int) and not isinstance(dim, bool) and dim >= 1
    if not valid or (kind == NUMERIC and dim != 1):
        raise ValueError(f"{where}: a {kind} input needs a dim >= 1 (1 if numeric), got {dim!r}")
    shape = entry.get("shape")
    if shape is not None and list(shape)[-1:] != [dim]:
        raise ValueError(f"{where}: shape {shape} does not end in its dim {dim}")
    return InputSpec(name, dtype, kind, dim)


def input_specs(
    inputs: Mapping[str, Mapping[str, Any] | InputSpec] | Sequence[str],
) -> dict[str, InputSpec]:
    """Specs of a signature's inputs, in order.

    Args:
      inputs: the export manifest's `query_tower.inputs` ({name: {"dtype", "shape",
        "kind", "dim"}}), specs already parsed, or bare names (all string inputs).

    Raises:
      ValueError: an entry with an unknown kind, a wrong dtype or a missing dim.
    """
    if not isinstance(inputs, Mapping):
        return {name: _spec(name, {}) for name in inputs}
    return {
        name: entry if isinstance(entry, InputSpec) else _spec(name, entry)
        for name, entry in inputs.items()
    }


def _show(value: Any) -> str:
    """A short JSON rendering of a value for an error message."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):  # not JSON, or an int past Python's digit limit
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _number_problem(value: Any) -> str | None:
    if isinstance(value, np.generic):  # numpy scalars from library callers
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"expected a number, got {_show(value)}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"expected a finite number, got {_show(value)}"
    if abs(value) > FLOAT32_MAX:
        return f"expected a number within float32 range (±3.4e38), got {_show(value)}"
    return None


def value_problem(field: str, spec: InputSpec, value: Any) -> str | None:
    """Why `value` cannot feed the input `spec` (a request's rules), as
    "<field>[...]: expected ...", or None if it can.

    A token input takes a string or a list of strings; a numeric one a number; a vector
    one `dim` numbers; a float input also None (missing). Numbers must be finite and
    within float32 range; a bool is not a number.
    """
    if not spec.dense:
        tokens = value if isinstance(value, list) else [value]
        if all(isinstance(t, str) for t in tokens):
            return None
        return f"{field}: expected a token or a list of tokens, got {_show(value)}"
    if value is None:
        return None
    if spec.kind == NUMERIC:
        problem = _number_problem(value)
        return f"{field}: {problem}" if problem else None
    if not isinstance(value, list | tuple | np.ndarray):
        return f"{field}: expected a list of {spec.dim} numbers, got {_show(value)}"
    if len(value) != spec.dim:
        return f"{field}: expected {spec.dim} numbers, got {len(value)}"
    for i, entry in enumerate(value):
        problem = _number_problem(entry)
        if problem:
            return f"{field}[{i}]: {problem}"
    return None


def _tokens(value: Any) -> list[bytes]:
    if value is None:
        return []
    if isinstance(value, str | bytes):
        value = [value]
    return [v if isinstance(v, bytes) else str(v).encode() for v in value]


def _dense(users: Sequence[Mapping[str, Any]], spec: InputSpec) -> np.ndarray:
    batch = np.full((len(users), spec.dim), np.nan, dtype=np.float32)
    for i, user in enumerate(users):
        value = user.get(spec.name)
        problem = value_problem(f"users[{i}].{spec.name}", spec, value)
        if problem:
            raise ValueError(problem)
        if value is not None:
            batch[i] = np.asarray(value, dtype=np.float32).reshape(spec.dim)
    return batch


def feature_batch(
    users: Sequence[Mapping[str, Any]],
    inputs: Mapping[str, Mapping[str, Any] | InputSpec] | Sequence[str],
) -> dict[str, np.ndarray]:
    """Signature inputs for `users`.

    Args:
      users: one dict per user keyed by signature input name: "user_id" (a string),
        "history" and categorical "user.<name>" (a string or a list of strings), numeric
        "user.<name>" (a number) and vector "user.<name>" (`dim` numbers). An absent
        string input is empty, which the tower embeds as nothing (history) or padding; an
        absent (or None) float input is missing: NaN.
      inputs: the signature's inputs, "user_id" first, with their kinds (`input_specs`'
        argument; bare names are all string inputs).

    Returns:
      {"user_id": `[batch_size]` bytes, string inputs: `[batch_size, width]` bytes padded
      with b"" (width >= 1), float inputs: `[batch_size, dim]` float32}.

    Raises:
      ValueError: a float input's value is not a finite number or `dim` of them; the
        message names the user and the input.
    """
    batch = {}
    for name, spec in input_specs(inputs).items():
        if spec.dense:
            batch[name] = _dense(users, spec)
            continue
        if spec.kind == IDENTIFIER:
            batch[name] = np.array(
                [_tokens(u.get(name))[0] if u.get(name) is not None else PAD for u in users],
                dtype=object,
            )
            continue
        rows = [_tokens(u.get(name)) for u in users]
        width = max(1, max((len(r) for r in rows), default=0))
        padded = np.full((len(rows), width), PAD, dtype=object)
        for i, row in enumerate(rows):
            padded[i, : len(row)] = row
        batch[name] = padded
    return batch
