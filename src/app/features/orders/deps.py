"""Dependencies of orders: the service, with the catalog's service it prices lines with."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.core.database import SessionDep
from app.features.orders.service import OrderService
from app.features.products.deps import product_service


async def get_order_service(request: Request, session: SessionDep) -> OrderService:
    settings: Settings = request.app.state.settings
    return OrderService(
        session,
        product_service(request, session),
        currency=settings.currency,
        require_verified_email=settings.require_verified_email,
    )


OrderServiceDep = Annotated[OrderService, Depends(get_order_service)]
