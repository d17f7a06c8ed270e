"""Orders on the wire. Prices and totals are never accepted from a client: they are unknown
fields of `OrderCreate` (422)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.features.orders.models import OrderStatus
from app.shared.pagination import Page

MAX_LINES = 50
MAX_QUANTITY = 1000


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OrderLineCreate(_Request):
    product_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class OrderCreate(_Request):
    items: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=MAX_LINES)]
    note: Annotated[str, Field(max_length=500)] | None = None

    @field_validator("items")
    @classmethod
    def _distinct_products(cls, items: list[OrderLineCreate]) -> list[OrderLineCreate]:
        first_line: dict[uuid.UUID, int] = {}
        for index, item in enumerate(items):
            earlier = first_line.setdefault(item.product_id, index)
            if earlier != index:
                raise ValueError(
                    f"line {index} repeats the product of line {earlier}; "
                    "order each product on one line"
                )
        return items


class OrderStatusUpdate(_Request):
    status: OrderStatus


class OrderLineOut(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: int
    quantity: int
    line_total_cents: int


class OrderOut(BaseModel):
    id: uuid.UUID
    user_id: uuid.UUID
    status: OrderStatus
    items: list[OrderLineOut]
    total_cents: int
    currency: str
    note: str | None
    created_at: datetime
    updated_at: datetime


class OrderPage(Page[OrderOut]):
    """A page of orders, newest first."""
