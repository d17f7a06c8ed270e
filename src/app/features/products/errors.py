"""Catalog errors, rendered as Problem Details by the core handlers."""

from __future__ import annotations

import uuid

from app.core.errors import (
    ConflictError,
    NotFoundError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)


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


class ImageNotFoundError(NotFoundError):
    def __init__(self, image_id: uuid.UUID) -> None:
        super().__init__(f"Image {image_id} not found")


class TooManyImagesError(ConflictError):
    code = "TOO_MANY_IMAGES"

    def __init__(self, product_id: uuid.UUID, limit: int) -> None:
        super().__init__(
            f"Product {product_id} already has {limit} images",
            extra={"product_id": str(product_id), "limit": limit},
        )


class NotAnImageError(UnsupportedMediaTypeError):
    default_detail = "The file is not a JPEG, PNG or WebP image"


class ImageFileInvalidError(ValidationFailedError):
    """The upload is an image, but not one we keep: too many pixels, or pixels that do not
    decode."""

    def __init__(self, msg: str, type_: str) -> None:
        super().__init__(msg, errors=[{"loc": ["body", "file"], "msg": msg, "type": type_}])


class ImagePositionError(ValidationFailedError):
    def __init__(self, position: int, count: int) -> None:
        msg = f"Position must be between 0 and {count - 1}"
        super().__init__(
            msg, errors=[{"loc": ["body", "position"], "msg": msg, "type": "position_range"}]
        )
