"""Errors of the event streams."""

from __future__ import annotations

from app.core.errors import InsufficientScopeError as _InsufficientScopeError


class InsufficientScopeError(_InsufficientScopeError):
    """An API key on a route that no API key may use (API.md: the event streams)."""

    default_detail = "API keys cannot open event streams; use a user's access token"
