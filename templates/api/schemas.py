"""Request and response bodies (pydantic models); their JSON Schemas are the API docs' components."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ItemIn(BaseModel):
    """What a client sends to create or replace an item."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # OpenAPI 3.0 schemas take one ``example`` (JSON Schema's ``examples`` list is 3.1's).
    name: str = Field(min_length=1, max_length=100, json_schema_extra={"example": "Teapot"})
    description: str = Field("", max_length=1000, json_schema_extra={"example": "Short and stout"})
    price_cents: int = Field(0, ge=0, json_schema_extra={"example": 1250})


class ItemOut(ItemIn):
    """An item as stored, with its id."""

    model_config = ConfigDict(from_attributes=True)

    id: int


def openapi_schemas() -> dict:
    """Return the OpenAPI 3 ``components.schemas`` of the models above."""
    return {model.__name__: model.model_json_schema(ref_template="#/components/schemas/{model}")
            for model in (ItemIn, ItemOut)}
