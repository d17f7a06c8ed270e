"""The rules of orders: pricing from the catalog, atomic stock, the status machine, who may see
and change what, idempotent creation and the emails.

Flushes, never commits: the request's session commits once the endpoint returns.
"""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import utcnow, uuid7
from app.core.email import queue_email
from app.core.logging import get_logger
from app.features.orders.errors import (
    EmailNotVerifiedError,
    InvalidTransitionError,
    OrderNotFoundError,
)
from app.features.orders.models import Order, OrderLine, OrderStatus, OrderStatusChange
from app.features.orders.queries import LineView, OrderView, order_json
from app.features.orders.repository import OrderRepository
from app.features.orders.schemas import OrderCreate
from app.features.organizations.errors import OrgRoleForbiddenError
from app.features.organizations.models import OrgRole
from app.features.organizations.service import member_role
from app.features.products.service import ProductService, StockLine
from app.features.users.models import Role, User
from app.features.users.service import UserService

log = get_logger(__name__)

# The order events of the event streams (API.md, "Real-time events").
ORDER_CREATED = "order.created"
ORDER_STATUS_CHANGED = "order.status_changed"


class OrderEvents(Protocol):
    """Records an order's event (`data`: its OrderOut JSON) in the caller's transaction, to be
    published once it commits (`events.publisher.order_event`).

    The event streams are built on orders (they carry `OrderOut`s), so orders do not import
    them: the app hands this in at assembly (`app.state.order_events`, see `orders.deps`).
    """

    async def __call__(
        self, session: AsyncSession, name: str, order: Order | OrderView, data: bytes
    ) -> object: ...


# The status machine of API.md: where an order may go from each status.
TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    OrderStatus.pending: frozenset({OrderStatus.paid, OrderStatus.cancelled}),
    OrderStatus.paid: frozenset({OrderStatus.shipped, OrderStatus.cancelled}),
    OrderStatus.shipped: frozenset({OrderStatus.delivered}),
    OrderStatus.delivered: frozenset(),
    OrderStatus.cancelled: frozenset(),
}
# The statuses from which an order's owner (not an admin) may cancel it.
OWNER_CANCELLABLE = frozenset({OrderStatus.pending})

_STATUS_EMAILS = {
    OrderStatus.shipped: "order_shipped",
    OrderStatus.cancelled: "order_cancelled",
}


def is_admin(user: User) -> bool:
    return user.role == Role.admin


def view_of(order: Order, lines: list[OrderLine]) -> OrderView:
    """The view of an order the session holds (a status change answers with it)."""
    return OrderView(
        order.id,
        order.user_id,
        order.organization_id,
        order.status,
        tuple(
            LineView(
                line.product_id,
                line.sku,
                line.name,
                line.unit_price_cents,
                line.quantity,
                line.line_total_cents,
            )
            for line in lines
        ),
        order.total_cents,
        order.currency,
        order.note,
        order.created_at,
        order.updated_at,
    )


def email_context(order: OrderView) -> dict[str, Any]:
    return {
        "order": {
            "id": str(order.id),
            "id8": str(order.id)[:8],
            "items": [
                {
                    "name": line.name,
                    "sku": line.sku,
                    "quantity": line.quantity,
                    "unit_price_cents": line.unit_price_cents,
                    "line_total_cents": line.line_total_cents,
                }
                for line in order.items
            ],
            "total_cents": order.total_cents,
            "currency": order.currency,
            "status": order.status.value,
        }
    }


class OrderService:
    def __init__(
        self,
        session: AsyncSession,
        products: ProductService,
        *,
        events: OrderEvents,
        currency: str,
        require_verified_email: bool = False,
    ) -> None:
        self.session = session
        self.repository = OrderRepository(session)
        self.products = products
        self.events = events
        self.currency = currency
        self.require_verified_email = require_verified_email

    # Creation ----------------------------------------------------------------------------

    def check_may_order(self, user: User) -> None:
        """Whether `user` may place orders at all (403 `EMAIL_NOT_VERIFIED` otherwise)."""
        if self.require_verified_email and not user.is_verified:
            raise EmailNotVerifiedError

    async def create(
        self,
        user: User,
        data: OrderCreate,
        *,
        organization_id: uuid.UUID | None = None,
        by_api_key: bool = False,
    ) -> OrderView:
        """Price the lines from the catalog and take their stock, all lines or none.

        Every refusal (unavailable products, insufficient stock) is raised by the catalog
        before anything is written, so a refused order leaves nothing behind. An organization's
        API key orders in its creator's name whatever became of that account (API.md).
        """
        if not by_api_key:
            self.check_may_order(user)
        stock_lines = [StockLine(item.product_id, item.quantity) for item in data.items]
        products = await self.products.take_stock(stock_lines)
        items = tuple(
            LineView(
                product.id,
                product.sku,
                product.name,
                product.price_cents,
                item.quantity,
                product.price_cents * item.quantity,
            )
            for item, product in zip(data.items, products, strict=True)
        )
        now = utcnow()
        order = OrderView(
            id=uuid7(),
            user_id=user.id,
            organization_id=organization_id,
            status=OrderStatus.pending,
            items=items,
            total_cents=sum(line.line_total_cents for line in items),
            currency=self.currency,
            note=data.note,
            created_at=now,
            updated_at=now,
        )
        self.repository.add(order, changed_by=user.id)
        await self.events(self.session, ORDER_CREATED, order, order_json(order))
        await queue_email(
            self.session, to=user.email, template="order_confirmed", context=email_context(order)
        )
        log.info(
            "order.created",
            order_id=str(order.id),
            user_id=str(user.id),
            lines=len(order.items),
            total_cents=order.total_cents,
        )
        return order

    # Status changes ----------------------------------------------------------------------

    async def cancel(self, order_id: uuid.UUID, *, actor: User) -> OrderView:
        """Cancel: the owner from `pending`, an admin from `pending` or `paid`; the stock goes
        back. An organization's order: also its owners and admins, as its owner would; its
        other members see it but may not cancel it (403); anyone else gets 404."""
        admin = is_admin(actor)
        order = await self.repository.get_for_update(order_id, user_id=None)
        if order is None:
            raise OrderNotFoundError(order_id)
        if not admin and order.user_id != actor.id:
            role = (
                await member_role(self.session, order.organization_id, actor.id)
                if order.organization_id is not None
                else None
            )
            if role is None:
                raise OrderNotFoundError(order_id)
            if role not in (OrgRole.owner, OrgRole.admin):
                raise OrgRoleForbiddenError(
                    "Only the member who placed it, an owner or an admin may cancel it"
                )
        if not admin and order.status not in OWNER_CANCELLABLE:
            raise InvalidTransitionError(order.status, OrderStatus.cancelled)
        return await self._transition(order, OrderStatus.cancelled, actor=actor)

    async def change_status(
        self, order_id: uuid.UUID, target: OrderStatus, *, actor: User
    ) -> OrderView:
        """Move an order along the status machine (admins)."""
        order = await self.repository.get_for_update(order_id, user_id=None)
        if order is None:
            raise OrderNotFoundError(order_id)
        return await self._transition(order, target, actor=actor)

    async def _transition(self, order: Order, target: OrderStatus, *, actor: User) -> OrderView:
        # The order row is locked: a concurrent change waits and then sees the new status, so
        # an order is cancelled (and its stock given back) at most once.
        current = order.status
        if target not in TRANSITIONS[current]:
            raise InvalidTransitionError(current, target)
        lines = (await self.repository.lines_of([order.id]))[order.id]
        if target is OrderStatus.cancelled:
            await self.products.give_back_stock(
                [StockLine(line.product_id, line.quantity) for line in lines]
            )
        order.status = target
        await self.repository.record_change(
            OrderStatusChange(
                order_id=order.id, from_status=current, to_status=target, changed_by=actor.id
            )
        )
        out = view_of(order, lines)
        await self.events(self.session, ORDER_STATUS_CHANGED, out, order_json(out))
        template = _STATUS_EMAILS.get(target)
        if template is not None:
            owner = await UserService(self.session).get(order.user_id)
            if owner is not None:
                await queue_email(
                    self.session, to=owner.email, template=template, context=email_context(out)
                )
        log.info(
            "order.status_changed",
            order_id=str(order.id),
            from_status=current.value,
            to_status=target.value,
            actor_id=str(actor.id),
        )
        return out
