"""Dependencies of the catalog: the service, built per request from the session and the cache."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.core.cache import Cache
from app.core.database import SessionDep
from app.core.reads import ReadConnectionDep
from app.features.products.image_service import ImageService
from app.features.products.queries import ProductQueries
from app.features.products.service import ProductService


def product_service(request: Request, session: AsyncSession) -> ProductService:
    # The cache from the app's state, not a dependency of its own: one dependency less on
    # every catalog read (each costs FastAPI about 10 us).
    state = request.app.state
    settings: Settings = state.settings
    cache: Cache = state.cache
    return ProductService(
        session,
        cache,
        currency=settings.currency,
        cache_ttl=settings.cache_ttl_seconds,
        media_base_url=settings.public_media_base_url,
    )


async def get_product_service(request: Request, session: SessionDep) -> ProductService:
    return product_service(request, session)


ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]


async def get_product_queries(request: Request, connection: ReadConnectionDep) -> ProductQueries:
    state = request.app.state
    settings: Settings = state.settings
    return ProductQueries(
        connection,
        state.cache,
        currency=settings.currency,
        cache_ttl=settings.cache_ttl_seconds,
        media_base_url=settings.public_media_base_url,
    )


ProductQueriesDep = Annotated[ProductQueries, Depends(get_product_queries)]


def get_image_service(request: Request) -> ImageService:
    state = request.app.state
    settings: Settings = state.settings
    return ImageService(
        state.session_factory,
        state.cache,
        state.object_store,
        media_base_url=settings.public_media_base_url,
        limiter=state.image_limiter,
    )


ImageServiceDep = Annotated[ImageService, Depends(get_image_service)]
