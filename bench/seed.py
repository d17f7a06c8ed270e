"""Realistic data, fast: users, products, orders and their lines written with asyncpg COPY.

The column lists are read from information_schema at run time, so the seeder follows the real
tables as the features land: a column it knows (API.md's fields) gets a realistic value, a column
with a default or that may be NULL is left to the database, and any other NOT NULL column gets a
plain value of its type (and is named in the run's notes, so nobody is surprised). Tables that do
not exist yet are skipped, and so are the scenarios that need them.
"""

from __future__ import annotations

import json
import os
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

PASSWORD = "bench-Password-2026!"
STOCK = 1_000_000_000  # large enough that POST /orders never runs out during a run
STATUSES = [("pending", 20), ("paid", 30), ("shipped", 20), ("delivered", 25), ("cancelled", 5)]
_WORDS = [
    "steel",
    "oak",
    "linen",
    "cotton",
    "walnut",
    "copper",
    "ceramic",
    "wool",
    "bamboo",
    "glass",
    "leather",
    "cedar",
    "slate",
    "brass",
    "canvas",
    "marble",
    "velvet",
]
_THINGS = [
    "mug",
    "lamp",
    "chair",
    "desk",
    "shelf",
    "backpack",
    "bottle",
    "notebook",
    "pen",
    "kettle",
    "blanket",
    "pillow",
    "speaker",
    "frame",
    "clock",
    "vase",
]


@dataclass
class Column:
    name: str
    data_type: str
    udt_name: str
    nullable: bool
    has_default: bool
    generated: bool
    enum_labels: list[str] | None = None


@dataclass
class SeedResult:
    users: int = 0
    products: int = 0
    orders: int = 0
    lines: int = 0
    seconds: float = 0.0
    tables: dict[str, str] = field(default_factory=dict)  # role -> table name found
    notes: list[str] = field(default_factory=list)
    # For the load scripts: the first `token_users` users and their orders.
    token_users: list[dict[str, Any]] = field(default_factory=list)
    product_ids: list[str] = field(default_factory=list)
    product_docs: dict[str, str] = field(default_factory=dict)  # id -> ProductOut-like JSON
    floor_sql: str = ""
    floor_ids: list[str] = field(default_factory=list)


def uuid7(at: datetime) -> uuid.UUID:
    """A version 7 UUID for the given time, like the app's ids (time-ordered)."""
    unix_ms = int(at.timestamp() * 1000)
    rand = int.from_bytes(os.urandom(10), "big")
    value = (unix_ms & 0xFFFF_FFFF_FFFF) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & 0x3FFF_FFFF_FFFF_FFFF
    return uuid.UUID(int=value)


def _json_default(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)


async def table_columns(conn: asyncpg.Connection, table: str) -> list[Column]:
    rows = await conn.fetch(
        """
        SELECT column_name, data_type, udt_name, is_nullable = 'YES' AS nullable,
               (column_default IS NOT NULL OR is_identity = 'YES') AS has_default,
               (is_generated <> 'NEVER' OR identity_generation = 'ALWAYS') AS generated
        FROM information_schema.columns
        WHERE table_schema = 'public' AND table_name = $1
        ORDER BY ordinal_position
        """,
        table,
    )
    enums: dict[str, list[str]] = {}
    for row in await conn.fetch(
        "SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid "
        "ORDER BY t.typname, e.enumsortorder"
    ):
        enums.setdefault(row["typname"], []).append(row["enumlabel"])
    return [
        Column(
            name=r["column_name"],
            data_type=r["data_type"],
            udt_name=r["udt_name"],
            nullable=r["nullable"],
            has_default=r["has_default"],
            generated=r["generated"],
            enum_labels=enums.get(r["udt_name"]) if r["data_type"] == "USER-DEFINED" else None,
        )
        for r in rows
    ]


async def find_lines_table(conn: asyncpg.Connection) -> str | None:
    """The order-lines table: the one (besides orders) with order_id, product_id and quantity."""
    rows = await conn.fetch(
        """
        SELECT table_name FROM information_schema.columns
        WHERE table_schema = 'public' AND column_name IN ('order_id', 'product_id', 'quantity')
        GROUP BY table_name HAVING count(*) = 3
        ORDER BY table_name
        """
    )
    names = [r["table_name"] for r in rows if r["table_name"] != "orders"]
    return names[0] if names else None


def _fallback(column: Column) -> Any:
    """A plain value of the column's type for a NOT NULL column the seeder does not know."""
    t = column.data_type
    if column.enum_labels:
        return column.enum_labels[0]
    if t == "uuid":
        return uuid.uuid4()
    if t in ("text", "character varying", "character", "citext") or column.udt_name == "citext":
        return "bench"
    if t in ("integer", "bigint", "smallint"):
        return 0
    if t == "numeric":
        return Decimal(0)
    if t in ("double precision", "real"):
        return 0.0
    if t == "boolean":
        return False
    if t == "timestamp with time zone":
        return datetime.now(UTC)
    if t == "timestamp without time zone":
        return datetime.now(UTC).replace(tzinfo=None)
    if t == "date":
        return date.today()
    if t in ("json", "jsonb"):
        return "{}"
    if t == "ARRAY":
        return []
    raise RuntimeError(f"cannot seed NOT NULL column {column.name} of type {t}")


def _coerce(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.enum_labels is not None:
        text = str(getattr(value, "value", value))
        return text if text in column.enum_labels else column.enum_labels[0]
    if column.data_type == "timestamp without time zone" and isinstance(value, datetime):
        return value.astimezone(UTC).replace(tzinfo=None)
    if column.data_type in ("text", "character varying") and not isinstance(value, str):
        return str(getattr(value, "value", value))
    if column.data_type in ("json", "jsonb") and not isinstance(value, str):
        return json.dumps(value)
    return value


class TableWriter:
    """Collects rows as dicts of known values and COPYs them with the table's real columns."""

    def __init__(self, table: str, columns: list[Column], known: set[str], notes: list[str]):
        self.table = table
        self.columns = [
            c
            for c in columns
            if not c.generated and (c.name in known or not (c.nullable or c.has_default))
        ]
        unknown = [c.name for c in self.columns if c.name not in known]
        if unknown:
            notes.append(
                f"`{table}`: NOT NULL column(s) {', '.join(unknown)} unknown to the seeder, "
                "filled with a plain value of their type"
            )
        self.fallbacks = {c.name: _fallback(c) for c in self.columns if c.name not in known}
        self.records: list[tuple[Any, ...]] = []

    def add(self, values: dict[str, Any]) -> None:
        self.records.append(
            tuple(
                _coerce(c, values[c.name]) if c.name in values else self.fallbacks[c.name]
                for c in self.columns
            )
        )

    async def copy(self, conn: asyncpg.Connection) -> int:
        if not self.records:
            return 0
        await conn.copy_records_to_table(
            self.table, records=self.records, columns=[c.name for c in self.columns]
        )
        count = len(self.records)
        self.records = []
        return count


async def seed(
    dsn: str,
    *,
    password_hash: str,
    users: int,
    products: int,
    orders: int,
    token_users: int,
    currency: str = "USD",
    rng_seed: int = 6,
) -> SeedResult:
    started = time.perf_counter()
    rng = random.Random(rng_seed)
    result = SeedResult()
    now = datetime.now(UTC).replace(microsecond=0)
    conn = await asyncpg.connect(dsn)
    try:
        existing = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        }
        lines_table = await find_lines_table(conn)
        for role, name in (("users", "users"), ("products", "products"), ("orders", "orders")):
            if name in existing:
                result.tables[role] = name
        if lines_table:
            result.tables["lines"] = lines_table

        user_ids: list[uuid.UUID] = []
        if "users" in result.tables:
            cols = await table_columns(conn, "users")
            writer = TableWriter("users", cols, _USER_FIELDS, result.notes)
            for i in range(users):
                created = now - timedelta(days=365) + timedelta(minutes=i * 50)
                uid = uuid7(created)
                user_ids.append(uid)
                writer.add(
                    {
                        "id": uid,
                        "email": f"bench.user{i:05d}@example.com",
                        "password_hash": password_hash,
                        "full_name": f"Bench User {i:05d}",
                        "role": "user",
                        "is_active": True,
                        "is_verified": True,
                        "email_verified_at": created,
                        "verified_at": created,
                        "token_version": 0,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
            result.users = await writer.copy(conn)
            result.token_users = [
                {"id": str(user_ids[i]), "email": f"bench.user{i:05d}@example.com", "orders": []}
                for i in range(min(token_users, users))
            ]

        catalog: list[tuple[uuid.UUID, str, str, int]] = []
        if "products" in result.tables:
            cols = await table_columns(conn, "products")
            writer = TableWriter("products", cols, _PRODUCT_FIELDS, result.notes)
            for i in range(products):
                created = now - timedelta(days=400) + timedelta(hours=i * 6)
                pid = uuid7(created)
                sku = f"BENCH-{i:05d}"
                name = f"{rng.choice(_WORDS).title()} {rng.choice(_THINGS)} {i:04d}"
                price = rng.randint(199, 49_999)
                description = (
                    f"A {name.lower()} made for everyday use. "
                    + "Sturdy, simple and easy to care for. " * rng.randint(1, 4)
                ).strip()
                catalog.append((pid, sku, name, price))
                row = {
                    "id": pid,
                    "sku": sku,
                    "name": name,
                    "description": description,
                    "price_cents": price,
                    "currency": currency,
                    "stock": STOCK,
                    "is_active": True,
                    "created_at": created,
                    "updated_at": created,
                }
                writer.add(row)
                doc = {k: row[k] for k in _PRODUCT_OUT}
                result.product_docs[str(pid)] = json.dumps(doc, default=_json_default)
            result.products = await writer.copy(conn)
            result.product_ids = [str(p[0]) for p in catalog]

        if "orders" in result.tables and user_ids and catalog:
            result.orders, result.lines = await _seed_orders(
                conn, rng, now, user_ids, catalog, orders, lines_table, currency, result
            )
        if {"organizations", "organization_members", "api_keys"} <= existing and user_ids:
            await _seed_organizations(conn, now, result)
        await conn.execute("ANALYZE")
        await _floor_table(conn, result, rng)
    finally:
        await conn.close()
    result.seconds = time.perf_counter() - started
    return result


async def _seed_orders(
    conn: asyncpg.Connection,
    rng: random.Random,
    now: datetime,
    user_ids: list[uuid.UUID],
    catalog: list[tuple[uuid.UUID, str, str, int]],
    count: int,
    lines_table: str | None,
    currency: str,
    result: SeedResult,
) -> tuple[int, int]:
    order_writer = TableWriter(
        "orders", await table_columns(conn, "orders"), _ORDER_FIELDS, result.notes
    )
    line_writer = (
        TableWriter(lines_table, await table_columns(conn, lines_table), _LINE_FIELDS, result.notes)
        if lines_table
        else None
    )
    statuses = [s for s, _ in STATUSES]
    weights = [w for _, w in STATUSES]
    token_orders = {u["id"]: u["orders"] for u in result.token_users}
    total_orders = total_lines = 0
    span = timedelta(days=180).total_seconds()
    for i in range(count):
        user_id = user_ids[i % len(user_ids)]
        created = now - timedelta(seconds=span * (1 - i / count))
        oid = uuid7(created)
        picked = rng.sample(catalog, rng.randint(1, 5))
        total = 0
        for position, (pid, sku, name, price) in enumerate(picked):
            quantity = rng.randint(1, 3)
            total += price * quantity
            if line_writer is not None:
                line_writer.add(
                    {
                        "id": uuid7(created),
                        "order_id": oid,
                        "product_id": pid,
                        "sku": sku,
                        "name": name,
                        "unit_price_cents": price,
                        "quantity": quantity,
                        "line_total_cents": price * quantity,
                        "position": position,
                        "line_no": position,
                        "line_number": position,
                        "ordinal": position,
                        "sort_order": position,
                        "index": position,
                        "created_at": created,
                        "updated_at": created,
                    }
                )
        status = rng.choices(statuses, weights)[0]
        order_writer.add(
            {
                "id": oid,
                "user_id": user_id,
                "status": status,
                "total_cents": total,
                "currency": currency,
                "note": "Leave it at the door, please." if rng.random() < 0.1 else None,
                "created_at": created,
                "updated_at": created,
            }
        )
        if str(user_id) in token_orders:
            token_orders[str(user_id)].append(str(oid))
        # COPY in chunks: the orders first (the lines reference them).
        if len(order_writer.records) >= 20_000:
            total_orders += await order_writer.copy(conn)
            if line_writer is not None:
                total_lines += await line_writer.copy(conn)
    total_orders += await order_writer.copy(conn)
    if line_writer is not None:
        total_lines += await line_writer.copy(conn)
    return total_orders, total_lines


async def _seed_organizations(conn: asyncpg.Connection, now: datetime, result: SeedResult) -> None:
    """One organization per token user (its owner), holding that user's orders, and an API key
    of it with both scopes: the `org_orders` and `order_get_api_key` scenarios use them."""
    import hashlib
    import secrets

    has_org_column = await conn.fetchval(
        "SELECT count(*) FROM information_schema.columns "
        "WHERE table_name = 'orders' AND column_name = 'organization_id'"
    )
    for i, user in enumerate(result.token_users):
        org_id = uuid7(now)
        key = "sk_" + secrets.token_urlsafe(32)
        await conn.execute(
            "INSERT INTO organizations (id, name, slug) VALUES ($1, $2, $3)",
            org_id,
            f"Bench Org {i:05d}",
            f"bench-org-{i:05d}",
        )
        await conn.execute(
            "INSERT INTO organization_members (organization_id, user_id, role) "
            "VALUES ($1, $2, 'owner')",
            org_id,
            uuid.UUID(user["id"]),
        )
        await conn.execute(
            "INSERT INTO api_keys (id, organization_id, name, prefix, key_hash, scopes, "
            "created_by) "
            "VALUES ($1, $2, 'bench', $3, $4, '{orders:read,orders:write}', $5)",
            uuid7(now),
            org_id,
            key[:11],
            hashlib.sha256(key.encode()).hexdigest(),
            uuid.UUID(user["id"]),
        )
        if has_org_column:
            await conn.execute(
                "UPDATE orders SET organization_id = $1 WHERE user_id = $2",
                org_id,
                uuid.UUID(user["id"]),
            )
        user["org"] = str(org_id)
        user["key"] = key


async def _floor_table(conn: asyncpg.Connection, result: SeedResult, rng: random.Random) -> None:
    """The row the floor's `/jwt-pg/{id}` selects: a user (as /users/me would), or, before the
    users table exists, a row of a small table of the bench's own with the same shape."""
    if "users" in result.tables and result.token_users:
        cols = {c.name for c in await table_columns(conn, "users")}
        wanted = [c for c in _USER_OUT if c in cols]
        result.floor_sql = f"SELECT {', '.join(wanted)} FROM users WHERE id = $1"
        result.floor_ids = [u["id"] for u in result.token_users]
        return
    await conn.execute(
        "CREATE TABLE bench_floor_rows (id uuid PRIMARY KEY, email text NOT NULL, "
        "full_name text NOT NULL, role text NOT NULL, is_active boolean NOT NULL, "
        "is_verified boolean NOT NULL, created_at timestamptz NOT NULL, "
        "updated_at timestamptz NOT NULL)"
    )
    now = datetime.now(UTC)
    ids = [uuid7(now - timedelta(minutes=i)) for i in range(10_000)]
    await conn.copy_records_to_table(
        "bench_floor_rows",
        records=[
            (
                uid,
                f"bench.user{i:05d}@example.com",
                f"Bench User {i:05d}",
                "user",
                True,
                True,
                now,
                now,
            )
            for i, uid in enumerate(ids)
        ],
    )
    await conn.execute("ANALYZE bench_floor_rows")
    result.floor_sql = (
        "SELECT id, email, full_name, role, is_active, is_verified, created_at, updated_at "
        "FROM bench_floor_rows WHERE id = $1"
    )
    result.floor_ids = [str(u) for u in rng.sample(ids, 64)]
    result.notes.append("no `users` table yet: the JWT + asyncpg floor selects `bench_floor_rows`")


_USER_OUT = (
    "id",
    "email",
    "full_name",
    "role",
    "is_active",
    "is_verified",
    "created_at",
    "updated_at",
)
_USER_FIELDS = {
    *_USER_OUT,
    "password_hash",
    "token_version",
    "email_verified_at",
    "verified_at",
}
_PRODUCT_OUT = (
    "id",
    "sku",
    "name",
    "description",
    "price_cents",
    "currency",
    "stock",
    "is_active",
    "created_at",
    "updated_at",
)
_PRODUCT_FIELDS = set(_PRODUCT_OUT)
_ORDER_FIELDS = {
    "id",
    "user_id",
    "status",
    "total_cents",
    "currency",
    "note",
    "created_at",
    "updated_at",
}
_LINE_FIELDS = {
    "id",
    "order_id",
    "product_id",
    "sku",
    "name",
    "unit_price_cents",
    "quantity",
    "line_total_cents",
    "position",
    "line_no",
    "line_number",
    "ordinal",
    "sort_order",
    "index",
    "created_at",
    "updated_at",
}
