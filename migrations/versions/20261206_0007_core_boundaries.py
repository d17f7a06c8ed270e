"""idempotency keys in core; email deliveries claimed without a row lock

The idempotency record belongs to `app.core.idempotency` and serves any route; the order a
stored `POST /orders` outcome created is still in its `location`. An email delivery is claimed
for one send (`claimed_until`) instead of row-locked for the length of the SMTP exchange.

Revision ID: 0007
Revises: 0005
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(
        "fk_idempotency_keys_order_id_orders", "idempotency_keys", type_="foreignkey"
    )
    op.drop_column("idempotency_keys", "order_id")
    op.add_column(
        "email_deliveries",
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_column("email_deliveries", "claimed_until")
    op.add_column("idempotency_keys", sa.Column("order_id", sa.Uuid(), nullable=True))
    op.create_foreign_key(
        "fk_idempotency_keys_order_id_orders",
        "idempotency_keys",
        "orders",
        ["order_id"],
        ["id"],
        ondelete="SET NULL",
    )
