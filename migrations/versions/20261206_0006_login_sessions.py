"""auth: login sessions, the row that refresh and revocation both lock

Every distinct `refresh_tokens.session_id` becomes a `login_sessions` row (its user, its first
token's time; revoked when every token of it was revoked), and `refresh_tokens.session_id`
becomes a foreign key to it. Downgrading drops the table: the tokens keep their own
`revoked_at`, which the older code reads.

Revision ID: 0006
Revises: 0008
Create Date: 2026-12-06
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "login_sessions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_login_sessions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_login_sessions")),
    )
    op.create_index(op.f("ix_login_sessions_user_id"), "login_sessions", ["user_id"], unique=False)
    # One session per family of refresh tokens; a session of which every token was revoked
    # (logout, theft, a password change...) is revoked, at its last revocation.
    op.execute(
        """
        INSERT INTO login_sessions (id, user_id, created_at, revoked_at)
        SELECT session_id,
               (array_agg(user_id ORDER BY created_at))[1],
               min(created_at),
               CASE WHEN bool_and(revoked_at IS NOT NULL) THEN max(revoked_at) END
        FROM refresh_tokens
        GROUP BY session_id
        """
    )
    op.create_foreign_key(
        op.f("fk_refresh_tokens_session_id_login_sessions"),
        "refresh_tokens",
        "login_sessions",
        ["session_id"],
        ["id"],
        ondelete="CASCADE",
    )


def downgrade() -> None:
    # The tokens of a revoked session are revoked too (the code revokes both), so the older
    # code, which reads only `refresh_tokens.revoked_at`, refuses them as well.
    op.execute(
        """
        UPDATE refresh_tokens SET revoked_at = s.revoked_at
        FROM login_sessions s
        WHERE refresh_tokens.session_id = s.id
          AND s.revoked_at IS NOT NULL AND refresh_tokens.revoked_at IS NULL
        """
    )
    op.drop_constraint(
        op.f("fk_refresh_tokens_session_id_login_sessions"), "refresh_tokens", type_="foreignkey"
    )
    op.drop_index(op.f("ix_login_sessions_user_id"), table_name="login_sessions")
    op.drop_table("login_sessions")
