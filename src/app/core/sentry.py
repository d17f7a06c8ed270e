"""Error reports to Sentry, when `APP_SENTRY_DSN` is set; scrubbed like the logs.

Nothing is loaded without a DSN. With one, `sentry_sdk` reports unhandled errors and
`log.error`/`log.exception` lines (through its logging integration), and `scrub_event` runs on
every event before it leaves the process:

- request bodies, cookies and query strings are dropped (`max_request_body_size="never"`, and
  `data`, `cookies`, `query_string` removed in case an integration added them);
- headers keep their names, and values of names that look secret (the same rule as the logs:
  password, secret, token, authorization, cookie, hash) become `[REDACTED]`, as do such keys
  anywhere in `extra`, `contexts`, breadcrumbs' data, tags and stack frames' local variables;
- no personal data: `send_default_pii=False` (no user IP, no user object).
"""

from __future__ import annotations

from typing import Any

from app.config import Settings
from app.core.logging import _is_secret_key

REDACTED = "[REDACTED]"
_DROPPED_REQUEST_FIELDS = ("data", "cookies", "query_string", "env")


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 20:
        return value
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and _is_secret_key(key)
            else _scrub(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_scrub(item, depth + 1) for item in value]
    return value


def scrub_event(event: dict[str, Any], _hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """Sentry's `before_send` (and `before_send_transaction`): what may leave the process."""
    request = event.get("request")
    if isinstance(request, dict):
        for field in _DROPPED_REQUEST_FIELDS:
            request.pop(field, None)
        headers = request.get("headers")
        if isinstance(headers, dict):
            request["headers"] = _scrub(headers)
    for field in ("extra", "contexts", "tags"):
        if field in event:
            event[field] = _scrub(event[field])
    breadcrumbs = event.get("breadcrumbs")
    values = breadcrumbs.get("values") if isinstance(breadcrumbs, dict) else breadcrumbs
    for crumb in values or []:
        if isinstance(crumb, dict) and "data" in crumb:
            crumb["data"] = _scrub(crumb["data"])
    for exception in (event.get("exception") or {}).get("values") or []:
        for frame in (exception.get("stacktrace") or {}).get("frames") or []:
            # Locals can hold passwords and tokens (the logs print no locals either).
            frame.pop("vars", None)
    event.pop("user", None)
    return event


def setup_sentry(settings: Settings, *, component: str) -> bool:
    """Start the Sentry client when a DSN is configured; returns whether it did."""
    if settings.sentry_dsn is None:
        return False
    import sentry_sdk

    sentry_sdk.init(
        dsn=settings.sentry_dsn.get_secret_value(),
        environment=settings.environment,
        server_name=component,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=settings.sentry_traces_sample_rate,
        before_send=scrub_event,  # type: ignore[arg-type]
        before_send_transaction=scrub_event,  # type: ignore[arg-type]
    )
    sentry_sdk.set_tag("component", component)
    return True
