"""Errors of the event streams."""

from __future__ import annotations

from app.core.errors import ForbiddenError


class InsufficientScopeError(ForbiddenError):
    """An API key on a route that no API key may use (API.md: the event streams)."""

    code = "INSUFFICIENT_SCOPE"
    default_detail = "API keys cannot open event streams; use a user's access token"
