"""The OpenAPI document under contract, built once at import (collection) time."""

from __future__ import annotations

import schemathesis
from email_validator import EmailNotValidError, validate_email
from hypothesis import strategies as st

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
        storage_url="s3://openapi?endpoint=http://localhost:9000",
        # What the test Settings use: create_app configures the process's logging.
        log_format="json",
        _env_file=None,
    )
    return create_app(placeholder).openapi()


def _accepted_email(address: str) -> bool:
    try:
        validate_email(address, check_deliverability=False)
    except EmailNotValidError:
        return False
    return True


# `format: email` as the app validates it (email-validator, API.md): JSON Schema's email format
# also allows special-use domains (`.arpa`, `.local`, ...) that email-validator refuses, which
# would make every such draw a false "valid data rejected".
schemathesis.openapi.format("email", st.emails().filter(_accepted_email))

ACCEPTED = ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
CONFIG = schemathesis.Config.from_dict(
    {
        "checks": {
            # Well-formed input that the rules refuse: 400 is INVALID_TOKEN (an unknown
            # verification or reset token) and INVALID_CREDENTIALS (a wrong current password).
            "positive_data_acceptance": {"expected-statuses": ACCEPTED},
        },
        "operations": [
            {
                # An order line naming a product that does not exist is a 422 on its field
                # (`product_unavailable`): no schema can say which ids exist.
                "include-path": "/api/v1/orders",
                "include-method": "POST",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
            },
            {
                # A cursor is valid only when the server signed it for this list, its filters
                # and this caller, and the two pagination forms exclude each other (API.md,
                # Cursor pages): both are 422, and no parameter schema can say so.
                "include-path": "/api/v1/products",
                "include-method": "GET",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
            },
            {
                "include-path": "/api/v1/orders",
                "include-method": "GET",
                "checks": {"positive_data_acceptance": {"expected-statuses": [*ACCEPTED, "422"]}},
            },
        ],
    }
)

schema = schemathesis.openapi.from_dict(_document(), config=CONFIG)
