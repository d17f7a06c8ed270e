"""Where an image's objects are and how the API shows them (URLs from APP_MEDIA_BASE_URL)."""

from __future__ import annotations

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


def image_out(image: ProductImage, media_base_url: str) -> ImageOut:
    variants = {
        name: VariantOut(
            url=f"{media_base_url}/{variant['key']}",
            width=variant["width"],
            height=variant["height"],
        )
        for name, variant in (image.variants or {}).items()
        if name in VARIANTS
    }
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
