"""Every table of the application, imported in one place for Alembic and the drift check.

Add a feature's `models` module here when it gains tables.
"""

from app.core import email_deliveries as email_models
from app.core import idempotency as idempotency_models
from app.core import outbox as outbox_models
from app.core.database import metadata
from app.features.auth import models as auth_models
from app.features.events import models as events_models
from app.features.orders import models as orders_models
from app.features.organizations import models as organizations_models
from app.features.products import models as products_models
from app.features.users import models as users_models

__all__ = [
    "auth_models",
    "email_models",
    "events_models",
    "idempotency_models",
    "metadata",
    "orders_models",
    "organizations_models",
    "outbox_models",
    "products_models",
    "users_models",
]
