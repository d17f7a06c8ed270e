"""events: the outbox of real-time order events, relayed to Redis Streams after commit

Revision ID: 0008
Revises: 0010
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_outbox",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("audiences", postgresql.ARRAY(sa.String(length=100)), nullable=False),
        sa.Column("data", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column("relayed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("stream_id", sa.String(length=40), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_outbox")),
    )
    op.create_index(
        "ix_event_outbox_unrelayed",
        "event_outbox",
        ["created_at", "id"],
        postgresql_where=sa.text("relayed_at IS NULL"),
    )
    op.create_index(
        "ix_event_outbox_relayed_at",
        "event_outbox",
        ["relayed_at"],
        postgresql_where=sa.text("relayed_at IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_event_outbox_relayed_at", table_name="event_outbox")
    op.drop_index("ix_event_outbox_unrelayed", table_name="event_outbox")
    op.drop_table("event_outbox")
