"""The catalog's table. Orders snapshot sku, name and price, so a product can change freely."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field

from app.core.database import TimestampMixin, UUIDModel


class Product(UUIDModel, TimestampMixin, table=True):
    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("stock >= 0", name="stock_non_negative"),
        CheckConstraint("price_cents >= 0", name="price_non_negative"),
        # The public list: active products by name, then id.
        Index("ix_products_name_id", "name", "id"),
    )

    sku: str = Field(sa_type=String(32), unique=True, nullable=False)
    name: str = Field(sa_type=String(200), nullable=False)
    description: str | None = Field(default=None, sa_type=Text, nullable=True)
    price_cents: int = Field(nullable=False)
    stock: int = Field(nullable=False)
    is_active: bool = Field(
        default=True, nullable=False, sa_column_kwargs={"server_default": "true"}
    )


class ImageStatus(StrEnum):
    processing = "processing"
    ready = "ready"
    failed = "failed"


MAX_IMAGES_PER_PRODUCT = 10


class ProductImage(UUIDModel, TimestampMixin, table=True):
    """An image of a product. Its bytes live in the object store under `object_key` (the
    original, stripped of metadata) and the keys in `variants` (WebP, made by the worker)."""

    __tablename__ = "product_images"
    __table_args__ = (
        CheckConstraint("status IN ('processing', 'ready', 'failed')", name="status"),
        CheckConstraint(f"position >= 0 AND position < {MAX_IMAGES_PER_PRODUCT}", name="position"),
        # Positions are contiguous per product; deferred, so that one statement (or several in a
        # transaction) can shift them past each other.
        UniqueConstraint("product_id", "position", deferrable=True, initially="DEFERRED"),
    )

    product_id: uuid.UUID = Field(
        sa_column=Column(Uuid(), ForeignKey("products.id", ondelete="CASCADE"), nullable=False)
    )
    object_key: str = Field(sa_type=String(300), unique=True, nullable=False)
    content_type: str = Field(sa_type=String(32), nullable=False)
    width: int = Field(nullable=False)
    height: int = Field(nullable=False)
    bytes: int = Field(nullable=False)
    alt_text: str | None = Field(default=None, sa_type=String(500), nullable=True)
    position: int = Field(nullable=False)
    status: str = Field(default=ImageStatus.processing, sa_type=String(16), nullable=False)
    # {"thumb": {"key": ..., "width": ..., "height": ...}, "medium": {...}} once ready.
    variants: dict[str, Any] = Field(
        default_factory=dict,
        sa_column=Column(JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    )
