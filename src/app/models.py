"""Every table of the application, imported in one place for Alembic and the drift check.

Add a feature's `models` module here when it gains tables.
"""

import app.core.outbox  # noqa: F401  (tables: outbox, email_deliveries)
from app.core.database import metadata

__all__ = ["metadata"]
