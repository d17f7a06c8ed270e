"""Who may do what: every organization route tried by every kind of caller.

One table, mirroring API.md's "Organizations" section. Each row is a route; each column a
caller: the organization's owner, admin and member, a user who is not a member, a platform
admin who is not a member, and API keys of the organization with `orders:read` only and with
`orders:write` only. A cell is the status the caller gets (403 is FORBIDDEN for people and
INSUFFICIENT_SCOPE for keys; 404 is NOT_FOUND).
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from httpx import AsyncClient

from app.features.users.models import Role
from tests.integration.catalog import Login
from tests.integration.organizations.conftest import MakeKey, MakeTeam, Team, bearer
from tests.problems import assert_problem

CALLERS = ("owner", "admin", "member", "stranger", "platform_admin", "key_read", "key_write")


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # `{org}` and `{target}` are filled in per cell
    expected: tuple[int, ...]  # one status per caller, in CALLERS order
    target: str | None = None  # what `{target}` is: a fresh member, invitation or key
    body: Callable[[], dict[str, Any]] | None = None


def _email() -> dict[str, Any]:
    return {"email": f"invitee-{secrets.token_hex(4)}@example.com", "role": "member"}


#                                                 owner admin member stranger p.admin key:r key:w
MATRIX: dict[str, Row] = {
    "create org": Row("POST", "/organizations", (201, 201, 201, 201, 201, 403, 403),
                      body=lambda: {"name": "New"}),
    "list my orgs": Row("GET", "/organizations", (200, 200, 200, 200, 200, 403, 403)),
    "read org": Row("GET", "/organizations/{org}", (200, 200, 200, 404, 404, 403, 403)),
    "update org": Row("PATCH", "/organizations/{org}", (200, 200, 403, 404, 404, 403, 403),
                      body=lambda: {"name": "Renamed"}),
    "delete org": Row("DELETE", "/organizations/{org}", (204, 403, 403, 404, 404, 403, 403)),
    "list members": Row("GET", "/organizations/{org}/members",
                        (200, 200, 200, 404, 404, 403, 403)),
    "change role": Row("PATCH", "/organizations/{org}/members/{target}",
                       (200, 200, 403, 404, 404, 403, 403), target="member",
                       body=lambda: {"role": "admin"}),
    "remove member": Row("DELETE", "/organizations/{org}/members/{target}",
                         (204, 204, 403, 404, 404, 403, 403), target="member"),
    "invite": Row("POST", "/organizations/{org}/invitations",
                  (201, 201, 403, 404, 404, 403, 403), body=_email),
    "list invitations": Row("GET", "/organizations/{org}/invitations",
                            (200, 200, 403, 404, 404, 403, 403)),
    "revoke invitation": Row("DELETE", "/organizations/{org}/invitations/{target}",
                             (204, 204, 403, 404, 404, 403, 403), target="invitation"),
    "accept invitation": Row("POST", "/invitations/accept", (400, 400, 400, 400, 400, 403, 403),
                             body=lambda: {"token": "not-a-token"}),
    "create key": Row("POST", "/organizations/{org}/api-keys",
                      (201, 201, 403, 404, 404, 403, 403),
                      body=lambda: {"name": "k", "scopes": ["orders:read"]}),
    "list keys": Row("GET", "/organizations/{org}/api-keys",
                     (200, 200, 403, 404, 404, 403, 403)),
    "list org orders": Row("GET", "/organizations/{org}/orders",
                           (200, 200, 200, 404, 404, 200, 403)),
    "delete key": Row("DELETE", "/organizations/{org}/api-keys/{target}",
                      (204, 204, 403, 404, 404, 403, 403), target="key"),
}  # fmt: skip


async def _cheap_user(db_conn: asyncpg.Connection) -> uuid.UUID:
    """A user row that never logs in (no password hashing: the matrix makes many)."""
    user_id = uuid.uuid4()
    await db_conn.execute(
        "INSERT INTO users (id, email, password_hash, full_name, role, is_active, is_verified) "
        "VALUES ($1, $2, 'x', 'Target', 'user', true, true)",
        user_id,
        f"target-{user_id.hex[:12]}@example.com",
    )
    return user_id


async def _target(kind: str | None, team: Team, db_conn: asyncpg.Connection) -> str:
    org_id = uuid.UUID(team.id)
    if kind == "member":
        user_id = await _cheap_user(db_conn)
        await db_conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, role) "
            "VALUES ($1, $2, 'member')",
            org_id,
            user_id,
        )
        return str(user_id)
    if kind == "invitation":
        return str(
            await db_conn.fetchval(
                "INSERT INTO organization_invitations (id, organization_id, email, role, status, "
                "token_hash, invited_by, expires_at) VALUES ($1, $2, $3, 'member', 'pending', $4, "
                "$5, now() + interval '7 days') RETURNING id",
                uuid.uuid4(),
                org_id,
                f"pending-{secrets.token_hex(4)}@example.com",
                secrets.token_hex(32),
                team.owner.id,
            )
        )
    if kind == "key":
        return str(
            await db_conn.fetchval(
                "INSERT INTO api_keys (id, organization_id, name, prefix, key_hash, scopes, "
                "created_by) VALUES ($1, $2, 'target', 'sk_target', $3, '{orders:read}', $4) "
                "RETURNING id",
                uuid.uuid4(),
                org_id,
                secrets.token_hex(32),
                team.owner.id,
            )
        )
    return ""


@pytest.mark.parametrize("route", list(MATRIX))
async def test_matrix(
    route: str,
    client: AsyncClient,
    make_team: MakeTeam,
    make_key: MakeKey,
    login: Login,
    db_conn: asyncpg.Connection,
) -> None:
    row = MATRIX[route]
    team = await make_team()
    _, stranger = await login()
    _, platform_admin = await login(role=Role.admin)
    headers = {
        "owner": team.owner_headers,
        "admin": team.admin_headers,
        "member": team.member_headers,
        "stranger": stranger,
        "platform_admin": platform_admin,
        "key_read": bearer(await make_key(team, ["orders:read"])),
        "key_write": bearer(await make_key(team, ["orders:write"])),
    }
    expected = dict(zip(CALLERS, row.expected, strict=True))
    # The owner goes last: its success may delete what the others are tried on.
    for caller in sorted(CALLERS, key=lambda name: name == "owner"):
        target = await _target(row.target, team, db_conn)
        path = "/api/v1" + row.path.format(org=team.id, target=target)
        body = row.body() if row.body else None
        response = await client.request(row.method, path, json=body, headers=headers[caller])
        status = expected[caller]
        where = f"{route} as {caller}"
        if status == 403:
            code = "INSUFFICIENT_SCOPE" if caller.startswith("key") else "FORBIDDEN"
            assert_problem(response, 403, code)
        elif status == 404:
            assert_problem(response, 404, "NOT_FOUND")
        elif status == 400:
            assert_problem(response, 400, "INVALID_TOKEN")
        else:
            assert response.status_code == status, f"{where}: {response.text}"
