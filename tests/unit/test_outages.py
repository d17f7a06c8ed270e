"""Which exceptions are an outage of PostgreSQL or Redis (503, one line) and which are bugs."""

from __future__ import annotations

import errno

import asyncpg
import pytest
from redis import exceptions as redis_errors
from sqlalchemy import exc as sa_errors

from app.core.outages import describe, is_outage


def wrapped(orig: BaseException) -> sa_errors.DBAPIError:
    """As SQLAlchemy raises a driver error: its own class, the driver's as `orig`."""
    return sa_errors.OperationalError("SELECT 1", {}, orig)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ConnectionRefusedError(errno.ECONNREFUSED, "refused"), id="refused"),
        pytest.param(ConnectionResetError(errno.ECONNRESET, "reset"), id="reset"),
        pytest.param(TimeoutError(), id="connect-timeout"),
        pytest.param(sa_errors.TimeoutError("QueuePool limit reached"), id="pool-timeout"),
        pytest.param(asyncpg.exceptions.AdminShutdownError("terminating"), id="admin-shutdown"),
        pytest.param(asyncpg.exceptions.CannotConnectNowError("starting up"), id="starting-up"),
        # A pooled connection left mid-protocol by a server that went away under it.
        pytest.param(
            asyncpg.exceptions.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            ),
            id="left-mid-protocol",
        ),
        pytest.param(
            wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("closed mid-operation")),
            id="wrapped-closed-mid-operation",
        ),
        pytest.param(wrapped(asyncpg.InterfaceError("connection is closed")), id="closed"),
        pytest.param(redis_errors.ConnectionError("Connection refused"), id="redis-refused"),
        pytest.param(redis_errors.TimeoutError("Timeout reading"), id="redis-timeout"),
        pytest.param(
            FileNotFoundError(errno.ENOENT, "No such file", "/run/postgresql/.s.PGSQL.5432"),
            id="unix-socket-gone",
        ),
    ],
)
def test_lost_or_refused_connections_are_outages(exc: BaseException) -> None:
    assert is_outage(exc)


def _load_user() -> None:
    try:
        raise ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    except OSError as inner:
        raise RuntimeError("while loading the user") from inner


def test_a_cause_deep_in_the_chain_counts() -> None:
    with pytest.raises(RuntimeError) as info:
        _load_user()
    assert is_outage(info.value)


@pytest.mark.parametrize(
    "exc",
    [
        pytest.param(ValueError("bad"), id="bug"),
        pytest.param(KeyError("x"), id="key-error"),
        pytest.param(FileNotFoundError(errno.ENOENT, "No such file", "template.txt"), id="file"),
        pytest.param(wrapped(asyncpg.exceptions.UniqueViolationError("dup")), id="constraint"),
        pytest.param(asyncpg.InterfaceError("another operation in progress"), id="misuse"),
        pytest.param(redis_errors.ResponseError("WRONGTYPE"), id="redis-wrongtype"),
    ],
)
def test_bugs_and_refusals_by_the_server_are_not(exc: BaseException) -> None:
    assert not is_outage(exc)


def test_describe_is_one_short_line() -> None:
    text = describe(ConnectionRefusedError(errno.ECONNREFUSED, "refused\nsecond line"))
    assert "\n" not in text
    assert text.startswith("ConnectionRefusedError: ")
