"""The errors of accounts, rendered as Problem Details by the core handlers."""

from __future__ import annotations

import uuid

from app.core.errors import ConflictError, NotFoundError


class EmailTakenError(ConflictError):
    code = "EMAIL_TAKEN"
    default_detail = "An account with this email already exists"


class UserNotFoundError(NotFoundError):
    def __init__(self, user_id: uuid.UUID) -> None:
        super().__init__(f"User {user_id} not found")


class LastAdminError(ConflictError):
    code = "LAST_ADMIN"
    default_detail = "This is the last active admin; promote another admin first"
