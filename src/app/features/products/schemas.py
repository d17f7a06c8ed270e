"""The catalog's wire shapes. Request models forbid unknown fields and strip strings."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from typing_extensions import TypedDict

from app.shared.cursor import CursorPage
from app.shared.pagination import Page
from app.shared.patch import omittable, rejecting_null
from app.shared.schemas import RequestModel

INT32_MAX = 2**31 - 1

Sku = Annotated[str, Field(pattern=r"^[A-Z0-9][A-Z0-9-]{2,31}$", examples=["MUG-001"])]
Name = Annotated[str, Field(min_length=1, max_length=200)]
Description = Annotated[str, Field(max_length=2000)]


def _not_a_bool(value: Any) -> Any:
    # pydantic's lax int takes a JSON `true` as 1; the document says integer.
    if isinstance(value, bool):
        raise ValueError("must be an integer, not a boolean")
    return value


PriceCents = Annotated[
    int,
    Field(ge=0, le=INT32_MAX, description="Price in minor units."),
    BeforeValidator(_not_a_bool),
]
Stock = Annotated[int, Field(ge=0, le=INT32_MAX), BeforeValidator(_not_a_bool)]


class ProductCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sku": "MUG-001",
                    "name": "Coffee mug",
                    "description": "350 ml, stoneware.",
                    "price_cents": 1250,
                    "stock": 10,
                }
            ]
        }
    )

    sku: Sku
    name: Name
    description: Description | None = None
    price_cents: PriceCents
    stock: Stock


class ProductUpdate(RequestModel):
    """A patch: only the fields sent change; `description: null` clears it."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"price_cents": 1100, "stock": 25}, {"is_active": False}]}
    )

    name: Name | None = omittable()
    description: Description | None = None
    price_cents: PriceCents | None = omittable()
    stock: Stock | None = omittable()
    is_active: bool | None = omittable()

    # An explicit null of a required column.
    _no_null = field_validator("name", "price_cents", "stock", "is_active")(
        rejecting_null("may not be null")
    )


class VariantOut(BaseModel):
    url: str = Field(description="Absolute URL of the WebP variant; a plain GET answers it.")
    width: int
    height: int


class ImageVariants(TypedDict, total=False):
    """The variants made so far: both once the image is `ready`, none before."""

    thumb: VariantOut
    medium: VariantOut


ImageStatusName = Literal["processing", "ready", "failed"]


class ImageOut(BaseModel):
    id: uuid.UUID
    url: str = Field(
        description="Absolute URL of the stored original (metadata stripped); a plain GET, "
        "without auth, answers it with its bytes and Content-Type."
    )
    content_type: Literal["image/jpeg", "image/png", "image/webp"]
    width: int = Field(description="Pixels, after the EXIF orientation is applied.")
    height: int
    bytes: int = Field(description="Size of the stored original after stripping.")
    alt_text: str | None
    position: int = Field(ge=0, description="0-based and contiguous within the product.")
    status: ImageStatusName = Field(
        description="`processing` until the worker made the variants, then `ready`; `failed` "
        "if it could not after its retries."
    )
    variants: ImageVariants = Field(
        description="`thumb` (at most 256 px on the long side) and `medium` (at most 1024 px), "
        "WebP."
    )


class ImageUpdate(RequestModel):
    """A patch: `alt_text` (null clears it) and/or `position` (0..n-1; the others shift)."""

    alt_text: Annotated[str, Field(max_length=500)] | None = None
    position: Annotated[int, Field(ge=0), BeforeValidator(_not_a_bool)] | None = omittable()

    _no_null = field_validator("position")(rejecting_null("may not be null"))


class ProductOut(BaseModel):
    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": "0190f1ba-4e5f-7a6b-9c7d-8e9f0a1b2c3d",
                    "sku": "MUG-001",
                    "name": "Coffee mug",
                    "description": "350 ml, stoneware.",
                    "price_cents": 1250,
                    "currency": "USD",
                    "stock": 10,
                    "is_active": True,
                    "images": [],
                    "created_at": "2026-12-01T12:00:00Z",
                    "updated_at": "2026-12-01T12:00:00Z",
                }
            ]
        },
    )

    id: uuid.UUID
    sku: str
    name: str
    description: str | None
    price_cents: int
    currency: str = Field(description="ISO 4217 code of every price of this deployment.")
    stock: int
    is_active: bool
    images: list[ImageOut] = Field(description="The product's images, by position.")
    created_at: datetime
    updated_at: datetime


class ProductPage(Page[ProductOut]):
    """A page of products, by name then id."""


class ProductCursorPage(CursorPage[ProductOut]):
    """A cursor page of products, by name then id (`?limit=`, then `?cursor=`)."""
