"""What an outage of PostgreSQL or Redis looks like from inside the app, and how it is answered.

A request that needs a service that is down (connection refused, reset, dropped by a restart,
the pool's wait for a connection timed out) gets 503 `SERVICE_UNAVAILABLE` with `Retry-After`,
and the process logs one warning line for it: no traceback, since a traceback per request during
an outage buries the one line that says what happened. The worker treats a job that met an
outage the same way: one line, and the job is tried again later (see `app.worker`).

`is_outage` walks the exception and its causes, since SQLAlchemy wraps the driver's errors
(asyncpg's, OSError) in its own.
"""

from __future__ import annotations

import asyncio
import errno

from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors

# Seconds a client is told to wait before trying again (`Retry-After` of a 503).
RETRY_AFTER_SECONDS = 5

_CONNECTION_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENOTCONN,
        errno.ESHUTDOWN,
    }
)

# asyncpg's errors (matched by name: the driver itself is the read side's business, see
# tests/unit/test_architecture.py): the server went away, is shutting down or starting up,
# refused a connection or has none left.
_ASYNCPG_OUTAGES = frozenset(
    {
        "ConnectionDoesNotExistError",
        "PostgresConnectionError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "TooManyConnectionsError",
    }
)

_OUTAGE_TYPES: tuple[type[BaseException], ...] = (
    # PostgreSQL: the pool waited too long for a connection; a connection found dead.
    sa_errors.TimeoutError,
    sa_errors.DisconnectionError,
    # Redis: refused, reset, timed out, still loading its data after a restart.
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    redis_errors.BusyLoadingError,
    # A connect or a read that timed out (asyncio.TimeoutError is TimeoutError).
    asyncio.TimeoutError,
    ConnectionError,
)


def is_outage(exc: BaseException) -> bool:
    """Whether `exc`, or an exception it was raised from, is a lost or refused connection."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [exc]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, _OUTAGE_TYPES):
            return True
        if isinstance(current, sa_errors.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) and current.errno in _CONNECTION_ERRNOS:
            return True
        if isinstance(current, OSError) and _is_missing_socket(current):
            return True
        if _is_asyncpg_outage(current):
            return True
        pending.extend((current.__cause__, current.__context__))
        orig = getattr(current, "orig", None)
        if isinstance(orig, BaseException):
            pending.append(orig)
    return False


def _is_asyncpg_outage(exc: BaseException) -> bool:
    for cls in type(exc).__mro__:
        if not cls.__module__.startswith("asyncpg"):
            continue
        if cls.__name__ in _ASYNCPG_OUTAGES:
            return True
        if cls.__name__ == "InterfaceError" and "closed" in str(exc):
            return True  # "connection is closed": the server dropped it under us
        if cls.__name__ == "InternalClientError" and "another operation" in str(exc):
            # A connection a restarting server left mid-protocol, found by the next query:
            # unusable (`ReadConnection` drops it), as much an outage as a closed one.
            return True
    return False


def _is_missing_socket(exc: OSError) -> bool:
    # A unix-socket server that is stopped has no socket file to connect to.
    return exc.errno == errno.ENOENT and ".s.PGSQL." in str(exc.filename or exc)


def describe(exc: BaseException) -> str:
    """The exception's class and first line, for the one log line of an outage."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300] if text else type(exc).__name__
