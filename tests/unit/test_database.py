from __future__ import annotations

import time

from app.core.database import NAMING_CONVENTION, metadata, uuid7


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = []
    for _ in range(50):
        ids.append(uuid7())
        time.sleep(0.001)
    assert all(value.version == 7 for value in ids)
    assert all(value.variant == "specified in RFC 4122" for value in ids)
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)


def test_metadata_names_constraints_deterministically() -> None:
    assert metadata.naming_convention == NAMING_CONVENTION
    assert NAMING_CONVENTION["pk"] == "pk_%(table_name)s"
