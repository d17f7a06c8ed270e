"""The rules of orders: pricing from the catalog, atomic stock, the status machine, who may see
and change what, idempotent creation and the emails.

Flushes, never commits: the request's session commits once the endpoint returns.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import utcnow, uuid7
from app.core.email import queue_email
from app.core.errors import AppError
from app.core.logging import get_logger
from app.features.orders.errors import (
    EmailNotVerifiedError,
    IdempotencyKeyInUseError,
    IdempotencyKeyReusedError,
    InvalidTransitionError,
    OrderNotFoundError,
)
from app.features.orders.models import (
    Order,
    OrderStatus,
    OrderStatusChange,
)
from app.features.orders.repository import KeyRecord, OrderRepository
from app.features.orders.schemas import OrderCreate, OrderLineOut, OrderOut, OrderPage
from app.features.products.service import ProductService, StockLine
from app.features.users.models import Role, User
from app.shared.pagination import PageParams

log = get_logger(__name__)

IDEMPOTENCY_TTL = timedelta(hours=24)

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


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An HTTP outcome as an idempotency record keeps and replays it."""

    status_code: int
    body: bytes
    content_type: str
    location: str | None = None


ErrorRenderer = Callable[[AppError], StoredResponse]
CreatedRenderer = Callable[[OrderOut], StoredResponse]


def is_admin(user: User) -> bool:
    return user.role == Role.admin


def out_from_rows(order: Mapping[str, Any], lines: Sequence[Mapping[str, Any]]) -> OrderOut:
    """OrderOut from database rows, or any mappings of the same columns (an order's, its
    lines'), unvalidated:
    what the database holds was validated on the way in, and a page of orders would otherwise
    validate every field of every line again."""
    return OrderOut.model_construct(
        id=order["id"],
        user_id=order["user_id"],
        status=OrderStatus(order["status"]),
        items=[
            OrderLineOut.model_construct(
                product_id=line["product_id"],
                sku=line["sku"],
                name=line["name"],
                unit_price_cents=line["unit_price_cents"],
                quantity=line["quantity"],
                line_total_cents=line["line_total_cents"],
            )
            for line in lines
        ],
        total_cents=order["total_cents"],
        currency=order["currency"],
        note=order["note"],
        created_at=order["created_at"],
        updated_at=order["updated_at"],
    )


def email_context(order: OrderOut) -> dict[str, Any]:
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
        currency: str,
        require_verified_email: bool = False,
    ) -> None:
        self.session = session
        self.repository = OrderRepository(session)
        self.products = products
        self.currency = currency
        self.require_verified_email = require_verified_email

    # Creation ----------------------------------------------------------------------------

    def _check_may_order(self, user: User) -> None:
        if self.require_verified_email and not user.is_verified:
            raise EmailNotVerifiedError

    async def create(self, user: User, data: OrderCreate) -> OrderOut:
        """Price the lines from the catalog and take their stock, all lines or none."""
        self._check_may_order(user)
        order = await self._take(user, data)
        await self._add(user, order)
        return order

    async def _take(self, user: User, data: OrderCreate) -> OrderOut:
        """Take the lines' stock and price them: the order as it is about to be stored.

        Every refusal (422 unavailable, 409 insufficient stock) is raised here, and this writes
        nothing unless it succeeds; `_add`, which writes the order, cannot refuse, only fail (a
        5xx, and the whole transaction rolls back). So a refused order needs no savepoint.
        """
        stock_lines = [StockLine(item.product_id, item.quantity) for item in data.items]
        products = await self.products.take_stock(stock_lines)
        items = [
            OrderLineOut(
                product_id=product.id,
                sku=product.sku,
                name=product.name,
                unit_price_cents=product.price_cents,
                quantity=item.quantity,
                line_total_cents=product.price_cents * item.quantity,
            )
            for item, product in zip(data.items, products, strict=True)
        ]
        now = utcnow()
        return OrderOut(
            id=uuid7(),
            user_id=user.id,
            status=OrderStatus.pending,
            items=items,
            total_cents=sum(line.line_total_cents for line in items),
            currency=self.currency,
            note=data.note,
            created_at=now,
            updated_at=now,
        )

    async def _add(self, user: User, order: OrderOut, key: KeyRecord | None = None) -> None:
        """Store a taken order (with its idempotency record, if any) and queue its email."""
        await self.repository.add(order, changed_by=user.id, key=key)
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

    async def create_once(
        self,
        user: User,
        data: OrderCreate,
        *,
        key: str,
        fingerprint: str,
        created: CreatedRenderer,
        failed: ErrorRenderer,
    ) -> tuple[StoredResponse, bool]:
        """`create` under an Idempotency-Key: the outcome and whether it is a replay.

        The first request with a key runs and its outcome (2xx or 4xx) is stored in the same
        transaction as the order. A repeat with the same body gets that outcome again; with
        another body 422; while the first still runs 409. An unexpected error (5xx) propagates,
        the transaction rolls back and nothing is kept, so a retry runs again.
        """
        self._check_may_order(user)
        if not await self.repository.try_lock_key(user.id, key):
            raise IdempotencyKeyInUseError
        now = utcnow()
        record = await self.repository.get_key(user.id, key, now=now)
        if record is not None:
            if record.request_hash != fingerprint:
                raise IdempotencyKeyReusedError
            log.info("order.replayed", user_id=str(user.id), order_id=str(record.order_id))
            stored = StoredResponse(
                record.response_status,
                record.response_body.encode(),
                record.response_content_type,
                record.location,
            )
            return stored, True

        def keep(outcome: StoredResponse, order_id: uuid.UUID | None) -> KeyRecord:
            return KeyRecord(
                user_id=user.id,
                key=key,
                request_hash=fingerprint,
                response_status=outcome.status_code,
                response_body=outcome.body.decode(),
                response_content_type=outcome.content_type,
                location=outcome.location,
                order_id=order_id,
                created_at=now,
                expires_at=now + IDEMPOTENCY_TTL,
            )

        try:
            order = await self._take(user, data)
        except AppError as exc:
            if exc.status_code >= 500:
                raise
            # Refused before anything was written: only the outcome is kept.
            outcome = failed(exc)
            await self.repository.add_key(keep(outcome, None))
            return outcome, False
        outcome = created(order)
        # The record rides in the order's own INSERT: one round trip for both.
        await self._add(user, order, keep(outcome, order.id))
        return outcome, False

    # Reads -------------------------------------------------------------------------------

    async def get(self, order_id: uuid.UUID, *, viewer: User) -> OrderOut:
        """The order, if the viewer may see it: its owner or an admin. Others get 404."""
        rows = await self.repository.read_with_lines(
            order_id, user_id=None if is_admin(viewer) else viewer.id
        )
        if not rows:
            raise OrderNotFoundError(order_id)
        return out_from_rows(rows[0], rows)

    async def list(
        self,
        params: PageParams,
        *,
        viewer: User,
        status: OrderStatus | None,
        user_id: uuid.UUID | None,
    ) -> OrderPage:
        """A page of orders, newest first: the viewer's own, or (admins) all or one user's."""
        owner = user_id if is_admin(viewer) else viewer.id
        orders, total = await self.repository.read_page(
            offset=params.offset, limit=params.limit, user_id=owner, status=status
        )
        lines = await self.repository.read_lines([order["id"] for order in orders])
        return OrderPage.of(
            [out_from_rows(order, lines[order["id"]]) for order in orders],
            total=total,
            params=params,
        )

    # Status changes ----------------------------------------------------------------------

    async def cancel(self, order_id: uuid.UUID, *, actor: User) -> OrderOut:
        """Cancel: the owner from `pending`, an admin from `pending` or `paid`; the stock goes
        back."""
        admin = is_admin(actor)
        order = await self.repository.get_for_update(order_id, user_id=None if admin else actor.id)
        if order is None:
            raise OrderNotFoundError(order_id)
        if not admin and order.status not in OWNER_CANCELLABLE:
            raise InvalidTransitionError(order.status, OrderStatus.cancelled)
        return await self._transition(order, OrderStatus.cancelled, actor=actor)

    async def change_status(
        self, order_id: uuid.UUID, target: OrderStatus, *, actor: User
    ) -> OrderOut:
        """Move an order along the status machine (admins)."""
        order = await self.repository.get_for_update(order_id, user_id=None)
        if order is None:
            raise OrderNotFoundError(order_id)
        return await self._transition(order, target, actor=actor)

    async def _transition(self, order: Order, target: OrderStatus, *, actor: User) -> OrderOut:
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
        out = out_from_rows(order.model_dump(), [line.model_dump() for line in lines])
        template = _STATUS_EMAILS.get(target)
        if template is not None:
            email = await self.repository.owner_email(order)
            if email is not None:
                await queue_email(
                    self.session, to=email, template=template, context=email_context(out)
                )
        log.info(
            "order.status_changed",
            order_id=str(order.id),
            from_status=current.value,
            to_status=target.value,
            actor_id=str(actor.id),
        )
        return out
