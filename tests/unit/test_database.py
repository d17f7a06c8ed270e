from __future__ import annotations

import re
import time

from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateTable

import app.models  # noqa: F401  (registers every table on the metadata)
from app.core.database import metadata, uuid7


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = []
    for _ in range(50):
        ids.append(uuid7())
        time.sleep(0.001)
    assert all(value.version == 7 for value in ids)
    assert all(value.variant == "specified in RFC 4122" for value in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_every_table_names_its_constraints_by_the_convention() -> None:
    """Alembic compares constraints by name: a table whose keys, checks or indexes were named by
    PostgreSQL (`orders_pkey`) could not be migrated reliably. The convention names them all."""
    dialect = postgresql.dialect()
    assert len(metadata.sorted_tables) > 10  # app.models registered every table
    offenders = []
    for table in metadata.sorted_tables:
        ddl = str(CreateTable(table).compile(dialect=dialect))
        if f"CONSTRAINT pk_{table.name} PRIMARY KEY" not in ddl:
            offenders.append(f"{table.name}: primary key")
        named = re.findall(r"CONSTRAINT (\w+)", ddl)
        unnamed = ddl.count("FOREIGN KEY") + ddl.count("UNIQUE") + ddl.count("CHECK") + 1
        if len(named) < unnamed:
            offenders.append(f"{table.name}: {unnamed - len(named)} unnamed constraint(s)")
        names = named + [str(index.name) for index in table.indexes]
        offenders.extend(
            f"{table.name}: {name}"
            for name in names
            if not re.fullmatch(rf"(pk|uq|ck|fk|ix)_{table.name}(_\w+)?", name)
        )
    assert offenders == []
