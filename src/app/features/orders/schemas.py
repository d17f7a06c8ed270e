"""Orders on the wire. Prices and totals are never accepted from a client: they are unknown
fields of `OrderCreate` (422)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.features.orders.models import OrderStatus
from app.shared.cursor import CursorPage
from app.shared.pagination import Page
from app.shared.schemas import RequestModel

MAX_LINES = 50
MAX_QUANTITY = 1000


class OrderLineCreate(RequestModel):
    product_id: uuid.UUID
    quantity: Annotated[int, Field(ge=1, le=MAX_QUANTITY)]


class OrderCreate(RequestModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"product_id": "0190f1ba-4e5f-7a6b-9c7d-8e9f0a1b2c3d", "quantity": 2}
                    ],
                    "note": "Gift wrap, please.",
                }
            ]
        }
    )

    items: Annotated[list[OrderLineCreate], Field(min_length=1, max_length=MAX_LINES)]
    note: Annotated[str, Field(max_length=500)] | None = None
    organization_id: uuid.UUID | None = Field(
        default=None,
        description="Order for this organization (you must be a member, else 404). An API "
        "key orders for its own organization: leave it out or send that one.",
    )

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


class OrderStatusUpdate(RequestModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "paid"}]})

    status: OrderStatus


class OrderLineOut(BaseModel):
    product_id: uuid.UUID
    sku: str
    name: str
    unit_price_cents: int
    quantity: int
    line_total_cents: int


class OrderOut(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "0190f1c2-7d4e-7a51-9f0e-3c2b1a0d9e8f",
                    "user_id": "0190f1b8-2c3d-7e4f-8a5b-6c7d8e9f0a1b",
                    "organization_id": "0190f1b9-3a4b-7c5d-8e6f-7a8b9c0d1e2f",
                    "status": "pending",
                    "items": [
                        {
                            "product_id": "0190f1ba-4e5f-7a6b-9c7d-8e9f0a1b2c3d",
                            "sku": "MUG-001",
                            "name": "Coffee mug",
                            "unit_price_cents": 1250,
                            "quantity": 2,
                            "line_total_cents": 2500,
                        }
                    ],
                    "total_cents": 2500,
                    "currency": "USD",
                    "note": "Gift wrap, please.",
                    "created_at": "2026-12-01T12:00:00Z",
                    "updated_at": "2026-12-01T12:00:00Z",
                }
            ]
        }
    )

    id: uuid.UUID
    user_id: uuid.UUID
    organization_id: uuid.UUID | None = Field(description="Null for a personal order.")
    status: OrderStatus
    items: list[OrderLineOut]
    total_cents: int
    currency: str
    note: str | None
    created_at: datetime
    updated_at: datetime


class OrderPage(Page[OrderOut]):
    """A page of orders, newest first."""


class OrderCursorPage(CursorPage[OrderOut]):
    """A cursor page of orders, newest first (`?limit=`, then `?cursor=`)."""
