"""Every table of the application, imported in one place for Alembic and the drift check.

Add a feature's `models` module here when it gains tables.
"""

from app.core import outbox as outbox_models
from app.core.database import metadata
from app.features.users import models as users_models

__all__ = ["metadata", "outbox_models", "users_models"]
