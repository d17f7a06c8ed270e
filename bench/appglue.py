"""What the benchmark takes from the application itself, found at run time.

The bench is written against API.md and the table contracts, while the features land one by one,
so it asks the code instead of assuming: which routes exist (to skip a scenario with "route
missing" rather than measure 404s), which rate-limit settings exist (to raise them all to one
stated ceiling), and which password hasher the app uses (the bench users' hash is computed once
with it, and one verify is timed to know what the argon2 parameters allow).
"""

from __future__ import annotations

import inspect
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.config import Settings, load_settings

RATE_CEILING = "1000000/minute"
RATE_CEILING_COUNT = 1_000_000
_LIMIT_STRING = re.compile(r"^\s*\d+\s*(/|per)\s*\d*\s*[a-z]+", re.IGNORECASE)
_PARAM = re.compile(r"\{[^}]*\}")


def placeholder_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": "development",
        "database_url": "postgresql+asyncpg://localhost/bench-introspection",
        "redis_url": "redis://localhost:6379/0",
        "jwt_secret": "bench-introspection-only-" + "x" * 16,
        "log_level": "WARNING",
    }
    values.update(overrides)
    return load_settings(**values)


def route_table() -> set[tuple[str, str]]:
    """(METHOD, path with every `{param}` written `{}`) of each route of the current tree.

    Read from the OpenAPI document (every scenario's route is in it): FastAPI's route objects
    change shape between versions (included routers are wrapped lazily), the document does not.
    """
    from app.main import create_app

    app = create_app(placeholder_settings())
    table: set[tuple[str, str]] = set()
    for path, operations in app.openapi().get("paths", {}).items():
        for method in operations:
            table.add((method.upper(), _PARAM.sub("{}", path)))
    return table


def has_route(table: set[tuple[str, str]], method: str, path: str) -> bool:
    return (method, _PARAM.sub("{}", path)) in table


def rate_limit_env() -> dict[str, str]:
    """APP_* values that raise every rate limit the Settings define to the bench's ceiling.

    A string setting whose default reads like a limit ("10/minute") gets RATE_CEILING; an integer
    setting named like a limit or a failure count gets RATE_CEILING_COUNT. The limits stay *on*
    (the middleware and its Redis round trips are part of what is measured).
    """
    env: dict[str, str] = {}
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        lowered = name.lower()
        if isinstance(default, str) and _LIMIT_STRING.match(default):
            env[f"APP_{name.upper()}"] = RATE_CEILING
        elif (
            isinstance(default, int)
            and not isinstance(default, bool)
            and ("rate_limit" in lowered or ("limit" in lowered and "fail" in lowered))
            and "window" not in lowered
            and "seconds" not in lowered
        ):
            env[f"APP_{name.upper()}"] = str(RATE_CEILING_COUNT)
    return env


@dataclass
class Hasher:
    hash: Callable[[str], str]
    verify: Callable[[str, str], bool]
    description: str


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    result = fn(*args)
    if inspect.isawaitable(result):
        import asyncio

        async def wait() -> Any:
            return await result

        return asyncio.run(wait())
    return result


def resolve_hasher(settings: Settings) -> Hasher:
    """The app's password hasher (app.core.security), or argon2-cffi's defaults with a note."""
    try:
        from app.core import security  # type: ignore[attr-defined]
    except ImportError:
        security = None
    if security is not None and hasattr(security, "Passwords"):
        passwords = security.Passwords(settings)
        verify_sync = getattr(passwords, "_verify_sync", None)
        return Hasher(
            hash=passwords.hash_sync,
            verify=verify_sync
            if callable(verify_sync)
            else (lambda stored, password: bool(_call(passwords.verify, stored, password))),
            description="`app.core.security.Passwords` (argon2id from Settings)",
        )
    if security is not None:
        # A module-level or settings-built argon2 PasswordHasher is the most direct handle.
        for factory_name in ("get_password_hasher", "password_hasher_from", "make_password_hasher"):
            factory = getattr(security, factory_name, None)
            if callable(factory):
                try:
                    hasher = factory(settings)
                except TypeError:
                    hasher = factory()
                if hasattr(hasher, "hash") and hasattr(hasher, "verify"):
                    return _argon2_object(hasher, f"app.core.security.{factory_name}()")
        for attr in ("password_hasher", "PASSWORD_HASHER", "_hasher", "hasher", "_password_hasher"):
            hasher = getattr(security, attr, None)
            if hasher is not None and hasattr(hasher, "hash") and hasattr(hasher, "verify"):
                return _argon2_object(hasher, f"app.core.security.{attr}")
        hash_fn = getattr(security, "hash_password", None)
        verify_fn = getattr(security, "verify_password", None)
        if callable(hash_fn) and callable(verify_fn):
            return Hasher(
                hash=lambda password: str(_call(hash_fn, password)),
                verify=lambda stored, password: bool(_call(verify_fn, password, stored)),
                description="app.core.security.hash_password/verify_password",
            )
    from argon2 import PasswordHasher

    return _argon2_object(
        PasswordHasher(), "argon2-cffi defaults (app.core.security has no hasher yet)"
    )


def _argon2_object(hasher: Any, description: str) -> Hasher:
    def verify(stored: str, password: str) -> bool:
        try:
            return bool(hasher.verify(stored, password))
        except Exception:
            return False

    return Hasher(
        hash=lambda password: str(hasher.hash(password)), verify=verify, description=description
    )


def argon2_parameters(encoded_hash: str) -> str:
    """`m=65536,t=3,p=4` from a PHC string such as `$argon2id$v=19$m=65536,t=3,p=4$...`."""
    parts = encoded_hash.split("$")
    return next((part for part in parts if part.startswith("m=")), "unknown")


@dataclass
class VerifyCost:
    cpu_s: float  # process CPU seconds of one verify (all its threads)
    wall_s: float

    def allowed_per_second(self, cores: int) -> float:
        return cores / self.cpu_s if self.cpu_s > 0 else 0.0


def time_verify(hasher: Hasher, encoded_hash: str, password: str, rounds: int = 5) -> VerifyCost:
    """The median CPU and wall time of one verify of a correct password."""
    hasher.verify(encoded_hash, password)  # warm
    cpu, wall = [], []
    for _ in range(rounds):
        c0, w0 = time.process_time(), time.perf_counter()
        ok = hasher.verify(encoded_hash, password)
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
        if not ok:
            raise RuntimeError("the app's hasher does not verify its own hash")
    cpu.sort()
    wall.sort()
    return VerifyCost(cpu_s=cpu[len(cpu) // 2], wall_s=wall[len(wall) // 2])


def mint_access_token(settings: Settings, user_id: uuid.UUID, role: str = "user") -> str:
    """An access token signed with the run's secret, by the app's own `Tokens` when it exists.

    Used for the floor (and for the API only when it has no login route yet): tokens for the API
    are normally obtained by logging in through it, so that their sessions really exist.
    """
    try:
        from app.core.security import Tokens  # type: ignore[attr-defined]
    except ImportError:
        Tokens = None  # noqa: N806
    if Tokens is not None:
        token, _ = Tokens(settings).encode(
            type="access", subject=user_id, session_id=uuid.uuid4(), version=0, role=role
        )
        return str(token)
    from jose import jwt

    now = int(time.time())
    claims = {
        "sub": str(user_id),
        "role": role,
        "sid": str(uuid.uuid4()),
        "type": "access",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + settings.access_token_ttl_seconds,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
    }
    return str(
        jwt.encode(claims, settings.jwt_secret.get_secret_value(), algorithm=settings.jwt_algorithm)
    )


def order_cursor(settings: Settings, admin_id: str, created_at: Any, order_id: Any) -> str:
    """The cursor the API hands an admin after the order (`created_at`, `order_id`) in the list
    of every order, signed like the app signs it; '' when this tree has no cursor pages."""
    try:
        from app.features.orders.cursor import order_list_cursor  # type: ignore[import-not-found]
    except ImportError:
        return ""
    return str(
        order_list_cursor(settings, caller=admin_id, created_at=created_at, order_id=order_id)
    )
