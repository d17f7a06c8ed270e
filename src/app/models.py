"""Every table of the application, imported in one place for Alembic and the drift check.

Add a feature's `models` module here when it gains tables.
"""

from app.core.database import metadata

__all__ = ["metadata"]
