"""Dependencies of orders: the service (with the catalog's service it prices lines with), the
read side, and the caller who may place an order."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Annotated, cast

from fastapi import Depends, Request

from app.config import Settings
from app.core.database import SessionDep
from app.core.errors import UnauthorizedError
from app.core.reads import ReadConnectionDep
from app.features.orders.queries import OrderQueries
from app.features.orders.service import OrderEvents, OrderService
from app.features.organizations.deps import OrderWriter
from app.features.organizations.keyauth import ApiKeyPrincipal
from app.features.products.deps import product_service
from app.features.users.models import User
from app.features.users.service import UserService


async def get_order_service(request: Request, session: SessionDep) -> OrderService:
    settings: Settings = request.app.state.settings
    events: OrderEvents = request.app.state.order_events
    return OrderService(
        session,
        product_service(request, session),
        events=events,
        currency=settings.currency,
        require_verified_email=settings.require_verified_email,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]


async def get_order_queries(connection: ReadConnectionDep) -> OrderQueries:
    return OrderQueries(connection)


OrderQueriesDep = Annotated[OrderQueries, Depends(get_order_queries)]


@dataclass(frozen=True, slots=True)
class OrderCustomer:
    """Who places an order: a user, or an organization's API key acting as its creator.

    `id` and `idempotency_scope` are what `Idempotency-Key`s are kept under: a key's own scope,
    apart from its creator's (API.md).
    """

    user: User
    api_key: ApiKeyPrincipal | None

    @property
    def id(self) -> uuid.UUID:
        return self.user.id

    @property
    def idempotency_scope(self) -> str | None:
        return f"apikey:{self.api_key.id}" if self.api_key is not None else None


async def get_customer(
    caller: OrderWriter, service: OrderServiceDep, session: SessionDep
) -> OrderCustomer:
    """The caller, if they may place orders at all (403 `EMAIL_NOT_VERIFIED` otherwise):
    checked before an `Idempotency-Key` is looked at, so the refusal is never stored."""
    if caller.key is not None:
        creator = await UserService(session).get(caller.key.created_by)
        if creator is None:  # accounts are deactivated, never deleted
            raise UnauthorizedError("Invalid API key")
        return OrderCustomer(creator, caller.key)
    # A write route's caller: the tracked account (`writer_with_scope`), not a view.
    user = cast("User", caller.user)
    service.check_may_order(user)
    return OrderCustomer(user, None)


Customer = Annotated[OrderCustomer, Depends(get_customer)]
