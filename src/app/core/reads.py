"""The read side: compiled read queries and the read-only connection that read routes receive.

Writes go router -> service -> repository through the ORM session and its one transaction
(`app.core.database`). Hot reads skip the ORM: SQLAlchemy's statement and row machinery costs
several times the query itself (a user's row by primary key: 30 us of CPU through asyncpg,
250-400 us through `session.get`). A read route declares `ReadConnectionDep` (never
`SessionDep`) and hands it to its feature's `queries.py`, which returns typed, frozen views.

Queries are SQLAlchemy Core statements built from the tables' metadata and compiled once, at
import, for asyncpg (`ReadQuery`): no SQL text is assembled by hand, and a renamed or dropped
column fails at import instead of in production. `ReadConnection` can only run such queries, in
autocommit (PostgreSQL's READ COMMITTED gives each statement its own snapshot anyway, and no
`BEGIN`/`COMMIT` round trips are spent); it has no way to write through the ORM.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.sql import Select

from app.core.outages import is_outage

# A row as asyncpg returns it (an `asyncpg.Record`): read by column name.
Row = Mapping[str, Any]

_DIALECT = asyncpg_dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True, slots=True)
class ReadQuery:
    """A SELECT compiled for asyncpg: its text and the names of its `$n` parameters in order."""

    text: str
    parameters: tuple[str, ...]

    def arguments(self, values: Mapping[str, Any]) -> list[Any]:
        missing = set(self.parameters) - values.keys()
        if missing:
            raise TypeError(f"missing query parameters: {sorted(missing)}")
        return [values[name] for name in self.parameters]


def read_query(statement: Select[Any]) -> ReadQuery:
    """Compile a Core SELECT (with named `bindparam`s) once, for `ReadConnection`."""
    compiled = statement.compile(dialect=_DIALECT)
    return ReadQuery(str(compiled), tuple(compiled.positiontup or ()))


class ReadConnection:
    """A pooled connection that runs compiled `ReadQuery`s and nothing else, outside any
    transaction.

    Only read routes receive one (`ReadConnectionDep`); services and repositories never do.
    The connection is checked out of the pool at the first query (a cached read needs none)
    and returned when the route ends.
    """

    __slots__ = ("_connection", "_driver", "_engine")

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._connection: AsyncConnection | None = None
        self._driver: Any = None

    async def _acquire(self) -> Any:
        if self._driver is None:
            connection = self._engine.connect()
            await connection.start()
            self._connection = connection
            raw = await connection.get_raw_connection()
            self._driver = raw.driver_connection
        return self._driver

    async def close(self) -> None:
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            await connection.close()

    async def _discard(self) -> None:
        """Drop the connection instead of returning it to the pool.

        The driver is used beneath SQLAlchemy, which therefore never sees its errors: a
        connection that failed under a query (the server shutting down sends an error, then
        closes the socket) would go back to the pool stuck mid-protocol, and the next request
        to take it would fail with "another operation is in progress".
        """
        connection, self._connection, self._driver = self._connection, None, None
        if connection is not None:
            try:
                await connection.invalidate()
            finally:
                await connection.close()

    async def _run(self, method: str, query: ReadQuery, values: Mapping[str, Any]) -> Any:
        driver = await self._acquire()
        arguments = query.arguments(values)
        try:
            return await getattr(driver, method)(query.text, *arguments)
        except Exception as exc:
            if is_outage(exc) or not _is_server_error(exc):
                await self._discard()
            raise

    async def fetch(self, query: ReadQuery, **values: Any) -> Sequence[Row]:
        rows: Sequence[Row] = await self._run("fetch", query, values)
        return rows

    async def fetchrow(self, query: ReadQuery, **values: Any) -> Row | None:
        row: Row | None = await self._run("fetchrow", query, values)
        return row

    async def fetchval(self, query: ReadQuery, **values: Any) -> Any:
        return await self._run("fetchval", query, values)


def _is_server_error(exc: BaseException) -> bool:
    """An error the server reported for the statement (the connection stays usable)."""
    return any(
        cls.__name__ == "PostgresError" and cls.__module__.startswith("asyncpg")
        for cls in type(exc).__mro__
    )


async def get_read_connection(request: Request) -> AsyncIterator[ReadConnection]:
    """The request's read connection (function scope: back in the pool before the response)."""
    connection = ReadConnection(request.app.state.engine)
    try:
        yield connection
    finally:
        await connection.close()


ReadConnectionDep = Annotated[ReadConnection, Depends(get_read_connection, scope="function")]
