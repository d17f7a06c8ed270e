"""Order errors, rendered as Problem Details by the core handlers."""

from __future__ import annotations

import uuid

from app.core.errors import ConflictError, ForbiddenError, NotFoundError
from app.features.orders.models import OrderStatus


class OrderNotFoundError(NotFoundError):
    """Also what someone else's order is: its existence is not revealed."""

    def __init__(self, order_id: uuid.UUID) -> None:
        super().__init__(f"Order {order_id} not found")


class InvalidTransitionError(ConflictError):
    code = "INVALID_STATE_TRANSITION"

    def __init__(self, current: OrderStatus, target: OrderStatus) -> None:
        super().__init__(
            f"An order cannot go from {current} to {target}",
            extra={"from": current.value, "to": target.value},
        )


class EmailNotVerifiedError(ForbiddenError):
    code = "EMAIL_NOT_VERIFIED"
    default_detail = "Verify your email address before ordering"
