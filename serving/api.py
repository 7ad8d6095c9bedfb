"""The retrieval service's JSON schema (pydantic): what `POST /v1/retrieve` accepts.

Types are strict: a number where a string belongs is an error, not a silent `str()`.
Limits that depend on the loaded export or on the service's settings (k, batch size, the
feature names) are checked by the service itself.
"""

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr


def _utf8(value: str) -> str:
    """JSON may carry lone surrogates (`"\\ud800"`), which no UTF-8 string holds."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode text: lone surrogate at character {e.start}") from e
    return value


# Every string of a request: strict (no number turned into text) and encodable.
Text = Annotated[StrictStr, AfterValidator(_utf8)]


class Query(BaseModel):
    """One user to retrieve for."""

    model_config = ConfigDict(extra="forbid")

    user_id: Text = Field(description="an unknown id falls back to the OOV embedding")
    history: list[Text] = Field(
        default_factory=list, description="clicked item ids, most recent last; [] for none"
    )
    features: dict[Text, Text | list[Text]] = Field(
        default_factory=dict,
        description="every user feature of /v1/metadata: a token or a list of tokens",
    )
    exclude: list[Text] = Field(
        default_factory=list, description="item ids never to return (e.g. already seen)"
    )


class RetrieveRequest(BaseModel):
    """A batch of queries and the number of items to return for each."""

    model_config = ConfigDict(extra="forbid")

    queries: list[Query] = Field(min_length=1)
    k: StrictInt = Field(default=10, description="items per query")
