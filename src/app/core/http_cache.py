"""HTTP validators for cached public reads: strong ETags, `If-None-Match`, `Cache-Control`.

The ETag is a hash of the JSON bytes, computed once when the answer is stored in the cache and
stored in front of them (`stamp`), so a hit, and a 304, never re-serialise nor re-hash. Since the
tag follows the bytes, it changes with every write that changes the answer (the cache is
invalidated after each) and with nothing else.

The tag is of the JSON before content coding: a gzip-coded response carries it with a `-gz`
suffix (the compression middleware adds it), and `If-None-Match` matches either form, weak or
strong (RFC 9110 13.1.2: `If-None-Match` uses the weak comparison).
"""

from __future__ import annotations

import hashlib

from starlette.responses import Response
from starlette.types import Scope

from app.core.middleware import GZIP_SUFFIX, gzip_applies, header_value

ETAG_LENGTH = 32  # hex digits of a 128-bit BLAKE2b digest
VARY = "Authorization, Accept-Encoding"
PRIVATE = "private, no-cache"
_JSON = "application/json"


def etag_of(body: bytes) -> bytes:
    """The opaque tag of `body` (ASCII hex, `ETAG_LENGTH` long, without quotes)."""
    return hashlib.blake2b(body, digest_size=16).hexdigest().encode()


def stamp(body: bytes) -> bytes:
    """`body` with its tag in front: the form stored in the cache."""
    return etag_of(body) + body


def unstamp(entry: bytes) -> tuple[str, bytes]:
    """The tag and the body of a stamped entry."""
    return entry[:ETAG_LENGTH].decode("ascii"), entry[ETAG_LENGTH:]


def public_cache_control(max_age: int) -> str:
    """Shared caches may keep it; with no `max_age` they must revalidate on every use."""
    return f"public, max-age={max_age}" if max_age > 0 else "public, no-cache"


def none_match(header: str | None, etag: str) -> bool:
    """Whether an `If-None-Match` value matches `etag` (either form, weak or strong) or is `*`."""
    if not header or (etag not in header and "*" not in header):
        return False
    for candidate in header.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate in (f'"{etag}"', f'"{etag}{GZIP_SUFFIX}"'):
            return True
    return False


def conditional_json(scope: Scope, etag: str, body: bytes, *, cache_control: str) -> Response:
    """The JSON `body` with its validators, or a 304 without a body when the client already
    has it (`If-None-Match`).

    A 304 carries the ETag the 200 would have had: with the gzip suffix when the client takes
    gzip and the body is large enough to be compressed.
    """
    headers = {"ETag": f'"{etag}"', "Cache-Control": cache_control, "Vary": VARY}
    if none_match(header_value(scope, "if-none-match"), etag):
        if gzip_applies(scope, len(body)):
            headers["ETag"] = f'"{etag}{GZIP_SUFFIX}"'
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=_JSON, headers=headers)
