"""Dependencies of the catalog: the service, built per request from the session and the cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from app.config import Settings
from app.core.cache import CacheDep
from app.core.database import SessionDep
from app.features.products.service import ProductService


async def get_product_service(
    request: Request, session: SessionDep, cache: CacheDep
) -> ProductService:
    settings: Settings = request.app.state.settings
    return ProductService(
        session, cache, currency=settings.currency, cache_ttl=settings.cache_ttl_seconds
    )


ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]
