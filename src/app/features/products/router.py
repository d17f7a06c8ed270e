"""`/api/v1/products`: the public catalog and its admin writes.

The two reads answer with a strong ETag and `If-None-Match` gets a 304 (core/http_cache.py):
`Cache-Control: public` for anonymous callers, `private` for a signed-in one (an admin may see
inactive products); `Vary: Authorization, Accept-Encoding` either way.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import Query, Request, Response, status

from app.core.errors import (
    ForbiddenError,
    PayloadTooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    error_responses,
)
from app.core.http_cache import PRIVATE, conditional_json, public_cache_control
from app.core.routing import make_router
from app.features.auth.deps import AdminUser, OptionalViewer, is_admin
from app.features.products.deps import ProductQueriesDep, ProductServiceDep
from app.features.products.errors import ProductNotFoundError, SkuTakenError
from app.features.products.schemas import ProductCreate, ProductOut, ProductPage, ProductUpdate
from app.features.users.queries import UserView
from app.shared.pagination import PageParamsDep

router = make_router(prefix="/products", tags=["products"])

LOCATION_HEADER: dict[str, Any] = {
    "Location": {"description": "URL of the created product.", "schema": {"type": "string"}}
}
_ADMIN_ERRORS = (UnauthorizedError, ForbiddenError)
# The public reads take a token but do not need one: `{}` in `security` makes it optional
# (FastAPI appends this to the scheme the OptionalViewer dependency declares).
_TOKEN_OPTIONAL: dict[str, Any] = {"security": [{}]}
_BODY_ERRORS = (PayloadTooLargeError, UnsupportedMediaTypeError)
_VALIDATORS: dict[str, Any] = {
    "ETag": {
        "description": "Strong tag of the JSON (`-gz` suffix when gzip-coded); send it back in "
        "`If-None-Match` for a 304.",
        "schema": {"type": "string"},
    },
    "Cache-Control": {
        "description": "`public, no-cache` for anonymous callers (or `public, max-age=N` when "
        "`APP_CATALOG_MAX_AGE_SECONDS` is set), `private, no-cache` for a signed-in one.",
        "schema": {"type": "string"},
    },
    "Vary": {"description": "`Authorization, Accept-Encoding`.", "schema": {"type": "string"}},
}
_NOT_MODIFIED: dict[int | str, dict[str, Any]] = {
    304: {
        "description": "Not Modified: `If-None-Match` holds the current ETag; no body.",
        "headers": _VALIDATORS,
    }
}


def _cache_control(request: Request, user: UserView | None) -> str:
    if user is not None:
        return PRIVATE
    max_age: int = request.app.state.settings.catalog_max_age_seconds
    return public_cache_control(max_age)


@router.get(
    "",
    response_model=ProductPage,
    responses={200: {"headers": _VALIDATORS}, **_NOT_MODIFIED},
    openapi_extra=_TOKEN_OPTIONAL,
)
async def list_products(
    request: Request,
    viewer: OptionalViewer,
    queries: ProductQueriesDep,
    params: PageParamsDep,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Case-insensitive substring of the name or sku."),
    ] = None,
    include_inactive: Annotated[
        bool, Query(description="Admins only: list inactive products too (ignored for others).")
    ] = False,
) -> Response:
    """List the catalog by name, then id. Active products only, unless an admin asks for
    `include_inactive=true`."""
    query = q.strip() if q else None
    etag, body = await queries.list_json(
        params, q=query or None, include_inactive=include_inactive and is_admin(viewer)
    )
    return conditional_json(
        request.scope, etag, body, cache_control=_cache_control(request, viewer)
    )


@router.get(
    "/{product_id}",
    response_model=ProductOut,
    responses={
        200: {"headers": _VALIDATORS},
        **_NOT_MODIFIED,
        **error_responses(ProductNotFoundError),
    },
    openapi_extra=_TOKEN_OPTIONAL,
)
async def get_product(
    request: Request, viewer: OptionalViewer, product_id: uuid.UUID, queries: ProductQueriesDep
) -> Response:
    """One product. An inactive product is 404, except for admins."""
    etag, body = await queries.get_json(product_id, include_inactive=is_admin(viewer))
    return conditional_json(
        request.scope, etag, body, cache_control=_cache_control(request, viewer)
    )


@router.post(
    "",
    response_model=ProductOut,
    status_code=status.HTTP_201_CREATED,
    responses={
        201: {"description": "Created", "headers": LOCATION_HEADER},
        **error_responses(*_ADMIN_ERRORS, SkuTakenError, *_BODY_ERRORS),
    },
)
async def create_product(
    _admin: AdminUser,
    data: ProductCreate,
    service: ProductServiceDep,
    request: Request,
    response: Response,
) -> ProductOut:
    """Add a product to the catalog (admin). The sku is unique: 409 `SKU_TAKEN`."""
    product = await service.create(data)
    response.headers["Location"] = str(
        request.app.url_path_for("get_product", product_id=str(product.id))
    )
    return service.to_out(product)


@router.patch(
    "/{product_id}",
    response_model=ProductOut,
    responses=error_responses(*_ADMIN_ERRORS, ProductNotFoundError, *_BODY_ERRORS),
)
async def update_product(
    _admin: AdminUser, product_id: uuid.UUID, data: ProductUpdate, service: ProductServiceDep
) -> ProductOut:
    """Change a product (admin); only the fields sent change. Existing orders keep their
    snapshot of name and price."""
    return service.to_out(await service.update(product_id, data))


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(*_ADMIN_ERRORS, ProductNotFoundError),
)
async def delete_product(
    _admin: AdminUser, product_id: uuid.UUID, service: ProductServiceDep
) -> Response:
    """Deactivate a product (admin): it leaves the public catalog; orders keep their snapshot."""
    await service.deactivate(product_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
