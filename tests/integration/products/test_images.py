"""Product images against a real S3-compatible server (moto's, or APP_TEST_STORAGE_URL).

Upload, the limits and refusals of API.md's table, metadata stripping, the worker's variants,
reorder and delete, and an object store outage in the middle of an upload.
"""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import httpx
import pytest
from httpx import AsyncClient
from PIL import Image

from app.config import Settings
from app.core.storage import ObjectStore, open_object_store
from app.dev import EmbeddedS3
from app.features.products.uploads import MAX_BODY_BYTES, MAX_FILE_BYTES
from app.features.users.models import Role
from tests.conftest import DrainJobs
from tests.integration.catalog import Login, ProductFactory
from tests.problems import assert_problem

PRODUCTS = "/api/v1/products"


def images_url(product_id: Any) -> str:
    return f"{PRODUCTS}/{product_id}/images"


def png(width: int = 64, height: int = 48, mode: str = "RGB", color: Any = (200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new(mode, (width, height), color).save(out, "PNG")
    return out.getvalue()


def jpeg_with_exif(width: int = 40, height: int = 20, orientation: int = 6) -> bytes:
    """A JPEG with an orientation tag, a camera, a date and a GPS position."""
    image = Image.new("RGB", (width, height), (10, 120, 240))
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: 6 = rotate 90 degrees clockwise to view
    exif[0x010F] = "SpyCam Inc."  # Make
    exif[0x0132] = "2026:12:06 10:00:00"  # DateTime
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 24.0)
    gps[3] = "E"
    gps[4] = (2.0, 21.0, 3.0)
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif.tobytes(), quality=90)
    return out.getvalue()


def upload_files(data: bytes, filename: str, content_type: str) -> dict[str, Any]:
    return {"file": (filename, data, content_type)}


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[ObjectStore]:
    async with open_object_store(settings) as opened:
        assert opened is not None
        yield opened


async def stored_keys(store: ObjectStore, product_id: Any) -> list[str]:
    client = await store.s3()
    response = await client.list_objects_v2(Bucket=store.bucket, Prefix=f"products/{product_id}/")
    return sorted(item["Key"] for item in response.get("Contents", []))


async def public_get(url: str) -> httpx.Response:
    """A plain GET, no auth, as a browser or a CDN would fetch the image."""
    async with httpx.AsyncClient() as plain:
        return await plain.get(url)


Upload = Callable[..., Awaitable[httpx.Response]]


@pytest.fixture
def upload(client: AsyncClient) -> Upload:
    async def send(
        product_id: Any,
        headers: dict[str, str],
        data: bytes | None = None,
        *,
        filename: str = "photo.png",
        content_type: str = "image/png",
        alt_text: str | None = None,
    ) -> httpx.Response:
        form = {"alt_text": alt_text} if alt_text is not None else None
        return await client.post(
            images_url(product_id),
            files=upload_files(png() if data is None else data, filename, content_type),
            data=form,
            headers=headers,
        )

    return send


async def image_rows(db_conn: asyncpg.Connection, product_id: Any) -> list[asyncpg.Record]:
    return await db_conn.fetch(
        "SELECT * FROM product_images WHERE product_id = $1 ORDER BY position",
        uuid.UUID(str(product_id)),
    )


class TestUpload:
    async def test_png_named_jpg_is_stored_as_png_and_served_at_its_url(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        store: ObjectStore,
        db_conn: asyncpg.Connection,
        settings: Settings,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        response = await upload(
            product.id,
            admin,
            png(64, 48),
            filename="holiday.jpg",
            content_type="image/jpeg",
            alt_text="  A red square  ",
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert response.headers["location"] == f"{images_url(product.id)}/{body['id']}"
        assert body["content_type"] == "image/png"
        assert (body["width"], body["height"]) == (64, 48)
        assert body["alt_text"] == "A red square"
        assert body["position"] == 0
        assert body["status"] == "processing"
        assert body["variants"] == {}
        base = settings.public_media_base_url
        assert body["url"].startswith(f"{base}/products/{product.id}/")
        assert body["url"].endswith(".png")
        assert "holiday" not in body["url"]
        # The stored original answers a plain GET with its bytes and type.
        served = await public_get(body["url"])
        assert served.status_code == 200
        assert served.headers["content-type"] == "image/png"
        assert len(served.content) == body["bytes"]
        assert Image.open(io.BytesIO(served.content)).format == "PNG"
        rows = await image_rows(db_conn, product.id)
        assert [(row["status"], row["position"], row["bytes"]) for row in rows] == [
            ("processing", 0, body["bytes"])
        ]
        assert await stored_keys(store, product.id) == [body["url"].removeprefix(base + "/")]
        # The GET of the Location answers the same image.
        again = await client.get(response.headers["location"])
        assert again.status_code == 200
        assert again.json() == body

    async def test_keys_are_unguessable(
        self, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        first = (await upload(product.id, admin)).json()["url"]
        second = (await upload(product.id, admin)).json()["url"]
        token = first.rsplit("/", 1)[1].split(".")[0]
        assert len(token) >= 32
        assert first.rsplit("/", 1)[0] == second.rsplit("/", 1)[0]
        assert token not in second

    async def test_exif_and_gps_are_gone_and_orientation_is_applied(
        self,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        original = jpeg_with_exif(40, 20, orientation=6)
        assert b"SpyCam" in original
        assert Image.open(io.BytesIO(original)).getexif().get_ifd(0x8825)
        response = await upload(
            product.id, admin, original, filename="a.jpg", content_type="image/jpeg"
        )
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["content_type"] == "image/jpeg"
        # Rotated upright: 40x20 with orientation 6 is 20 wide and 40 high.
        assert (body["width"], body["height"]) == (20, 40)
        stored = (await public_get(body["url"])).content
        assert stored[:3] == b"\xff\xd8\xff"
        assert b"SpyCam" not in stored
        assert b"Exif" not in stored
        reopened = Image.open(io.BytesIO(stored))
        assert reopened.size == (20, 40)
        assert dict(reopened.getexif()) == {}
        assert len(stored) == body["bytes"]

    async def test_text_named_png_is_415(
        self,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        store: ObjectStore,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        response = await upload(product.id, admin, b"just some text\n" * 20, filename="x.png")
        assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")
        assert await image_rows(db_conn, product.id) == []
        assert await stored_keys(store, product.id) == []

    async def test_gif_is_415_though_pillow_reads_it(
        self, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        out = io.BytesIO()
        Image.new("P", (8, 8)).save(out, "GIF")
        response = await upload(product.id, admin, out.getvalue(), filename="x.gif")
        assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")

    async def test_fifty_megapixel_png_of_a_few_kb_is_refused_before_decoding(
        self, login: Login, make_product: ProductFactory, upload: Upload, store: ObjectStore
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        bomb = png(10_000, 5_000, mode="1", color=0)
        assert len(bomb) < 100_000
        response = await upload(product.id, admin, bomb)
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert [error["loc"] for error in body["errors"]] == [["body", "file"]]
        assert body["errors"][0]["type"] == "too_many_pixels"
        assert await stored_keys(store, product.id) == []

    async def test_forty_one_megapixels_is_refused_too(
        self, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        # Between Pillow's warning and its error: the header check refuses it all the same.
        product = await make_product()
        _, admin = await login(role=Role.admin)
        response = await upload(product.id, admin, png(8_200, 5_000, mode="1", color=0))
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"] == ["body", "file"]

    async def test_truncated_pixels_are_422_on_the_file(
        self, login: Login, make_product: ProductFactory, upload: Upload, store: ObjectStore
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        out = io.BytesIO()
        Image.effect_noise((200, 200), 64).convert("RGB").save(out, "JPEG")
        truncated = out.getvalue()[: len(out.getvalue()) // 2]
        response = await upload(product.id, admin, truncated, filename="a.jpg")
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"] == [
            {
                "loc": ["body", "file"],
                "msg": "The image's pixels cannot be decoded",
                "type": "image_undecodable",
            }
        ]
        assert await stored_keys(store, product.id) == []

    async def test_declared_content_length_over_the_limit_is_413_before_reading(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        pulled = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal pulled
            for _ in range(100):
                pulled += 65536
                yield b"x" * 65536

        headers = {
            **admin,
            "Content-Type": "multipart/form-data; boundary=abc",
            "Content-Length": str(MAX_BODY_BYTES + 1),
        }
        response = await client.post(images_url(product.id), content=body(), headers=headers)
        assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
        assert pulled == 0

    async def test_six_mib_stream_is_413_without_reading_it_all(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        store: ObjectStore,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        boundary = "----limit-test"
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="big.png"\r\nContent-Type: image/png\r\n\r\n'
        ).encode()
        tail = f"\r\n--{boundary}--\r\n".encode()
        chunk = 64 * 1024
        total = len(head) + 6 * 1024 * 1024 + len(tail)
        pulled = 0

        async def body() -> AsyncIterator[bytes]:
            # No Content-Length: the limit has to hold while the body streams in.
            nonlocal pulled
            pulled += len(head)
            yield head
            for _ in range(6 * 1024 * 1024 // chunk):
                pulled += chunk
                yield b"\x89" * chunk
            pulled += len(tail)
            yield tail

        response = await client.post(
            images_url(product.id),
            content=body(),
            headers={**admin, "Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        problem = assert_problem(response, 413, "PAYLOAD_TOO_LARGE")
        assert problem["max_bytes"] == MAX_FILE_BYTES
        assert pulled <= MAX_FILE_BYTES + 2 * chunk < total
        assert await image_rows(db_conn, product.id) == []
        assert await stored_keys(store, product.id) == []

    async def test_a_file_of_exactly_the_limit_passes_the_size_check(
        self, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        data = png(16, 16)
        padded = data + b"\0" * (MAX_FILE_BYTES - len(data))  # trailing bytes after IEND
        response = await upload(product.id, admin, padded)
        assert response.status_code == 201, response.text
        over = await upload(product.id, admin, padded + b"\0")
        assert_problem(over, 413, "PAYLOAD_TOO_LARGE")

    async def test_the_app_body_limit_does_not_apply_to_uploads(
        self, make_client: Any, login: Login, make_product: ProductFactory
    ) -> None:
        small = await make_client(max_body_bytes=1024)
        product = await make_product()
        _, admin = await login(role=Role.admin)
        response = await small.post(
            images_url(product.id),
            files=upload_files(png(300, 300, color=(1, 2, 3)) + b"\0" * 4000, "a.png", "x/y"),
            headers=admin,
        )
        assert response.status_code == 201, response.text
        other = await small.post(PRODUCTS, content=b"{" + b" " * 2000 + b"}", headers=admin)
        assert_problem(other, 413, "PAYLOAD_TOO_LARGE")

    @pytest.mark.parametrize(
        ("kwargs", "loc"),
        [
            ({"data": {"alt_text": "no file"}}, ["body", "file"]),
            ({"files": {"file": ("a.png", b"", "image/png")}}, ["body", "file"]),
            (
                {"files": {"file": ("a.png", png(), "image/png")}, "data": {"alt_text": "a" * 501}},
                ["body", "alt_text"],
            ),
            (
                {"files": {"file": ("a.png", png(), "image/png")}, "data": {"colour": "red"}},
                ["body", "colour"],
            ),
        ],
    )
    async def test_form_problems_are_422(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        kwargs: dict[str, Any],
        loc: list[str],
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        if "files" not in kwargs:
            # httpx sends a urlencoded form without files: force multipart.
            kwargs = {"files": {"alt_text": (None, "no file")}}
        response = await client.post(images_url(product.id), headers=admin, **kwargs)
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert [error["loc"] for error in body["errors"]] == [loc]

    async def test_json_body_is_415(
        self, client: AsyncClient, login: Login, make_product: ProductFactory
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        response = await client.post(images_url(product.id), json={"file": "x"}, headers=admin)
        assert_problem(response, 415, "UNSUPPORTED_MEDIA_TYPE")

    async def test_only_admins_upload(
        self, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product()
        _, user = await login()
        assert_problem(await upload(product.id, user), 403, "FORBIDDEN")
        assert_problem(await upload(product.id, {}), 401, "UNAUTHORIZED")

    async def test_unknown_product_is_404(self, login: Login, upload: Upload) -> None:
        _, admin = await login(role=Role.admin)
        assert_problem(await upload(uuid.uuid4(), admin), 404, "NOT_FOUND")


class TestImageLimit:
    async def test_eleventh_image_is_409(
        self,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        store: ObjectStore,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        for position in range(10):
            response = await upload(product.id, admin, png(8, 8))
            assert response.json()["position"] == position
        body = assert_problem(await upload(product.id, admin), 409, "TOO_MANY_IMAGES")
        assert body["limit"] == 10
        assert len(await image_rows(db_conn, product.id)) == 10
        assert len(await stored_keys(store, product.id)) == 10

    async def test_concurrent_uploads_never_pass_the_limit_nor_leave_objects(
        self,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        store: ObjectStore,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        for _ in range(8):
            assert (await upload(product.id, admin, png(8, 8))).status_code == 201
        responses = await asyncio.gather(
            *(upload(product.id, admin, png(20, 20)) for _ in range(5))
        )
        statuses = sorted(response.status_code for response in responses)
        assert statuses == [201, 201, 409, 409, 409]
        rows = await image_rows(db_conn, product.id)
        assert [row["position"] for row in rows] == list(range(10))
        # The refused uploads took their objects back out of the store.
        keys = await stored_keys(store, product.id)
        assert keys == sorted(row["object_key"] for row in rows)


class TestVariants:
    async def test_worker_makes_webp_variants_and_marks_ready(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        drain_jobs: DrainJobs,
        store: ObjectStore,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        large = (await upload(product.id, admin, png(2000, 1000))).json()
        small = (await upload(product.id, admin, png(300, 200))).json()
        await drain_jobs()
        ready = (await client.get(f"{images_url(product.id)}/{large['id']}")).json()
        assert ready["status"] == "ready"
        assert {name: (v["width"], v["height"]) for name, v in ready["variants"].items()} == {
            "thumb": (256, 128),
            "medium": (1024, 512),
        }
        for variant in ready["variants"].values():
            served = await public_get(variant["url"])
            assert served.status_code == 200
            assert served.headers["content-type"] == "image/webp"
            decoded = Image.open(io.BytesIO(served.content))
            assert decoded.format == "WEBP"
            assert decoded.size == (variant["width"], variant["height"])
        never_enlarged = (await client.get(f"{images_url(product.id)}/{small['id']}")).json()
        assert never_enlarged["variants"]["medium"]["width"] == 300
        assert never_enlarged["variants"]["thumb"]["width"] == 256
        assert len(await stored_keys(store, product.id)) == 6

    async def test_product_read_shows_images_by_position_and_never_stale(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        drain_jobs: DrainJobs,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        url = f"{PRODUCTS}/{product.id}"
        assert (await client.get(url)).json()["images"] == []  # now cached
        listed = await client.get(PRODUCTS)
        assert listed.json()["items"][0]["images"] == []
        first = (await upload(product.id, admin, png(10, 10))).json()
        second = (await upload(product.id, admin, png(12, 12))).json()
        shown = (await client.get(url)).json()["images"]
        assert [image["id"] for image in shown] == [first["id"], second["id"]]
        assert [image["status"] for image in shown] == ["processing", "processing"]
        await drain_jobs()
        shown = (await client.get(url)).json()["images"]
        assert [image["status"] for image in shown] == ["ready", "ready"]
        listed_images = (await client.get(PRODUCTS)).json()["items"][0]["images"]
        assert listed_images == shown

    async def test_image_whose_variants_cannot_be_made_ends_failed(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        store: ObjectStore,
        make_settings: Callable[..., Settings],
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        image = (await upload(product.id, admin)).json()
        # The original vanished from the store: the worker cannot read it, whatever it tries.
        await store.delete(await stored_keys(store, product.id))
        from app.worker import drain

        await drain(make_settings(image_max_tries=2))
        shown = (await client.get(f"{PRODUCTS}/{product.id}")).json()["images"]
        assert [(item["id"], item["status"]) for item in shown] == [(image["id"], "failed")]
        assert shown[0]["variants"] == {}


class TestChangeAndDelete:
    async def _three(
        self, product_id: Any, admin: dict[str, str], upload: Upload
    ) -> list[dict[str, Any]]:
        return [(await upload(product_id, admin, png(8 + index, 8))).json() for index in range(3)]

    async def test_moving_an_image_shifts_the_others(
        self, client: AsyncClient, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        a, b, c = await self._three(product.id, admin, upload)
        moved = await client.patch(
            f"{images_url(product.id)}/{c['id']}", json={"position": 0}, headers=admin
        )
        assert moved.status_code == 200, moved.text
        assert moved.json()["position"] == 0
        order = [i["id"] for i in (await client.get(f"{PRODUCTS}/{product.id}")).json()["images"]]
        assert order == [c["id"], a["id"], b["id"]]
        back = await client.patch(
            f"{images_url(product.id)}/{c['id']}", json={"position": 2}, headers=admin
        )
        assert back.json()["position"] == 2
        shown = (await client.get(f"{PRODUCTS}/{product.id}")).json()["images"]
        assert [(i["id"], i["position"]) for i in shown] == [
            (a["id"], 0),
            (b["id"], 1),
            (c["id"], 2),
        ]

    @pytest.mark.parametrize("position", [3, -1])
    async def test_position_outside_the_range_is_422(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        position: int,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        a, _, _ = await self._three(product.id, admin, upload)
        response = await client.patch(
            f"{images_url(product.id)}/{a['id']}", json={"position": position}, headers=admin
        )
        body = assert_problem(response, 422, "VALIDATION_ERROR")
        assert body["errors"][0]["loc"] == ["body", "position"]

    async def test_alt_text_changes_and_null_clears_it(
        self, client: AsyncClient, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        image = (await upload(product.id, admin)).json()
        url = f"{images_url(product.id)}/{image['id']}"
        changed = await client.patch(url, json={"alt_text": " A mug "}, headers=admin)
        assert changed.json()["alt_text"] == "A mug"
        shown = (await client.get(f"{PRODUCTS}/{product.id}")).json()["images"][0]
        assert shown["alt_text"] == "A mug"
        cleared = await client.patch(url, json={"alt_text": None}, headers=admin)
        assert cleared.json()["alt_text"] is None
        unknown = await client.patch(url, json={"status": "ready"}, headers=admin)
        assert_problem(unknown, 422, "VALIDATION_ERROR")
        _, user = await login()
        assert_problem(await client.patch(url, json={}, headers=user), 403, "FORBIDDEN")

    async def test_delete_closes_the_gap_and_the_worker_removes_the_objects(
        self,
        client: AsyncClient,
        login: Login,
        make_product: ProductFactory,
        upload: Upload,
        drain_jobs: DrainJobs,
        store: ObjectStore,
        db_conn: asyncpg.Connection,
    ) -> None:
        product = await make_product()
        _, admin = await login(role=Role.admin)
        a, b, c = await self._three(product.id, admin, upload)
        await drain_jobs()
        assert len(await stored_keys(store, product.id)) == 9
        response = await client.delete(f"{images_url(product.id)}/{b['id']}", headers=admin)
        assert response.status_code == 204
        rows = await image_rows(db_conn, product.id)
        assert [(str(row["id"]), row["position"]) for row in rows] == [(a["id"], 0), (c["id"], 1)]
        shown = (await client.get(f"{PRODUCTS}/{product.id}")).json()["images"]
        assert [i["id"] for i in shown] == [a["id"], c["id"]]
        await drain_jobs()
        keys = await stored_keys(store, product.id)
        assert len(keys) == 6
        token = b["url"].rsplit("/", 1)[1].split(".")[0]
        assert not [key for key in keys if token in key]
        assert (await public_get(b["url"])).status_code in (403, 404)
        again = await client.delete(f"{images_url(product.id)}/{b['id']}", headers=admin)
        assert_problem(again, 404, "NOT_FOUND")

    async def test_inactive_products_images_are_for_admins_only(
        self, client: AsyncClient, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product = await make_product(is_active=False)
        _, admin = await login(role=Role.admin)
        image = (await upload(product.id, admin)).json()
        url = f"{images_url(product.id)}/{image['id']}"
        assert_problem(await client.get(url), 404, "NOT_FOUND")
        assert (await client.get(url, headers=admin)).status_code == 200
        # Still stored and served.
        assert (await public_get(image["url"])).status_code == 200

    async def test_image_of_another_product_is_404(
        self, client: AsyncClient, login: Login, make_product: ProductFactory, upload: Upload
    ) -> None:
        product, other = await make_product(), await make_product()
        _, admin = await login(role=Role.admin)
        image = (await upload(product.id, admin)).json()
        assert_problem(await client.get(f"{images_url(other.id)}/{image['id']}"), 404, "NOT_FOUND")
        assert_problem(
            await client.delete(f"{images_url(other.id)}/{image['id']}", headers=admin),
            404,
            "NOT_FOUND",
        )


@pytest.mark.slow
class TestStorageOutage:
    async def test_upload_while_the_store_is_down_is_503_with_nothing_written(
        self,
        make_client: Any,
        login: Login,
        make_product: ProductFactory,
        db_conn: asyncpg.Connection,
    ) -> None:
        private = EmbeddedS3(bucket="outage").start()
        try:
            http = await make_client(
                storage_url=private.url,
                storage_access_key=private.access_key,
                storage_secret_key=private.secret_key,
                storage_timeout_seconds=2,
            )
            product = await make_product()
            _, admin = await login(role=Role.admin)
            files = upload_files(png(), "a.png", "image/png")
            working = await http.post(images_url(product.id), files=files, headers=admin)
            assert working.status_code == 201, working.text
            private.stop()
            response = await http.post(images_url(product.id), files=files, headers=admin)
            body = assert_problem(response, 503, "SERVICE_UNAVAILABLE")
            assert "Internal" not in body["detail"]
            rows = await image_rows(db_conn, product.id)
            assert [str(row["id"]) for row in rows] == [working.json()["id"]]
            outbox = await db_conn.fetchval(
                "SELECT count(*) FROM outbox WHERE job_name = 'make_image_variants'"
            )
            assert outbox == 1
        finally:
            private.stop()
