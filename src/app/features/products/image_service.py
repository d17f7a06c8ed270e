"""Product images: upload, read, reorder, delete. The bytes live in the object store, the rows here.

The upload path, in order: the form is read under its limit (`uploads.py`); Pillow judges and
strips the bytes in a worker thread (`images.py`); the original goes to the store under a key
nobody can guess; then one transaction takes the product's image lock, counts (at most 10), writes
the row at the next position and queues the variants job in the outbox. When anything after the
store's write fails (a full product, the database, a cancelled request) the object is deleted
again before the error is answered, so a failed upload leaves no object behind. (Only a process
killed between the two steps, or a store that fails that delete too, can leave one; it is logged
as `image.orphan_left` with its key.)

Every change invalidates the product's cache entries once committed, as do the worker's
`ready`/`failed` updates (`tasks.py`), so a product read never shows a stale image list.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.core.cache import Cache
from app.core.database import after_commit, session_scope
from app.core.logging import get_logger
from app.core.outbox import enqueue
from app.core.storage import ObjectStore, StorageUnavailableError
from app.features.products.errors import (
    ImageFileInvalidError,
    ImageNotFoundError,
    ImagePositionError,
    NotAnImageError,
    ProductNotFoundError,
    TooManyImagesError,
)
from app.features.products.media import image_out, object_keys
from app.features.products.models import MAX_IMAGES_PER_PRODUCT, ImageStatus, ProductImage
from app.features.products.queries import LIST_NAMESPACE, product_namespace
from app.features.products.repository import ImageRepository, ProductRepository
from app.features.products.schemas import ImageOut, ImageUpdate
from app.features.products.uploads import ImageForm

if TYPE_CHECKING:
    from app.features.products.images import StrippedImage

log = get_logger(__name__)

MAKE_VARIANTS_JOB = "make_image_variants"
DELETE_OBJECTS_JOB = "delete_image_objects"


def invalidate_after_commit(session: AsyncSession, cache: Cache, product_id: uuid.UUID) -> None:
    namespaces = [LIST_NAMESPACE, product_namespace(product_id)]

    async def invalidate() -> None:
        await cache.invalidate(namespaces)

    after_commit(session, invalidate)


async def _strip(data: bytes, limiter: anyio.CapacityLimiter) -> StrippedImage:
    # Pillow is imported on the first upload, not by every process that serves the API.
    from app.features.products import images

    try:
        return await anyio.to_thread.run_sync(images.strip, data, limiter=limiter)
    except images.NotAnImageError:
        raise NotAnImageError from None
    except images.TooManyPixelsError:
        raise ImageFileInvalidError(
            f"The image is over {images.MAX_PIXELS} pixels (width x height)", "too_many_pixels"
        ) from None
    except images.UndecodableImageError:
        raise ImageFileInvalidError(
            "The image's pixels cannot be decoded", "image_undecodable"
        ) from None


class ImageService:
    def __init__(
        self,
        session_factory: async_sessionmaker[AsyncSession],
        cache: Cache,
        store: ObjectStore | None,
        *,
        media_base_url: str,
        limiter: anyio.CapacityLimiter,
    ) -> None:
        self.session_factory = session_factory
        self.cache = cache
        self._store = store
        self.media_base_url = media_base_url
        self.limiter = limiter

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            raise StorageUnavailableError("No object store is configured (APP_STORAGE_URL)")
        return self._store

    def to_out(self, image: ProductImage) -> ImageOut:
        return image_out(image, self.media_base_url)

    async def _check_room(self, product_id: uuid.UUID) -> None:
        """404 or 409 before any CPU or storage work (checked again under the lock)."""
        async with session_scope(self.session_factory) as session:
            if await ProductRepository(session).get(product_id) is None:
                raise ProductNotFoundError(product_id)
            if await ImageRepository(session).count(product_id) >= MAX_IMAGES_PER_PRODUCT:
                raise TooManyImagesError(product_id, MAX_IMAGES_PER_PRODUCT)

    async def upload(self, product_id: uuid.UUID, form: ImageForm) -> ProductImage:
        store = self.store
        await self._check_room(product_id)
        stripped = await _strip(form.file, self.limiter)
        key = f"products/{product_id}/{secrets.token_urlsafe(24)}.{stripped.extension}"
        await store.put(key, stripped.data, stripped.content_type)
        try:
            async with session_scope(self.session_factory) as session:
                repository = ImageRepository(session)
                await repository.lock_product(product_id)
                count = await repository.count(product_id)
                if count >= MAX_IMAGES_PER_PRODUCT:
                    raise TooManyImagesError(product_id, MAX_IMAGES_PER_PRODUCT)
                image = await repository.add(
                    ProductImage(
                        product_id=product_id,
                        object_key=key,
                        content_type=stripped.content_type,
                        width=stripped.width,
                        height=stripped.height,
                        bytes=len(stripped.data),
                        alt_text=form.alt_text,
                        position=count,
                        status=ImageStatus.processing,
                    )
                )
                await enqueue(session, MAKE_VARIANTS_JOB, {"image_id": str(image.id)})
                invalidate_after_commit(session, self.cache, product_id)
        except BaseException:
            # Shielded: a cancelled request still takes its object back out.
            await asyncio.shield(self._discard(store, key))
            raise
        log.info(
            "image.uploaded",
            product_id=str(product_id),
            image_id=str(image.id),
            content_type=image.content_type,
            bytes=image.bytes,
        )
        return image

    async def _discard(self, store: ObjectStore, key: str) -> None:
        try:
            await store.delete([key])
        except Exception as exc:
            log.error("image.orphan_left", key=key, error=type(exc).__name__)

    async def get(
        self, session: AsyncSession, product_id: uuid.UUID, image_id: uuid.UUID, *, admin: bool
    ) -> ProductImage:
        product = await ProductRepository(session).get(product_id)
        if product is None or (not product.is_active and not admin):
            raise ImageNotFoundError(image_id)
        image = await ImageRepository(session).get(product_id, image_id)
        if image is None:
            raise ImageNotFoundError(image_id)
        return image

    async def update(
        self,
        session: AsyncSession,
        product_id: uuid.UUID,
        image_id: uuid.UUID,
        data: ImageUpdate,
    ) -> ProductImage:
        repository = ImageRepository(session)
        await repository.lock_product(product_id)
        image = await repository.get(product_id, image_id, for_update=True)
        if image is None:
            raise ImageNotFoundError(image_id)
        changes = data.model_fields_set
        if "position" in changes and data.position is not None:
            count = await repository.count(product_id)
            if not 0 <= data.position < count:
                raise ImagePositionError(data.position, count)
            await repository.move(image, data.position)
        if "alt_text" in changes:
            image.alt_text = data.alt_text or None
            await session.flush()
        if changes:
            invalidate_after_commit(session, self.cache, product_id)
        log.info("image.updated", image_id=str(image_id), fields=sorted(changes))
        return image

    async def delete(
        self, session: AsyncSession, product_id: uuid.UUID, image_id: uuid.UUID
    ) -> None:
        """Delete the row now (closing the gap in positions) and its objects in the worker,
        which retries until the store has let them go."""
        repository = ImageRepository(session)
        await repository.lock_product(product_id)
        image = await repository.get(product_id, image_id, for_update=True)
        if image is None:
            raise ImageNotFoundError(image_id)
        keys = object_keys(image)
        await repository.delete(image)
        await enqueue(session, DELETE_OBJECTS_JOB, {"keys": keys})
        invalidate_after_commit(session, self.cache, product_id)
        log.info("image.deleted", product_id=str(product_id), image_id=str(image_id))

    async def images_of(
        self, session: AsyncSession, product_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, list[ProductImage]]:
        return await ImageRepository(session).of_products(product_ids)
