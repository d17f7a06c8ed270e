"""Orders, their lines (a snapshot of the catalog at order time) and the status history."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Uuid,
    func,
)
from sqlmodel import Field, SQLModel

from app.core.database import TimestampMixin, UUIDModel, utcnow


class OrderStatus(StrEnum):
    pending = "pending"
    paid = "paid"
    shipped = "shipped"
    delivered = "delivered"
    cancelled = "cancelled"


def _status_type(name: str) -> Enum:
    # VARCHAR plus a CHECK, not a native enum: adding a status later is a plain migration.
    return Enum(
        OrderStatus,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda enum: [member.value for member in enum],
    )


class Order(UUIDModel, TimestampMixin, table=True):
    __tablename__ = "orders"
    __table_args__ = (
        CheckConstraint("total_cents >= 0", name="total_non_negative"),
        # Lists are newest first with an id tie-break: one index per filter they offer.
        Index("ix_orders_user_id_created_at_id", "user_id", "created_at", "id"),
        Index("ix_orders_status_created_at_id", "status", "created_at", "id"),
        Index("ix_orders_created_at_id", "created_at", "id"),
        Index("ix_orders_organization_id_created_at_id", "organization_id", "created_at", "id"),
    )

    user_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("users.id", ondelete="RESTRICT"), nullable=False)
    )
    status: OrderStatus = Field(
        default=OrderStatus.pending, sa_column=Column(_status_type("status"), nullable=False)
    )
    total_cents: int = Field(sa_type=BigInteger, nullable=False)
    currency: str = Field(sa_type=String(3), nullable=False)
    note: str | None = Field(default=None, sa_type=String(500), nullable=True)
    # Null for a personal order. RESTRICT: organizations are soft-deleted and their orders kept.
    organization_id: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("organizations.id", ondelete="RESTRICT"), nullable=True),
    )


class OrderLine(SQLModel, table=True):
    """One product of an order, with its sku, name and price as they were when ordered."""

    __tablename__ = "order_lines"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        Index("ix_order_lines_product_id", "product_id"),
    )

    order_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("orders.id", ondelete="CASCADE"), primary_key=True, nullable=False
        )
    )
    # Submission order of the lines, which `OrderOut.items` keeps.
    position: int = Field(sa_column=Column(Integer, primary_key=True, nullable=False))
    product_id: uuid.UUID = Field(
        sa_column=Column(Uuid, ForeignKey("products.id", ondelete="RESTRICT"), nullable=False)
    )
    sku: str = Field(sa_type=String(32), nullable=False)
    name: str = Field(sa_type=String(200), nullable=False)
    unit_price_cents: int = Field(nullable=False)
    quantity: int = Field(nullable=False)
    line_total_cents: int = Field(sa_type=BigInteger, nullable=False)


class OrderStatusChange(UUIDModel, table=True):
    """Who moved an order from which status to which, and when. `from_status` is null for the
    creation."""

    __tablename__ = "order_status_history"

    order_id: uuid.UUID = Field(
        sa_column=Column(
            Uuid, ForeignKey("orders.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    from_status: OrderStatus | None = Field(
        default=None, sa_column=Column(_status_type("from_status"), nullable=True)
    )
    to_status: OrderStatus = Field(sa_column=Column(_status_type("to_status"), nullable=False))
    changed_by: uuid.UUID | None = Field(
        default=None,
        sa_column=Column(Uuid, ForeignKey("users.id", ondelete="SET NULL"), nullable=True),
    )
    changed_at: datetime = Field(
        default_factory=utcnow,
        sa_type=DateTime(timezone=True),
        sa_column_kwargs={"server_default": func.now(), "nullable": False},
    )
