"""Where an image's objects are and how the API shows them (URLs from APP_MEDIA_BASE_URL)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from app.features.products.models import ProductImage
from app.features.products.schemas import ImageOut, VariantOut

# The WebP variants the worker makes: at most this many pixels on the long side.
VARIANTS: dict[str, int] = {"thumb": 256, "medium": 1024}
VARIANT_CONTENT_TYPE = "image/webp"


def variant_key(object_key: str, name: str) -> str:
    """`products/<id>/<token>.png` -> `products/<id>/<token>-thumb.webp`."""
    stem = object_key.rsplit(".", 1)[0]
    return f"{stem}-{name}.webp"


def object_keys(image: ProductImage) -> list[str]:
    """Every object an image may have in the store: its original and each variant."""
    return [image.object_key, *(variant_key(image.object_key, name) for name in VARIANTS)]


def _variants(stored: Mapping[str, Any], media_base_url: str) -> Any:
    return {
        name: VariantOut(
            url=f"{media_base_url}/{variant['key']}",
            width=variant["width"],
            height=variant["height"],
        )
        for name, variant in stored.items()
        if name in VARIANTS
    }


def image_out(image: ProductImage, media_base_url: str) -> ImageOut:
    variants = _variants(image.variants or {}, media_base_url)
    return ImageOut(
        id=image.id,
        url=f"{media_base_url}/{image.object_key}",
        content_type=image.content_type,
        width=image.width,
        height=image.height,
        bytes=image.bytes,
        alt_text=image.alt_text,
        position=image.position,
        status=image.status,
        variants=variants,
    )


def image_out_row(row: Mapping[str, Any], media_base_url: str) -> ImageOut:
    """ImageOut from a row of the read side (`variants` may come back as JSON text)."""
    variants = row["variants"]
    if isinstance(variants, str):
        variants = json.loads(variants)
    return ImageOut(
        id=row["id"],
        url=f"{media_base_url}/{row['object_key']}",
        content_type=row["content_type"],
        width=row["width"],
        height=row["height"],
        bytes=row["bytes"],
        alt_text=row["alt_text"],
        position=row["position"],
        status=row["status"],
        variants=_variants(variants or {}, media_base_url),
    )
