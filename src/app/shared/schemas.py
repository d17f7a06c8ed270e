"""The base of every request body."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestModel(BaseModel):
    """Request bodies: unknown fields are rejected (422, API.md), strings stripped."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
