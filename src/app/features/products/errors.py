"""Catalog errors, rendered as Problem Details by the core handlers."""

from __future__ import annotations

import uuid

from app.core.errors import ConflictError, NotFoundError, ValidationFailedError


class ProductNotFoundError(NotFoundError):
    def __init__(self, product_id: uuid.UUID) -> None:
        super().__init__(f"Product {product_id} not found")


class SkuTakenError(ConflictError):
    code = "SKU_TAKEN"

    def __init__(self, sku: str) -> None:
        super().__init__(f"SKU {sku} is already taken", extra={"sku": sku})


class InsufficientStockError(ConflictError):
    code = "INSUFFICIENT_STOCK"

    def __init__(self, product_id: uuid.UUID, requested: int, available: int) -> None:
        super().__init__(
            f"Only {available} left of product {product_id}",
            extra={"product_id": str(product_id), "requested": requested, "available": available},
        )


class ProductUnavailableError(ValidationFailedError):
    """Order lines naming a product that does not exist or is no longer sold."""

    def __init__(self, line_indexes: list[int]) -> None:
        super().__init__("Some lines name a product that does not exist or is not available")
        # Which lines, by their index in the order: the route that took them names the field.
        self.line_indexes = line_indexes
