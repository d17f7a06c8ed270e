"""The events outbox: an event is written here in the same transaction as the change it reports.

A row is relayed to the Redis Streams (`store.py`) once its transaction has committed; until
then, or if the process dies or Redis is away at that moment, `relayed_at` stays empty and the
relay loop (`publisher.py`) sends it later. So no committed change goes unreported and no event
reports a change that rolled back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Column, DateTime, Index, String, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlmodel import Field

from app.core.database import CreatedAtMixin, UUIDModel


class EventOutbox(UUIDModel, CreatedAtMixin, table=True):
    __tablename__: ClassVar[str] = "event_outbox"
    __table_args__: ClassVar[tuple[Any, ...]] = (
        # The relay's query: rows not yet relayed, oldest first; partial, so it stays as small
        # as the backlog.
        Index(
            "ix_event_outbox_unrelayed",
            "created_at",
            "id",
            postgresql_where=text("relayed_at IS NULL"),
        ),
        # Pruning of relayed rows.
        Index(
            "ix_event_outbox_relayed_at",
            "relayed_at",
            postgresql_where=text("relayed_at IS NOT NULL"),
        ),
    )

    name: str = Field(max_length=100)
    # Who may see the event besides the admins: "user:<id>", "org:<id>" (audience.py).
    audiences: list[str] = Field(sa_column=Column(ARRAY(String(100)), nullable=False))
    data: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    relayed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # The id the event got in the streams (it is the event's id on the wire).
    stream_id: str | None = Field(default=None, max_length=40)
