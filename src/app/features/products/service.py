"""The catalog's rules: admin writes and stock for orders (the cached reads are in `queries`).

Every write invalidates the cache after its transaction commits (the namespace of the product
and that of the lists), so the very next read sees it. Orders take and give back stock through
this service, which is what keeps the cached stock never older than the last order.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from app.core.cache import Cache
from app.core.database import after_commit
from app.core.logging import get_logger
from app.features.products.errors import (
    InsufficientStockError,
    ProductNotFoundError,
    ProductUnavailableError,
)
from app.features.products.media import image_out
from app.features.products.models import Product, ProductImage
from app.features.products.queries import LIST_NAMESPACE, product_namespace
from app.features.products.repository import ImageRepository, ProductRepository, StockRow
from app.features.products.schemas import ProductCreate, ProductOut, ProductUpdate

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class StockLine:
    product_id: uuid.UUID
    quantity: int


class ProductService:
    def __init__(
        self,
        session: AsyncSession,
        cache: Cache,
        *,
        currency: str,
        cache_ttl: int = 60,
        media_base_url: str = "",
    ) -> None:
        self.session = session
        self.repository = ProductRepository(session)
        self.images = ImageRepository(session)
        self.cache = cache
        self.currency = currency
        self.cache_ttl = cache_ttl
        self.media_base_url = media_base_url

    def to_out(self, product: Product, images: Sequence[ProductImage] = ()) -> ProductOut:
        """The product on the wire, with its images (by position)."""
        return ProductOut(
            id=product.id,
            sku=product.sku,
            name=product.name,
            description=product.description,
            price_cents=product.price_cents,
            currency=self.currency,
            stock=product.stock,
            is_active=product.is_active,
            images=[image_out(image, self.media_base_url) for image in images],
            created_at=product.created_at,
            updated_at=product.updated_at,
        )

    def _invalidate_after_commit(self, product_ids: Sequence[uuid.UUID]) -> None:
        namespaces = [LIST_NAMESPACE, *(product_namespace(pid) for pid in product_ids)]

        async def invalidate() -> None:
            await self.cache.invalidate(namespaces)

        after_commit(self.session, invalidate)

    async def out(self, product: Product) -> ProductOut:
        """ProductOut of a product just written, with its images as they are now."""
        images = (await self.images.of_products([product.id]))[product.id]
        return self.to_out(product, images)

    async def get(self, product_id: uuid.UUID) -> Product:
        product = await self.repository.get(product_id)
        if product is None:
            raise ProductNotFoundError(product_id)
        return product

    # Admin writes ------------------------------------------------------------------------

    async def create(self, data: ProductCreate) -> Product:
        product = await self.repository.add(Product(**data.model_dump()))
        self._invalidate_after_commit([product.id])
        log.info("product.created", product_id=str(product.id), sku=product.sku)
        return product

    async def update(self, product_id: uuid.UUID, data: ProductUpdate) -> Product:
        product = await self.get(product_id)
        changes = data.model_dump(exclude_unset=True)
        for field, value in changes.items():
            setattr(product, field, value)
        if changes:
            await self.repository.flush()
            self._invalidate_after_commit([product.id])
        log.info("product.updated", product_id=str(product.id), fields=sorted(changes))
        return product

    async def deactivate(self, product_id: uuid.UUID) -> None:
        product = await self.get(product_id)
        if product.is_active:
            product.is_active = False
            await self.repository.flush()
            self._invalidate_after_commit([product.id])
        log.info("product.deactivated", product_id=str(product.id))

    # Stock, for orders -------------------------------------------------------------------

    async def take_stock(self, lines: Sequence[StockLine]) -> list[StockRow]:
        """Take every line's quantity, or raise having written nothing; returns each line's
        product (price, sku, name) as it was when taken, in line order.

        One statement locks the rows (in product id order, so two orders of the same products
        cannot deadlock), checks them while locked and takes the stock only if every line can
        have it. A refusal names, from the rows it read: unknown or inactive products with each
        line's loc (422), then the first line asking for more than is left (409).
        """
        wanted: dict[uuid.UUID, int] = {}
        for line in lines:
            wanted[line.product_id] = wanted.get(line.product_id, 0) + line.quantity
        found, taken = await self.repository.take_stock(wanted)
        unavailable = [
            index
            for index, line in enumerate(lines)
            if (product := found.get(line.product_id)) is None or not product.is_active
        ]
        if unavailable:
            raise ProductUnavailableError(unavailable)
        for line in lines:
            product = found[line.product_id]
            if product.stock < wanted[line.product_id]:
                raise InsufficientStockError(product.id, wanted[line.product_id], product.stock)
        if taken != len(wanted):  # pragma: no cover - every row was locked and checked
            raise RuntimeError(f"took stock of {taken} products, expected {len(wanted)}")
        self._invalidate_after_commit(list(wanted))
        return [found[line.product_id] for line in lines]

    async def give_back_stock(self, lines: Sequence[StockLine]) -> None:
        """Return the lines' quantities to stock (a cancelled order), whatever the product's
        state now; in product id order like `take_stock`."""
        for line in sorted(lines, key=lambda line: line.product_id):
            await self.repository.add_stock(line.product_id, line.quantity)
        self._invalidate_after_commit([line.product_id for line in lines])
