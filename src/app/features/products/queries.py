"""The read side of the catalog: product JSON, cached in Redis, read through the read-only
connection on a miss.

Every write of `ProductService` invalidates these namespaces after its commit, so the very next
read sees it.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from sqlalchemy import (
    ARRAY,
    String,
    Table,
    Uuid,
    any_,
    bindparam,
    func,
    or_,
    select,
    true,
    tuple_,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement

from app.core.cache import Cache
from app.core.http_cache import stamp, unstamp
from app.core.reads import ReadConnection, ReadQuery, Row, read_query
from app.features.products.errors import ProductNotFoundError
from app.features.products.media import image_out_row
from app.features.products.models import Product, ProductImage
from app.features.products.schemas import ImageOut, ProductCursorPage, ProductOut, ProductPage
from app.shared.cursor import CursorParams, Cursors, CursorScope, InvalidCursorError
from app.shared.pagination import PageParams
from app.shared.text import like_pattern

LIST_NAMESPACE = "products:list"
_ACTIVE, _INACTIVE = b"1", b"0"
# The layout of a cached entry: a flag (details only), the ETag, the JSON. Part of the keys, so
# that workers of another layout (a rolling deploy) never read each other's entries.
_LAYOUT = "e1"
_DETAIL_KEY = f"detail:{_LAYOUT}"

_PRODUCTS: Table = Product.__table__  # type: ignore[attr-defined]
# The columns of ProductOut, looked up in the table's metadata (the currency is the deployment's).
_COLUMNS = [
    _PRODUCTS.c[name] for name in ProductOut.model_fields if name not in ("currency", "images")
]
_BY_ID = read_query(select(*_COLUMNS).where(_PRODUCTS.c.id == bindparam("product_id")))

_IMAGES: Table = ProductImage.__table__  # type: ignore[attr-defined]
_IMAGE_COLUMNS = [
    _IMAGES.c[name]
    for name in ("product_id", "object_key", *ImageOut.model_fields)
    if name not in ("url",)
]
# The images of a page of products (or of one), each product's by position.
_IMAGES_OF = read_query(
    select(*_IMAGE_COLUMNS)
    .where(_IMAGES.c.product_id == any_(bindparam("product_ids", type_=ARRAY(Uuid()))))
    .order_by(_IMAGES.c.product_id, _IMAGES.c.position)
)


def product_namespace(product_id: uuid.UUID) -> str:
    return f"products:{product_id}"


def _conditions(*, include_inactive: bool, q: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [true()]
    if not include_inactive:
        conditions.append(_PRODUCTS.c.is_active.is_(True))
    if q:
        pattern = bindparam("pattern", type_=String())
        conditions.append(
            or_(
                _PRODUCTS.c.name.ilike(pattern, escape="\\"),
                _PRODUCTS.c.sku.ilike(pattern, escape="\\"),
            )
        )
    return conditions


def _list_queries(*, include_inactive: bool, q: bool) -> tuple[ReadQuery, ReadQuery]:
    conditions = _conditions(include_inactive=include_inactive, q=q)
    page = (
        select(*_COLUMNS, func.count().over().label("total"))
        .where(*conditions)
        .order_by(_PRODUCTS.c.name, _PRODUCTS.c.id)
        .offset(bindparam("offset"))
        .limit(bindparam("limit"))
    )
    count = select(func.count()).select_from(_PRODUCTS).where(*conditions)
    return read_query(page), read_query(count)


_LISTS = {
    (include_inactive, q): _list_queries(include_inactive=include_inactive, q=q)
    for include_inactive in (False, True)
    for q in (False, True)
}


def keyset_statement(*, include_inactive: bool, q: bool, after: bool) -> Select[Any]:
    """A cursor page: the products after `(after_name, after_id)` by name then id, at most
    `limit`. The row comparison walks `ix_products_name_id` from the cursor on, so a deep page
    reads as few rows as the first."""
    conditions = _conditions(include_inactive=include_inactive, q=q)
    if after:
        conditions.append(
            tuple_(_PRODUCTS.c.name, _PRODUCTS.c.id)
            > tuple_(bindparam("after_name", type_=String()), bindparam("after_id", type_=Uuid()))
        )
    return (
        select(*_COLUMNS)
        .where(*conditions)
        .order_by(_PRODUCTS.c.name, _PRODUCTS.c.id)
        .limit(bindparam("limit"))
    )


_KEYSETS = {
    (include_inactive, q, after): read_query(
        keyset_statement(include_inactive=include_inactive, q=q, after=after)
    )
    for include_inactive in (False, True)
    for q in (False, True)
    for after in (False, True)
}


class ProductQueries:
    def __init__(
        self,
        connection: ReadConnection,
        cache: Cache,
        *,
        currency: str,
        cache_ttl: int = 60,
        media_base_url: str = "",
    ) -> None:
        self.connection = connection
        self.cache = cache
        self.currency = currency
        self.cache_ttl = cache_ttl
        self.media_base_url = media_base_url

    async def _images(self, product_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[ImageOut]]:
        found: dict[uuid.UUID, list[ImageOut]] = {product_id: [] for product_id in product_ids}
        if product_ids:
            for row in await self.connection.fetch(_IMAGES_OF, product_ids=product_ids):
                found[row["product_id"]].append(image_out_row(row, self.media_base_url))
        return found

    def _out(self, row: Row, images: list[ImageOut]) -> ProductOut:
        return ProductOut(
            id=row["id"],
            sku=row["sku"],
            name=row["name"],
            description=row["description"],
            price_cents=row["price_cents"],
            currency=self.currency,
            stock=row["stock"],
            is_active=row["is_active"],
            images=images,
            created_at=row["created_at"],
            updated_at=row["updated_at"],
        )

    async def get_json(self, product_id: uuid.UUID, *, include_inactive: bool) -> tuple[str, bytes]:
        """The product as ProductOut JSON and its ETag, from the cache when it can; inactive
        ones only for admins (`include_inactive`)."""

        async def load() -> bytes | None:
            row = await self.connection.fetchrow(_BY_ID, product_id=product_id)
            if row is None:
                return None
            # A one-byte flag in front: visibility without parsing the JSON on a hit.
            flag = _ACTIVE if row["is_active"] else _INACTIVE
            images = await self._images([product_id])
            return flag + stamp(self._out(row, images[product_id]).model_dump_json().encode())

        cached = await self.cache.get_or_set(
            product_namespace(product_id), _DETAIL_KEY, load, ttl=self.cache_ttl
        )
        if cached is None or (cached[:1] != _ACTIVE and not include_inactive):
            raise ProductNotFoundError(product_id)
        return unstamp(cached[1:])

    async def list_json(
        self, params: PageParams, *, q: str | None, include_inactive: bool
    ) -> tuple[str, bytes]:
        """A page of products as JSON and its ETag, by name then id, cached per query."""
        query = f"{_LAYOUT}:{params.page}:{params.page_size}:{int(include_inactive)}:{q or ''}"
        key = hashlib.sha256(query.encode()).hexdigest()

        async def load() -> bytes:
            page_query, count_query = _LISTS[(include_inactive, bool(q))]
            values = {"pattern": like_pattern(q)} if q else {}
            rows = await self.connection.fetch(
                page_query, offset=params.offset, limit=params.limit, **values
            )
            if rows:
                total = int(rows[0]["total"])
            elif params.offset == 0:
                total = 0
            else:
                # Past the last page: the window count has no row to ride on.
                total = int(await self.connection.fetchval(count_query, **values))
            images = await self._images([row["id"] for row in rows])
            page = ProductPage.of(
                [self._out(row, images[row["id"]]) for row in rows], total=total, params=params
            )
            return stamp(page.model_dump_json().encode())

        cached = await self.cache.get_or_set(LIST_NAMESPACE, key, load, ttl=self.cache_ttl)
        assert cached is not None
        return unstamp(cached)

    async def list_cursor_json(
        self,
        params: CursorParams,
        cursors: Cursors,
        *,
        caller: str,
        q: str | None,
        include_inactive: bool,
    ) -> tuple[str, bytes]:
        """A cursor page of products as JSON and its ETag, by name then id, cached per query
        and caller (the cursor it hands out is bound to the caller)."""
        scope = CursorScope(
            list="products", caller=caller, filters={"q": q, "include_inactive": include_inactive}
        )
        values: dict[str, Any] = {"limit": params.limit + 1}
        if params.cursor is not None:
            key = cursors.decode(scope, params.cursor)
            try:
                values["after_name"], values["after_id"] = str(key[0]), uuid.UUID(str(key[1]))
            except (IndexError, ValueError):  # pragma: no cover - we signed it
                raise InvalidCursorError from None
        if q:
            values["pattern"] = like_pattern(q)
        query = (
            f"{_LAYOUT}:cursor:{caller}:{params.limit}:{params.cursor or ''}:"
            f"{int(include_inactive)}:{q or ''}"
        )
        cache_key = hashlib.sha256(query.encode()).hexdigest()

        async def load() -> bytes:
            statement = _KEYSETS[(include_inactive, bool(q), params.cursor is not None)]
            rows = list(await self.connection.fetch(statement, **values))
            page_rows = rows[: params.limit]
            next_cursor = None
            if len(rows) > params.limit:
                last = page_rows[-1]
                next_cursor = cursors.encode(scope, [last["name"], str(last["id"])])
            images = await self._images([row["id"] for row in page_rows])
            page = ProductCursorPage(
                items=[self._out(row, images[row["id"]]) for row in page_rows],
                next_cursor=next_cursor,
            )
            return stamp(page.model_dump_json().encode())

        cached = await self.cache.get_or_set(LIST_NAMESPACE, cache_key, load, ttl=self.cache_ttl)
        assert cached is not None
        return unstamp(cached)
