"""The catalog's table. Orders snapshot sku, name and price, so a product can change freely."""

from __future__ import annotations

from sqlalchemy import CheckConstraint, Index, String, Text
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
