"""The record of sent email, one row per outbox row: the `send_email` job's idempotency record.

Apart from `email.py` so that Alembic (through `app.models`) can import the schema without the
SMTP code.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from sqlalchemy import CheckConstraint, DateTime, Index, text
from sqlmodel import Field, SQLModel

from app.core.database import TimestampMixin


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
    # Set while a run of the job talks to SMTP (no row lock is held then): until this time
    # another run of the same job waits instead of sending too.
    claimed_until: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
