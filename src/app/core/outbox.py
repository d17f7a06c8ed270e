"""The tables behind background jobs: the transactional outbox and the record of sent email.

They live apart from `jobs.py` and `email.py` so that Alembic (through `app.models`) can import
the schema without the ARQ and SMTP code.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import CheckConstraint, Column, DateTime, Index, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from app.core.database import TimestampMixin, UUIDModel, utcnow


class OutboxMessage(UUIDModel, table=True):
    """A job asked for by a committed transaction; `sent_at` is set once ARQ has it."""

    __tablename__: ClassVar[str] = "outbox"
    __table_args__: ClassVar[tuple[Any, ...]] = (
        # The relay's query: unsent rows, oldest first. Partial, so it stays as small as the
        # backlog however many sent rows the retention period keeps.
        Index("ix_outbox_unsent", "created_at", "id", postgresql_where=text("sent_at IS NULL")),
        # Pruning: sent rows older than the retention period.
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    )

    job_name: str = Field(max_length=200)
    payload: dict[str, Any] = Field(sa_column=Column(JSONB, nullable=False))
    created_at: datetime = Field(
        default_factory=utcnow,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "nullable": False},
    )
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    # The W3C trace context (`traceparent`) of the transaction that wrote the row, when tracing
    # is on: the worker continues that trace, so a job is a child of the request that asked.
    trace_context: dict[str, str] | None = Field(
        default=None, sa_column=Column(JSONB, nullable=True)
    )


class DeliveryStatus(StrEnum):
    pending = "pending"
    sent = "sent"
    failed = "failed"


class EmailDelivery(TimestampMixin, SQLModel, table=True):
    """One email per outbox row: the job's idempotency record (a re-run finds it and stops).

    Keyed by the outbox id rather than a foreign key to it: outbox rows are pruned on their own
    schedule, and the record must outlive any re-delivery of the job.
    """

    __tablename__: ClassVar[str] = "email_deliveries"
    __table_args__: ClassVar[tuple[Any, ...]] = (
        CheckConstraint("status IN ('pending', 'sent', 'failed')", name="status"),
        Index("ix_email_deliveries_updated_at", "updated_at"),
    )

    outbox_id: uuid.UUID = Field(primary_key=True)
    message_id: str = Field(max_length=300)
    recipient: str = Field(max_length=320)
    template: str = Field(max_length=100)
    status: str = Field(default=DeliveryStatus.pending, max_length=16)
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": text("0")})
    last_error: str | None = Field(default=None, max_length=1000)
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
