"""Dependencies of orders: the service (with the catalog's service it prices lines with), the
read side, and the caller who may place an order."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.core.database import SessionDep
from app.core.reads import ReadConnectionDep
from app.features.auth.deps import CurrentUser
from app.features.orders.queries import OrderQueries
from app.features.orders.service import OrderService
from app.features.products.deps import product_service
from app.features.users.models import User


async def get_order_service(request: Request, session: SessionDep) -> OrderService:
    settings: Settings = request.app.state.settings
    return OrderService(
        session,
        product_service(request, session),
        currency=settings.currency,
        require_verified_email=settings.require_verified_email,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]


async def get_order_queries(connection: ReadConnectionDep) -> OrderQueries:
    return OrderQueries(connection)


OrderQueriesDep = Annotated[OrderQueries, Depends(get_order_queries)]


async def get_customer(user: CurrentUser, service: OrderServiceDep) -> User:
    """The caller, if they may place orders at all (403 `EMAIL_NOT_VERIFIED` otherwise):
    checked before an `Idempotency-Key` is looked at, so the refusal is never stored."""
    service.check_may_order(user)
    return user


Customer = Annotated[User, Depends(get_customer)]
