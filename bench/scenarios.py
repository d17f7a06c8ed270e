"""The scenarios of issue 6, their floors and their targets."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Target:
    """A pass/fail rule on a scenario's result at the target worker count."""

    # "ratio" (rps / floor rps), "p99_ms" (at most), "ratio_allowed" (login), "vs_scenario"
    # (rps / the rps of scenario `other`, same run and workers), "status_share" (share of the
    # answers with status `other`)
    kind: str
    value: float
    text: str
    other: str = ""


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    method: str
    route: str  # the route template to look for in the app (skipped with "route missing")
    script: str
    path: str = ""  # BENCH_PATH for get.lua ({product}, {order}, {user}, {row})
    auth: bool = False
    api_key: bool = False  # with `auth`: send the organization's API key instead of a token
    if_none_match: bool = False  # send each product's current ETag (fetched after start-up)
    floor: str | None = None  # name of the floor scenario it is compared to
    read: bool = False  # reads must keep p99 <= 100 ms
    # data it needs: "products", "orders", "tokens", "logins", "etags"
    needs: tuple[str, ...] = ()
    targets: tuple[Target, ...] = ()
    timeout_s: float = 5.0
    extra_routes: tuple[tuple[str, str], ...] = field(default=())


READ_P99 = Target("p99_ms", 100, "p99 <= 100 ms")

FLOORS = {
    "floor_health": Scenario(
        "floor_health", "floor: bare JSON", "GET", "/health", "get.lua", path="/health"
    ),
    "floor_jwt_pg": Scenario(
        "floor_jwt_pg",
        "floor: JWT decode + asyncpg PK select",
        "GET",
        "/jwt-pg/{}",
        "get.lua",
        path="/jwt-pg/{user}",
        auth=True,
    ),
    "floor_redis": Scenario(
        "floor_redis",
        "floor: one Redis GET",
        "GET",
        "/redis/{}",
        "get.lua",
        path="/redis/{product}",
        needs=("products",),
    ),
}

SCENARIOS = [
    Scenario(
        "health",
        "GET /health",
        "GET",
        "/health",
        "get.lua",
        path="/health",
        floor="floor_health",
        read=True,
        targets=(READ_P99,),
    ),
    Scenario(
        "product_get",
        "GET /api/v1/products/{id} (cached)",
        "GET",
        "/api/v1/products/{}",
        "get.lua",
        path="/api/v1/products/{product}",
        floor="floor_redis",
        read=True,
        needs=("products",),
        targets=(Target("ratio", 0.70, ">= 70% of raw Redis"), READ_P99),
    ),
    Scenario(
        "product_get_304",
        "GET /api/v1/products/{id} (If-None-Match: 304)",
        "GET",
        "/api/v1/products/{}",
        "get.lua",
        path="/api/v1/products/{product}",
        if_none_match=True,
        floor="floor_redis",
        read=True,
        needs=("products", "etags"),
        targets=(
            Target("vs_scenario", 1.0, ">= the cached read's req/s", other="product_get"),
            Target("status_share", 1.0, "every answer a 304 (no body)", other="304"),
            READ_P99,
        ),
    ),
    Scenario(
        "product_list",
        "GET /api/v1/products (first page, cached)",
        "GET",
        "/api/v1/products",
        "get.lua",
        path="/api/v1/products",
        floor="floor_redis",
        read=True,
        needs=("products",),
        targets=(READ_P99,),
    ),
    Scenario(
        "users_me",
        "GET /api/v1/users/me",
        "GET",
        "/api/v1/users/me",
        "get.lua",
        path="/api/v1/users/me",
        auth=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens",),
        targets=(Target("ratio", 0.60, ">= 60% of JWT + asyncpg"), READ_P99),
    ),
    Scenario(
        "order_get",
        "GET /api/v1/orders/{id} (with lines)",
        "GET",
        "/api/v1/orders/{}",
        "get.lua",
        path="/api/v1/orders/{order}",
        auth=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens", "orders"),
        targets=(Target("ratio", 0.50, ">= 50% of JWT + asyncpg"), READ_P99),
    ),
    Scenario(
        "order_list",
        "GET /api/v1/orders (first page)",
        "GET",
        "/api/v1/orders",
        "get.lua",
        path="/api/v1/orders",
        auth=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens", "orders"),
        targets=(READ_P99,),
    ),
    # A deep page of every order, as an admin sees the list: the keyset cursor at depth
    # --cursor-depth (50,000 rows by default) against the same depth by OFFSET (page 2,500 of
    # 20). The cursor page should cost what the first page does; the offset one reads and drops
    # every row before it.
    Scenario(
        "order_list_cursor_deep",
        "GET /api/v1/orders?limit=20&cursor= at depth 50,000 (admin)",
        "GET",
        "/api/v1/orders",
        "get.lua",
        path="/api/v1/orders?limit=20&cursor={cursor}",
        auth=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens", "admin", "orders"),
        targets=(READ_P99,),
    ),
    Scenario(
        "order_list_offset_deep",
        "GET /api/v1/orders?page=2500&page_size=20 (admin, same depth)",
        "GET",
        "/api/v1/orders",
        "get.lua",
        path="/api/v1/orders?page={deep_page}&page_size=20",
        auth=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens", "admin", "orders"),
    ),
    Scenario(
        "org_orders",
        "GET /api/v1/organizations/{id}/orders (member token, first page)",
        "GET",
        "/api/v1/organizations/{}/orders",
        "get.lua",
        path="/api/v1/organizations/{org}/orders",
        auth=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens", "orders"),
        targets=(READ_P99,),
    ),
    Scenario(
        "order_get_api_key",
        "GET /api/v1/orders/{id} (API key)",
        "GET",
        "/api/v1/orders/{}",
        "get.lua",
        path="/api/v1/orders/{order}",
        auth=True,
        api_key=True,
        floor="floor_jwt_pg",
        read=True,
        needs=("tokens", "orders"),
        targets=(Target("ratio", 0.50, ">= 50% of JWT + asyncpg"), READ_P99),
    ),
    Scenario(
        "order_create",
        "POST /api/v1/orders (fresh Idempotency-Key)",
        "POST",
        "/api/v1/orders",
        "post_order.lua",
        auth=True,
        floor="floor_jwt_pg",
        needs=("tokens", "products"),
        targets=(Target("ratio", 0.25, ">= 25% of JWT + asyncpg"),),
        timeout_s=10.0,
    ),
    Scenario(
        "login",
        "POST /api/v1/auth/login",
        "POST",
        "/api/v1/auth/login",
        "login.lua",
        floor="argon2",
        needs=("logins",),
        targets=(Target("ratio_allowed", 0.80, ">= 80% of cores / argon2 verify"),),
        timeout_s=60.0,
    ),
    Scenario(
        "health_under_login",
        "GET /health while logins saturate the CPU",
        "GET",
        "/health",
        "get.lua",
        path="/health",
        read=True,
        needs=("logins",),
        targets=(Target("p99_ms", 20, "p99 <= 20 ms"),),
        extra_routes=(("POST", "/api/v1/auth/login"),),
    ),
]

# Connections of the /health probe that runs beside the 64 login connections.
HEALTH_PROBE_CONNECTIONS = 8
