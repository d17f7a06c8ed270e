"""Who sees which event: the one place that decides it.

An event goes to the streams of its audiences (`order_audiences`) and always to the admins'
stream, which therefore holds every event. A connection listens to the audiences of its viewer
(`viewer_audiences`), re-read every few seconds, so a member who leaves an organization stops
receiving its events within seconds. Nothing else ever reaches a connection: the hub delivers an
event only to connections that listen to one of its audiences.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from app.core.reads import ReadConnection
from app.features.organizations.queries import OrgQueries

ADMINS = "admins"


class OrderLike(Protocol):
    @property
    def user_id(self) -> uuid.UUID: ...


def user_audience(user_id: uuid.UUID) -> str:
    return f"user:{user_id}"


def organization_audience(organization_id: uuid.UUID) -> str:
    return f"org:{organization_id}"


def order_audiences(order: OrderLike) -> list[str]:
    """Who may see an order's events besides the admins: its owner, and the members of its
    organization when it has one."""
    audiences = [user_audience(order.user_id)]
    organization_id: Any = getattr(order, "organization_id", None)
    if organization_id is not None:
        audiences.append(organization_audience(organization_id))
    return audiences


async def organizations_of(
    connection: ReadConnection, user_ids: Iterable[uuid.UUID]
) -> Mapping[uuid.UUID, Iterable[uuid.UUID]]:
    """The live organizations each user is a member of now (from the organizations' read side)."""
    return await OrgQueries(connection).organizations_of(user_ids)


async def viewer_audiences(
    connection: ReadConnection, viewers: Mapping[uuid.UUID, bool]
) -> dict[uuid.UUID, frozenset[str]]:
    """What each viewer (user id -> is admin) listens to: an admin every event, anyone else
    their own orders and the orders of their organizations."""
    members = [user_id for user_id, admin in viewers.items() if not admin]
    organizations = await organizations_of(connection, members) if members else {}
    audiences: dict[uuid.UUID, frozenset[str]] = {}
    for user_id, admin in viewers.items():
        if admin:
            audiences[user_id] = frozenset({ADMINS})
        else:
            audiences[user_id] = frozenset(
                [user_audience(user_id)]
                + [organization_audience(org) for org in organizations.get(user_id, ())]
            )
    return audiences
