"""The retrieval service's JSON schema (pydantic): what `POST /v1/retrieve` accepts.

Types are strict: a number where a string belongs is an error, not a silent `str()`.
Limits that depend on the loaded export or on the service's settings (k, batch size, the
feature names, each feature's kind: a number, `dim` numbers or tokens) are checked by the
service itself.
"""

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    WithJsonSchema,
)


def _utf8(value: str) -> str:
    """JSON may carry lone surrogates (`"\\ud800"`), which no UTF-8 string holds."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode text: lone surrogate at character {e.start}") from e
    return value


# Every string of a request: strict (no number turned into text) and encodable.
Text = Annotated[StrictStr, AfterValidator(_utf8)]


def _feature_value(value: Any) -> Any:
    """The shapes a user feature may take; which one a feature needs depends on its kind
    in the loaded export, checked by the service (`serving.query_features.value_problem`)."""
    if value is None or isinstance(value, str | int | float):
        return _utf8(value) if isinstance(value, str) else value
    if isinstance(value, list) and all(
        v is None or isinstance(v, str | int | float) for v in value
    ):
        for v in value:
            if isinstance(v, str):
                _utf8(v)
        return value
    raise ValueError(
        "expected a token, a list of tokens, a number, a list of numbers or null, got a "
        + ("nested list" if isinstance(value, list) else type(value).__name__)
    )


_NUMBER = {"type": "number"}
_TOKEN = {"type": "string"}
# A token or tokens (categorical), a number or null (numeric), numbers or null (vector).
FeatureValue = Annotated[
    Any,
    AfterValidator(_feature_value),
    WithJsonSchema(
        {
            "anyOf": [
                _TOKEN,
                {"type": "array", "items": _TOKEN},
                _NUMBER,
                {"type": "array", "items": _NUMBER},
                {"type": "null"},
            ]
        }
    ),
]


class Query(BaseModel):
    """One user to retrieve for."""

    model_config = ConfigDict(extra="forbid")

    user_id: Text = Field(description="an unknown id falls back to the OOV embedding")
    history: list[Text] = Field(
        default_factory=list, description="clicked item ids, most recent last; [] for none"
    )
    features: dict[Text, FeatureValue] = Field(
        default_factory=dict,
        description="every user feature of /v1/metadata, by its kind: categorical a token "
        "or a list of tokens ([] when unknown), numeric a number, vector a list of `dim` "
        "numbers (null when unknown)",
    )
    exclude: list[Text] = Field(
        default_factory=list, description="item ids never to return (e.g. already seen)"
    )


class RetrieveRequest(BaseModel):
    """A batch of queries and the number of items to return for each."""

    model_config = ConfigDict(extra="forbid")

    queries: list[Query] = Field(min_length=1)
    k: StrictInt = Field(default=10, description="items per query")
