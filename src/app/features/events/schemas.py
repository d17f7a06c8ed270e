"""The messages of the event streams (API.md, "Real-time events"), for parsing and the docs."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.features.orders.schemas import OrderOut

EventName = Literal["order.created", "order.status_changed"]


class AuthMessage(BaseModel):
    """The client's first WebSocket message, within 5 s of the handshake."""

    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    type: Literal["auth"]
    access_token: Annotated[str, Field(min_length=1, max_length=4096)]
    last_event_id: Annotated[
        str | None,
        Field(
            max_length=64,
            description="Resume after this event id: the events after it are replayed first, "
            "or a `reset` is sent when they are no longer kept.",
        ),
    ] = None


class ReadyMessage(BaseModel):
    """Sent once the auth message is accepted; the stream is subscribed from here on."""

    type: Literal["ready"]
    user_id: uuid.UUID


class EventMessage(BaseModel):
    """One event. Over SSE the same object is the `data:` of an `event:` named after it."""

    type: Literal["event"]
    id: str = Field(description="Opaque and increasing: resume after it with last_event_id.")
    event: EventName
    data: OrderOut
    at: datetime


class ResetMessage(BaseModel):
    """The events after the client's id are no longer kept (or the id is unknown): refetch
    what you show, then carry on from `id`."""

    type: Literal["reset"]
    id: str = Field(description="The newest event id: use it as last_event_id from now on.")
