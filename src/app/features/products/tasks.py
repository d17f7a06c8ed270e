"""The catalog's background jobs: an image's variants, and removing a deleted image's objects.

Both arrive through the outbox (queued in the transaction that wrote the row, run after it
commits) and are idempotent: ARQ delivers at least once.
"""

from __future__ import annotations

import uuid
from typing import Any

import anyio
from arq import Retry

from app.config import Settings
from app.core.cache import Cache
from app.core.database import session_scope
from app.core.logging import get_logger
from app.core.storage import ObjectStore
from app.features.products.media import VARIANT_CONTENT_TYPE, variant_key
from app.features.products.queries import LIST_NAMESPACE, product_namespace
from app.features.products.repository import ImageRepository

log = get_logger(__name__)

# Deleting objects is retried this many times, backing off to once every ten minutes: about
# a day of store outage before the job gives up (logged as `image.objects_left`).
DELETE_MAX_TRIES = 150
_MAX_BACKOFF_SECONDS = 600


def _backoff(tries: int) -> float:
    return float(min(_MAX_BACKOFF_SECONDS, 2**tries))


async def _invalidate(ctx: dict[str, Any], product_id: uuid.UUID) -> None:
    await Cache(ctx["redis"]).invalidate([LIST_NAMESPACE, product_namespace(product_id)])


async def make_image_variants(ctx: dict[str, Any], image_id: str) -> str:
    """Make the `thumb` and `medium` WebP variants of an uploaded image, then mark it `ready`
    (or `failed` once the retries are spent)."""
    from app.features.products import images  # Pillow, only where images are made

    settings: Settings = ctx["settings"]
    store: ObjectStore = ctx["object_store"]
    factory = ctx["session_factory"]
    image_uuid = uuid.UUID(image_id)
    async with session_scope(factory) as session:
        image = await ImageRepository(session).get_by_id(image_uuid)
    if image is None:
        return "gone"
    if image.status != "processing":
        return image.status
    try:
        original = await store.get(image.object_key)
        variants = await anyio.to_thread.run_sync(images.make_variants, original)
        made: dict[str, Any] = {}
        for variant in variants:
            key = variant_key(image.object_key, variant.name)
            await store.put(key, variant.data, VARIANT_CONTENT_TYPE)
            made[variant.name] = {"key": key, "width": variant.width, "height": variant.height}
    except Exception as exc:
        tries = int(ctx.get("job_try", 1))
        if tries < settings.image_max_tries:
            log.warning(
                "image.variants_retry", image_id=image_id, tries=tries, error=type(exc).__name__
            )
            raise Retry(defer=_backoff(tries)) from exc
        async with session_scope(factory) as session:
            product_id = await ImageRepository(session).mark_failed(image_uuid)
        log.error("image.variants_failed", image_id=image_id, error=type(exc).__name__)
        if product_id is not None:
            await _invalidate(ctx, product_id)
        return "failed"
    async with session_scope(factory) as session:
        repository = ImageRepository(session)
        product_id = await repository.mark_ready(image_uuid, made)
        still_there = product_id is not None or await repository.get_by_id(image_uuid) is not None
    if not still_there:
        # Deleted while its variants were being made: the delete job knew the keys, but may
        # have run before they existed.
        await store.delete([item["key"] for item in made.values()])
        return "gone"
    if product_id is not None:
        await _invalidate(ctx, product_id)
        log.info("image.ready", image_id=image_id, product_id=str(product_id))
    return "ready"


async def delete_image_objects(ctx: dict[str, Any], keys: list[str]) -> int:
    """Remove a deleted image's objects from the store, retrying until it lets them go."""
    store: ObjectStore = ctx["object_store"]
    try:
        await store.delete(keys)
    except Exception as exc:
        tries = int(ctx.get("job_try", 1))
        if tries < DELETE_MAX_TRIES:
            log.warning("image.objects_delete_retry", tries=tries, error=type(exc).__name__)
            raise Retry(defer=_backoff(tries)) from exc
        log.error("image.objects_left", keys=keys, error=type(exc).__name__)
        return 0
    log.info("image.objects_deleted", count=len(keys))
    return len(keys)
