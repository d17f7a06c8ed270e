"""The object store: one async S3 client for MinIO, the embedded server of `saas dev` and any S3.

`APP_STORAGE_URL` names the bucket and where it lives: `s3://bucket?endpoint=http://...&region=...`
(no `endpoint`: AWS itself). Credentials come from `APP_STORAGE_ACCESS_KEY` and
`APP_STORAGE_SECRET_KEY`, or when those are unset from the standard AWS chain (environment, profile,
instance role). Objects are public through `APP_MEDIA_BASE_URL` (a CDN or the bucket itself): the
app only writes and deletes them and builds their URLs; it never serves their bytes.

Every call is aiobotocore's: non-blocking, with short timeouts and no retry storm. A failure to
reach the store is a `StorageUnavailableError` (503 at the edge).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

from app.config import Settings, StorageLocation
from app.core.errors import ServiceUnavailableError
from app.core.logging import get_logger

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

log = get_logger(__name__)


class StorageUnavailableError(ServiceUnavailableError):
    default_detail = "The object store is unavailable"


# aiobotocore and botocore (17.6 MB and 311 modules in a worker) are imported on first use, like
# the client itself: an API process that never touches an image does not carry them.


def _store_error(exc: BaseException) -> bool:
    """An error of a call to the store (botocore's, or the network's)."""
    from botocore.exceptions import BotoCoreError, ClientError

    return isinstance(exc, BotoCoreError | ClientError | OSError | TimeoutError)


def _status(exc: BaseException) -> int:
    """The HTTP status of the store's answer to a failed call; 0 when it gave none."""
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return 0
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _unavailable(exc: BaseException) -> bool:
    """A failure of the store itself (unreachable, timing out, 5xx), not of our request."""
    from botocore.exceptions import BotoCoreError, ClientError

    if isinstance(exc, ClientError):
        return _status(exc) >= 500
    return isinstance(exc, BotoCoreError | OSError | TimeoutError)


class ObjectStore:
    """Put, get and delete objects of one bucket, and their public URLs.

    The S3 client is made on first use, not at start-up: a process that never touches an image
    pays nothing, and botocore's model files (half a second of JSON parsing) are read in a worker
    thread, never on the event loop.
    """

    def __init__(
        self, options: dict[str, Any], location: StorageLocation, media_base_url: str
    ) -> None:
        self._options = options
        self.location = location
        self.media_base_url = media_base_url.rstrip("/")
        self._client: S3Client | None = None
        self._lock = asyncio.Lock()
        self._stack = AsyncExitStack()

    @property
    def bucket(self) -> str:
        return self.location.bucket

    def url(self, key: str) -> str:
        return f"{self.media_base_url}/{key}"

    async def s3(self) -> S3Client:
        """The client, made once."""
        client = self._client
        if client is None:
            async with self._lock:
                client = self._client
                if client is None:
                    from aiobotocore.config import AioConfig
                    from aiobotocore.session import get_session

                    session = get_session()
                    await asyncio.to_thread(_load_models, session)
                    options = dict(self._options)
                    options["config"] = AioConfig(**options["config"])
                    creating = session.create_client("s3", **options)
                    made: S3Client = await self._stack.enter_async_context(creating)
                    self._client = client = made
        return client

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None

    async def put(self, key: str, data: bytes, content_type: str) -> None:
        try:
            client = await self.s3()
            await client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=data,
                ContentType=content_type,
                # Keys are never reused: a CDN and browsers may keep the bytes for good.
                CacheControl="public, max-age=31536000, immutable",
            )
        except Exception as exc:
            if not _store_error(exc):
                raise
            log.warning("storage.put_failed", key=key, error=type(exc).__name__)
            if _unavailable(exc):
                raise StorageUnavailableError from exc
            raise

    async def get(self, key: str) -> bytes:
        try:
            client = await self.s3()
            response = await client.get_object(Bucket=self.bucket, Key=key)
            async with response["Body"] as body:
                data: bytes = await body.read()
        except Exception as exc:
            if _unavailable(exc):
                raise StorageUnavailableError from exc
            raise
        return data

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete the objects; a key already gone is fine (S3 answers the same)."""
        if not keys:
            return
        try:
            client = await self.s3()
            response = await client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": key} for key in keys], "Quiet": True},
            )
        except Exception as exc:
            if _unavailable(exc):
                raise StorageUnavailableError from exc
            raise
        errors = response.get("Errors") or []
        if errors:
            codes = sorted({str(error.get("Code")) for error in errors})
            raise StorageUnavailableError(f"the object store kept {len(errors)} objects: {codes}")

    async def exists(self, key: str) -> bool:
        client = await self.s3()
        try:
            await client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _status(exc) == 404:
                return False
            raise
        return True

    async def ping(self) -> None:
        client = await self.s3()
        await client.head_bucket(Bucket=self.bucket)


def _load_models(session: Any) -> None:
    """Read the S3 model and endpoint files into the session's cache (blocking file reads and
    JSON parsing, so in a thread); making the client then takes milliseconds."""
    loader = session.get_component("data_loader")
    for name in ("service-2", "endpoint-rule-set-1"):
        loader.load_service_model("s3", name)
    for name in ("endpoints", "partitions", "sdk-default-configuration", "_retry"):
        loader.load_data(name)


def client_options(settings: Settings, location: StorageLocation) -> dict[str, Any]:
    """The client's keyword arguments; `config` holds `AioConfig`'s (made with the client)."""
    options: dict[str, Any] = {
        "region_name": location.region,
        "config": {
            "connect_timeout": settings.storage_timeout_seconds,
            "read_timeout": settings.storage_timeout_seconds,
            # One quick retry for a dropped connection; an outage is a 503, not a long wait.
            "retries": {"max_attempts": 2, "mode": "standard"},
            # Path style works with every S3-compatible server and with dotted bucket names.
            "s3": {"addressing_style": "path" if location.endpoint else "auto"},
            # MinIO and older S3-compatible servers reject the newer default checksums.
            "request_checksum_calculation": "when_required",
            "response_checksum_validation": "when_required",
        },
    }
    if location.endpoint:
        options["endpoint_url"] = location.endpoint
    if settings.storage_access_key and settings.storage_secret_key:
        options["aws_access_key_id"] = settings.storage_access_key
        options["aws_secret_access_key"] = settings.storage_secret_key.get_secret_value()
    return options


@asynccontextmanager
async def open_object_store(settings: Settings) -> AsyncIterator[ObjectStore | None]:
    """The store of `APP_STORAGE_URL` for the life of the app or worker; None when unset (a
    development process without one: image uploads then answer 503)."""
    if not settings.storage_url:
        yield None
        return
    location = StorageLocation.parse(settings.storage_url)
    store = ObjectStore(
        client_options(settings, location), location, settings.public_media_base_url
    )
    try:
        yield store
    finally:
        await store.close()
