"""The OpenAPI document under contract, built once at import (collection) time."""

from __future__ import annotations

import schemathesis

from app.config import load_settings
from app.main import create_app


def _document() -> dict[str, object]:
    """The OpenAPI document, as `saas openapi` prints it: building it needs no services.

    The operations are parametrized at collection time, before any fixture has a database; the
    requests go to a real app (`contract_app`) whose served document is checked to be this one.
    """
    placeholder = load_settings(
        environment="test",
        database_url="postgresql+asyncpg://localhost/openapi",
        redis_url="redis://localhost:6379/0",
        jwt_secret="contract-document-only-" + "x" * 16,
        # What the test Settings use: create_app configures the process's logging.
        log_format="json",
        _env_file=None,
    )
    return create_app(placeholder).openapi()


schema = schemathesis.openapi.from_dict(_document())
