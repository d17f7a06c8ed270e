"""access_epoch: a counter that every change of who may keep an event stream bumps at commit

Revision ID: 0012
Revises: 0009
Create Date: 2026-12-07

The event hub re-reads all its open streams (sessions, accounts, memberships) only when this
counter has moved (revoked sessions it learns one by one from Redis; and each stream is still
re-read, a slice at a time, within `events_full_recheck_seconds`): reading one row every 2 s
costs nothing, where re-reading 5,000 streams every 2 s cost a worker 90 ms of its event loop.
Triggers bump it, so no code path can change an account or a membership without the hub
noticing, raw SQL included.

The triggers are deferred constraint triggers: they run at commit, so the counter's row is
locked only for the end of the transaction that changed something (no lock-order deadlock with
the rows it changed), and the new value becomes visible together with the change. The bump is
an upsert, so the counter survives a TRUNCATE of its table.

Expand-only: a new table and triggers; code of the previous release ignores them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, table, event, condition): every change that can end a stream or change what it
# receives (users.liveness and events.audience read these columns).
_TRIGGERS = [
    (
        "users_access_changed",
        "users",
        "UPDATE OF is_active, token_version, role",
        "OLD.is_active IS DISTINCT FROM NEW.is_active "
        "OR OLD.token_version IS DISTINCT FROM NEW.token_version "
        "OR OLD.role IS DISTINCT FROM NEW.role",
    ),
    ("users_deleted", "users", "DELETE", None),
    ("organization_members_changed", "organization_members", "INSERT OR DELETE", None),
    (
        "organization_members_moved",
        "organization_members",
        "UPDATE OF organization_id, user_id",
        "OLD.organization_id IS DISTINCT FROM NEW.organization_id "
        "OR OLD.user_id IS DISTINCT FROM NEW.user_id",
    ),
    (
        "organizations_deleted_at_changed",
        "organizations",
        "UPDATE OF deleted_at",
        "OLD.deleted_at IS DISTINCT FROM NEW.deleted_at",
    ),
    ("organizations_deleted", "organizations", "DELETE", None),
]


def upgrade() -> None:
    op.create_table(
        "access_epoch",
        sa.Column("id", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("value", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.CheckConstraint("id", name=op.f("ck_access_epoch_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_access_epoch")),
    )
    op.execute(
        """
        CREATE FUNCTION bump_access_epoch() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO access_epoch (id, value) VALUES (true, 1)
            ON CONFLICT (id) DO UPDATE SET value = access_epoch.value + 1;
            RETURN NULL;
        END
        $$
        """
    )
    for name, table, event, condition in _TRIGGERS:
        when = f"WHEN ({condition}) " if condition else ""
        op.execute(
            f"CREATE CONSTRAINT TRIGGER {name} AFTER {event} ON {table} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW {when}"
            "EXECUTE FUNCTION bump_access_epoch()"
        )


def downgrade() -> None:
    for name, table, _, _ in reversed(_TRIGGERS):
        op.execute(f"DROP TRIGGER {name} ON {table}")
    op.execute("DROP FUNCTION bump_access_epoch()")
    op.drop_table("access_epoch")
