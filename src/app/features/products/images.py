"""What Pillow does with an uploaded image: judge it, strip it, and make its variants.

Plain synchronous functions: CPU work that callers run in a worker thread, never on the event
loop. The type is decided by Pillow opening the bytes (JPEG, PNG or WebP only), never by a file
name or a declared Content-Type. The size in pixels is read from the header and refused before a
single pixel is decoded; Pillow's own decompression-bomb guard is set to the same limit and turned
into an error, so a lying header cannot get past it either.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from app.features.products.media import VARIANTS

MAX_PIXELS = 40_000_000
# Pillow warns past MAX_IMAGE_PIXELS and raises past twice that: both are refusals here.
Image.MAX_IMAGE_PIXELS = MAX_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

FORMATS: dict[str, tuple[str, str]] = {
    "JPEG": ("image/jpeg", "jpg"),
    "PNG": ("image/png", "png"),
    "WEBP": ("image/webp", "webp"),
}
_JPEG_QUALITY = 90
_WEBP_QUALITY = 85
# What survives the re-encoding: how to show the pixels, nothing about who, where or when.
_KEPT_INFO = ("transparency",)


class ImageRefusedError(Exception):
    """Base of the reasons an upload is not an image we keep."""


class NotAnImageError(ImageRefusedError):
    """Not JPEG, PNG or WebP, judged by the bytes."""


class TooManyPixelsError(ImageRefusedError):
    def __init__(self, width: int | None = None, height: int | None = None) -> None:
        self.width, self.height = width, height
        super().__init__(f"{width}x{height} is over {MAX_PIXELS} pixels")


class UndecodableImageError(ImageRefusedError):
    """The header is an image's but the pixels cannot be decoded (truncated, corrupt)."""


@dataclass(frozen=True, slots=True)
class StrippedImage:
    data: bytes
    content_type: str
    extension: str
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    data: bytes
    width: int
    height: int


def _open(data: bytes) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data), formats=list(FORMATS))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixelsError from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise NotAnImageError from None
    width, height = image.size
    if width * height > MAX_PIXELS:  # the header alone: nothing is decoded yet
        raise TooManyPixelsError(width, height)
    return image


def strip(data: bytes) -> StrippedImage:
    """The upload re-encoded in its own format without metadata, EXIF orientation applied.

    Raises NotAnImageError, TooManyPixelsError or UndecodableImageError.
    """
    image = _open(data)
    kind = image.format or ""
    content_type, extension = FORMATS[kind]
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooManyPixelsError(*image.size) from None
    except (OSError, SyntaxError, ValueError, EOFError):
        raise UndecodableImageError from None
    icc_profile = image.info.get("icc_profile")
    upright.info = {key: upright.info[key] for key in _KEPT_INFO if key in upright.info}
    out = io.BytesIO()
    options: dict[str, object] = {}
    if icc_profile:
        options["icc_profile"] = icc_profile  # colour, not metadata about the picture
    if kind == "JPEG":
        if upright.mode not in ("L", "RGB", "CMYK"):
            upright = upright.convert("RGB")
        upright.save(out, "JPEG", quality=_JPEG_QUALITY, **options)
    elif kind == "PNG":
        upright.save(out, "PNG", **options)
    else:
        if upright.mode not in ("RGB", "RGBA"):
            upright = upright.convert("RGBA" if _has_alpha(upright) else "RGB")
        upright.save(out, "WEBP", quality=_WEBP_QUALITY, **options)
    return StrippedImage(
        data=out.getvalue(),
        content_type=content_type,
        extension=extension,
        width=upright.width,
        height=upright.height,
    )


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def make_variants(data: bytes) -> list[Variant]:
    """The WebP variants of a stored original, each at most its size on the long side (never
    enlarged)."""
    image = _open(data)
    image.load()
    image = image.convert("RGBA" if _has_alpha(image) else "RGB")
    variants = []
    for name, size in VARIANTS.items():
        copy = image.copy()
        copy.thumbnail((size, size), Image.Resampling.LANCZOS)
        out = io.BytesIO()
        copy.save(out, "WEBP", quality=_WEBP_QUALITY)
        variants.append(
            Variant(name=name, data=out.getvalue(), width=copy.width, height=copy.height)
        )
    return variants
