"""outbox: the W3C trace context of the transaction that wrote each row (tracing on)

Revision ID: 0011
Revises: 0007
Create Date: 2026-12-06

Expand-only: a nullable column, no rewrite of the table; code of the previous release ignores it.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "outbox",
        sa.Column("trace_context", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("outbox", "trace_context")
