"""SQL of the catalog. Returns models; turns constraint violations into domain errors."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import case, func, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.features.products.errors import SkuTakenError
from app.features.products.models import ImageStatus, Product, ProductImage


class StockRow(NamedTuple):
    """What an order needs of a product: its snapshot for the line, and its stock."""

    id: uuid.UUID
    sku: str
    name: str
    price_cents: int
    stock: int
    is_active: bool


# An order's stock, checked and taken in one statement (one round trip), all lines or none.
# `locked` locks the wanted rows in id order, the order every stock change takes them in (two
# orders of the same products cannot deadlock), with `FOR NO KEY UPDATE`, the lock the UPDATE
# takes anyway; under READ COMMITTED a row changed meanwhile is read as it now is. `taken`
# changes them only if every wanted product is on sale with enough left; else nothing, and
# the rows tell the caller why. Built once: the hot path skips building and hashing it.
_TAKE_STOCK = text(
    """
    WITH wanted AS (
        SELECT id, sum(quantity) AS quantity
        FROM unnest(CAST(:ids AS uuid[]), CAST(:quantities AS integer[])) AS w(id, quantity)
        GROUP BY id
    ), locked AS MATERIALIZED (
        SELECT p.id, p.sku, p.name, p.price_cents, p.stock, p.is_active, wanted.quantity
        FROM products AS p JOIN wanted ON wanted.id = p.id
        ORDER BY p.id
        FOR NO KEY UPDATE OF p
    ), taken AS (
        UPDATE products SET stock = products.stock - locked.quantity, updated_at = now()
        FROM locked
        WHERE products.id = locked.id
          AND (SELECT count(*) FROM locked WHERE is_active AND stock >= quantity)
              = (SELECT count(*) FROM wanted)
        RETURNING products.id
    )
    SELECT id, sku, name, price_cents, stock, is_active, (SELECT count(*) FROM taken) AS taken
    FROM locked
    """
)


def _constraint_of(exc: IntegrityError) -> str | None:
    cause = getattr(exc.orig, "__cause__", None)
    name = getattr(cause, "constraint_name", None)
    return str(name) if name else None


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, product_id: uuid.UUID) -> Product | None:
        return await self.session.get(Product, product_id)

    async def add(self, product: Product) -> Product:
        self.session.add(product)
        try:
            # A savepoint, so that a taken sku leaves the request's transaction usable.
            async with self.session.begin_nested():
                await self.session.flush()
        except IntegrityError as exc:
            if _constraint_of(exc) == "uq_products_sku":
                raise SkuTakenError(product.sku) from None
            raise
        return product

    async def flush(self) -> None:
        await self.session.flush()

    async def take_stock(
        self, quantities: Mapping[uuid.UUID, int]
    ) -> tuple[dict[uuid.UUID, StockRow], int]:
        """Take each product's quantity if every one is on sale with enough left, else nothing.

        Returns the products found, as they were before (what they cost, whether they are on
        sale, how many were left), and how many rows were changed: all of them or none.
        """
        result = await self.session.execute(
            _TAKE_STOCK, {"ids": list(quantities), "quantities": list(quantities.values())}
        )
        found: dict[uuid.UUID, StockRow] = {}
        taken = 0
        for row in result:
            found[row.id] = StockRow(*row[:6])
            taken = int(row.taken)
        return found, taken

    async def add_stock(self, product_id: uuid.UUID, quantity: int) -> None:
        statement = (
            update(Product)
            .where(col(Product.id) == product_id)
            .values(stock=col(Product.stock) + quantity, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)


# Image writes of one product take this lock first (held to the end of their transaction): the
# count that enforces the limit and the positions they shift cannot change under them. Orders
# lock product rows, never this, so uploads and orders do not wait for each other.
_LOCK_IMAGES = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")


class ImageRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def lock_product(self, product_id: uuid.UUID) -> None:
        await self.session.execute(_LOCK_IMAGES, {"key": f"product_images:{product_id}"})

    async def count(self, product_id: uuid.UUID) -> int:
        statement = (
            select(func.count())
            .select_from(ProductImage)
            .where(col(ProductImage.product_id) == product_id)
        )
        return int((await self.session.execute(statement)).scalar_one())

    async def get(
        self, product_id: uuid.UUID, image_id: uuid.UUID, *, for_update: bool = False
    ) -> ProductImage | None:
        statement = select(ProductImage).where(
            col(ProductImage.id) == image_id, col(ProductImage.product_id) == product_id
        )
        if for_update:
            statement = statement.with_for_update()
        return (await self.session.execute(statement)).scalar_one_or_none()

    async def get_by_id(self, image_id: uuid.UUID) -> ProductImage | None:
        return await self.session.get(ProductImage, image_id)

    async def of_products(
        self, product_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[ProductImage]]:
        """The images of these products, each list by position."""
        found: dict[uuid.UUID, list[ProductImage]] = {pid: [] for pid in product_ids}
        if not product_ids:
            return found
        statement = (
            select(ProductImage)
            .where(col(ProductImage.product_id).in_(list(product_ids)))
            .order_by(col(ProductImage.product_id), col(ProductImage.position))
        )
        for image in (await self.session.execute(statement)).scalars():
            found[image.product_id].append(image)
        return found

    async def add(self, image: ProductImage) -> ProductImage:
        self.session.add(image)
        await self.session.flush()
        return image

    async def move(self, image: ProductImage, position: int) -> None:
        """Put `image` at `position`, shifting the images in between by one (the unique
        position constraint is deferred to the commit)."""
        old = image.position
        if position == old:
            return
        step = 1 if position < old else -1
        low, high = min(old, position), max(old, position)
        statement = (
            update(ProductImage)
            .where(
                col(ProductImage.product_id) == image.product_id,
                col(ProductImage.position).between(low, high),
            )
            .values(
                position=case(
                    (col(ProductImage.id) == image.id, position),
                    else_=col(ProductImage.position) + step,
                ),
                updated_at=func.now(),
            )
            .execution_options(synchronize_session=False)
        )
        await self.session.execute(statement)
        await self.session.refresh(image)

    async def delete(self, image: ProductImage) -> None:
        """Delete the row and close the gap it leaves in the positions."""
        await self.session.delete(image)
        await self.session.flush()
        await self.session.execute(
            update(ProductImage)
            .where(
                col(ProductImage.product_id) == image.product_id,
                col(ProductImage.position) > image.position,
            )
            .values(position=col(ProductImage.position) - 1, updated_at=func.now())
            .execution_options(synchronize_session=False)
        )

    async def mark_ready(self, image_id: uuid.UUID, variants: dict[str, Any]) -> uuid.UUID | None:
        """`processing` -> `ready` with its variants; the product's id, or None when the image
        is gone or no longer processing."""
        statement = (
            update(ProductImage)
            .where(
                col(ProductImage.id) == image_id,
                col(ProductImage.status) == ImageStatus.processing,
            )
            .values(status=ImageStatus.ready, variants=variants, updated_at=func.now())
            .returning(col(ProductImage.product_id))
        )
        product_id: uuid.UUID | None = (await self.session.execute(statement)).scalar_one_or_none()
        return product_id

    async def mark_failed(self, image_id: uuid.UUID) -> uuid.UUID | None:
        statement = (
            update(ProductImage)
            .where(
                col(ProductImage.id) == image_id,
                col(ProductImage.status) == ImageStatus.processing,
            )
            .values(status=ImageStatus.failed, updated_at=func.now())
            .returning(col(ProductImage.product_id))
        )
        product_id: uuid.UUID | None = (await self.session.execute(statement)).scalar_one_or_none()
        return product_id
