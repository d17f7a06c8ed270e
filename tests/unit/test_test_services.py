"""The tests' own plumbing: each pytest-xdist worker gets a Redis database of its own."""

from __future__ import annotations

import pytest

from tests.services import redis_database_of_worker


@pytest.mark.parametrize(
    ("url", "worker", "expected"),
    [
        ("redis://127.0.0.1:6379/15", None, "redis://127.0.0.1:6379/15"),
        ("redis://127.0.0.1:6379/15", "gw0", "redis://127.0.0.1:6379/15"),
        ("redis://127.0.0.1:6379/15", "gw2", "redis://127.0.0.1:6379/13"),
        ("redis://h:1", "gw1", "redis://h:1/1"),
        ("redis://h:1/1?ssl_cert_reqs=none", "gw3", "redis://h:1/4?ssl_cert_reqs=none"),
    ],
)
def test_each_worker_has_its_own_database(url: str, worker: str | None, expected: str) -> None:
    assert redis_database_of_worker(url, worker) == expected


def test_a_worker_without_a_database_left_is_refused() -> None:
    with pytest.raises(pytest.UsageError, match="no Redis database for xdist worker gw16"):
        redis_database_of_worker("redis://h:1/0", "gw16")
