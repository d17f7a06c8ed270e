"""`/api/v1/products`: the public catalog and its admin writes.

The two reads answer with a strong ETag and `If-None-Match` gets a 304 (core/http_cache.py):
`Cache-Control: public` for anonymous callers, `private` for a signed-in one (an admin may see
inactive products); `Vary: Authorization, Accept-Encoding` either way.
"""

from __future__ import annotations

import re
import uuid
from typing import Annotated, Any

from fastapi import Query, Request, Response, status

from app.core.database import SessionDep
from app.core.errors import (
    ForbiddenError,
    InsufficientScopeError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
    error_responses,
)
from app.core.http_cache import PRIVATE, conditional_json, public_cache_control
from app.core.middleware import BodyLimitExemption
from app.core.routing import make_router
from app.features.products.deps import ImageServiceDep, ProductQueriesDep, ProductServiceDep
from app.features.products.errors import (
    ImageNotFoundError,
    ProductNotFoundError,
    SkuTakenError,
    TooManyImagesError,
)
from app.features.products.schemas import (
    ImageOut,
    ImageUpdate,
    ProductCreate,
    ProductCursorPage,
    ProductOut,
    ProductPage,
    ProductUpdate,
)
from app.features.products.uploads import read_image_form
from app.features.users.deps import AdminUser, OptionalViewer, is_admin
from app.features.users.queries import UserView
from app.shared.cursor import CursorParams, ListParamsDep

router = make_router(prefix="/products", tags=["products"])

LOCATION_HEADER: dict[str, Any] = {
    "Location": {"description": "URL of the created product.", "schema": {"type": "string"}}
}
_ADMIN_ERRORS = (UnauthorizedError, ForbiddenError, InsufficientScopeError)
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
    response_model=ProductPage | ProductCursorPage,
    responses={
        200: {"headers": _VALIDATORS},
        **_NOT_MODIFIED,
        **error_responses(ValidationFailedError),
    },
    openapi_extra=_TOKEN_OPTIONAL,
)
async def list_products(
    request: Request,
    viewer: OptionalViewer,
    queries: ProductQueriesDep,
    params: ListParamsDep,
    q: Annotated[
        str | None,
        Query(max_length=200, description="Case-insensitive substring of the name or sku."),
    ] = None,
    include_inactive: Annotated[
        bool, Query(description="Admins only: list inactive products too (ignored for others).")
    ] = False,
) -> Response:
    """List the catalog by name, then id. Active products only, unless an admin asks for
    `include_inactive=true`.

    Two forms: `page`/`page_size` (the default) answers a page with its total; `limit` (and then
    `cursor`) answers a cursor page, whose deep pages cost what the first does. Mixing them, or a
    cursor of another list, filter or caller, is 422."""
    query = (q.strip() if q else None) or None
    inactive = include_inactive and is_admin(viewer)
    if isinstance(params, CursorParams):
        etag, body = await queries.list_cursor_json(
            params,
            request.app.state.cursors,
            caller=str(viewer.id) if viewer is not None else "anonymous",
            q=query,
            include_inactive=inactive,
        )
    else:
        etag, body = await queries.list_json(params, q=query, include_inactive=inactive)
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
    return await service.out(await service.update(product_id, data))


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


# Images ------------------------------------------------------------------------------------

# Their own tag (and operation ids `product-images-*`): a section of their own in the docs.
images_router = make_router(prefix="/products", tags=["product-images"])

IMAGE_UPLOAD_ROUTE = BodyLimitExemption(
    method="POST", path=re.compile(r"/api/v1/products/[^/]+/images")
)
IMAGE_LOCATION_HEADER: dict[str, Any] = {
    "Location": {"description": "URL of the created image.", "schema": {"type": "string"}}
}
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "JPEG, PNG or WebP, at most 5,242,880 bytes and "
                            "40 megapixels; the type is judged by the bytes.",
                        },
                        "alt_text": {"type": "string", "maxLength": 500},
                    },
                    "additionalProperties": False,
                }
            }
        },
    }
}


@images_router.post(
    "/{product_id}/images",
    operation_id="product-images-upload",
    response_model=ImageOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra=_UPLOAD_BODY,
    responses={
        201: {"description": "Created", "headers": IMAGE_LOCATION_HEADER},
        **error_responses(
            *_ADMIN_ERRORS,
            ProductNotFoundError,
            TooManyImagesError,
            PayloadTooLargeError,
            UnsupportedMediaTypeError,
            ServiceUnavailableError,
        ),
    },
)
async def upload_image(
    _admin: AdminUser,
    product_id: uuid.UUID,
    service: ImageServiceDep,
    request: Request,
    response: Response,
) -> ImageOut:
    """Add an image to a product (admin), as `multipart/form-data` with a `file` part and an
    optional `alt_text`.

    The type is judged by the bytes: JPEG, PNG or WebP, else 415. At most 5,242,880 bytes (413,
    refused while it streams in) and 40 megapixels (422); pixels that cannot be decoded are 422
    too. The image is stored without its metadata (EXIF, GPS), upright, and answered with
    `status: processing`; the worker then makes the `thumb` and `medium` WebP variants and
    marks it `ready`. At most 10 images per product (409 `TOO_MANY_IMAGES`).
    """
    form = await read_image_form(request)
    image = await service.upload(product_id, form)
    response.headers["Location"] = str(
        request.app.url_path_for("get_image", product_id=str(product_id), image_id=str(image.id))
    )
    return service.to_out(image)


@images_router.get(
    "/{product_id}/images/{image_id}",
    operation_id="product-images-get",
    response_model=ImageOut,
    responses=error_responses(ImageNotFoundError),
    openapi_extra=_TOKEN_OPTIONAL,
)
async def get_image(
    viewer: OptionalViewer,
    product_id: uuid.UUID,
    image_id: uuid.UUID,
    session: SessionDep,
    service: ImageServiceDep,
) -> ImageOut:
    """One image of a product (an inactive product's only for admins)."""
    admin = is_admin(viewer)
    return service.to_out(await service.get(session, product_id, image_id, admin=admin))


@images_router.patch(
    "/{product_id}/images/{image_id}",
    operation_id="product-images-update",
    response_model=ImageOut,
    responses=error_responses(*_ADMIN_ERRORS, ImageNotFoundError, *_BODY_ERRORS),
)
async def update_image(
    _admin: AdminUser,
    product_id: uuid.UUID,
    image_id: uuid.UUID,
    data: ImageUpdate,
    session: SessionDep,
    service: ImageServiceDep,
) -> ImageOut:
    """Change an image's `alt_text` (null clears it) or `position` (admin). Moving an image
    shifts the ones in between; a position outside `0..n-1` is 422."""
    return service.to_out(await service.update(session, product_id, image_id, data))


@images_router.delete(
    "/{product_id}/images/{image_id}",
    operation_id="product-images-delete",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(*_ADMIN_ERRORS, ImageNotFoundError),
)
async def delete_image(
    _admin: AdminUser,
    product_id: uuid.UUID,
    image_id: uuid.UUID,
    session: SessionDep,
    service: ImageServiceDep,
) -> Response:
    """Delete an image (admin): the others close the gap, and its stored files are removed
    by the worker."""
    await service.delete(session, product_id, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
