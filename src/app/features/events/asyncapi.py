"""The AsyncAPI 3 document of the WebSocket transport, served at `/asyncapi.json`.

Built from the same pydantic models that parse and describe the messages, so it cannot drift
from what the server sends.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from app.features.events.schemas import AuthMessage, EventMessage, ReadyMessage, ResetMessage

_REF = "#/components/schemas/{model}"

_MESSAGES: dict[str, tuple[type[BaseModel], str, str]] = {
    "auth": (
        AuthMessage,
        "Authenticate (first message)",
        "Sent by the client first, within 5 s of the handshake. A missing, late or invalid "
        "one closes the connection with 4401; a live API key closes it with 4403. Any later "
        "message from the client is ignored.",
    ),
    "ready": (
        ReadyMessage,
        "Subscribed",
        "The auth message was accepted. Every event committed from now on is delivered.",
    ),
    "event": (
        EventMessage,
        "An order event",
        "`order.created` or `order.status_changed` (a cancellation included), with the order "
        "as it is after the change. Ids increase; each event is delivered once.",
    ),
    "reset": (
        ResetMessage,
        "Resume not possible",
        "The `last_event_id` is malformed, unknown or older than the events kept (at least "
        "one hour): refetch what you show, then resume from this id.",
    ),
}

_CLOSE_CODES = (
    "Close codes: 4401 missing, late or invalid auth message, session revoked or access token "
    "expired (reconnect with a fresh token); 4403 a live API key; 1008 the client read too slowly "
    "(more than 1,000 live events queued); 1011 a ping went unanswered until the next one "
    "(reconnect); 1012 the server is restarting (reconnect); 1013 sessions cannot be checked "
    "right now (reconnect later). The server sends a ping frame at least every 25 s; a client "
    "answers it with a pong (browsers do by themselves)."
)


def _schemas() -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    for model, _title, _description in _MESSAGES.values():
        schema = model.model_json_schema(ref_template=_REF, mode="serialization")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    return schemas


def build_asyncapi(*, title: str, version: str) -> dict[str, Any]:
    channel_messages = {name: {"$ref": f"#/components/messages/{name}"} for name in _MESSAGES}
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": f"{title} events",
            "version": version,
            "description": "Order events over a WebSocket at `/api/v1/events/ws`. The same "
            "events are served as Server-Sent Events at `GET /api/v1/events` (see the OpenAPI "
            "document). Authentication is the first message, never the URL. " + _CLOSE_CODES,
        },
        "defaultContentType": "application/json",
        "channels": {
            "events": {
                "address": "/api/v1/events/ws",
                "title": "Order events",
                "description": "One connection per client. Messages in order: `ready`; when "
                "resuming, the replayed events or one `reset`; then live events.",
                "messages": channel_messages,
                "bindings": {
                    "ws": {
                        "method": "GET",
                        "bindingVersion": "0.1.0",
                        "headers": {
                            "type": "object",
                            "properties": {
                                "Origin": {
                                    "type": "string",
                                    "description": "When present, must be one of the "
                                    "configured CORS origins: else 403 before the handshake.",
                                }
                            },
                        },
                    }
                },
            }
        },
        "operations": {
            "authenticate": {
                "action": "send",
                "channel": {"$ref": "#/channels/events"},
                "summary": "Authenticate and optionally resume",
                "messages": [{"$ref": "#/channels/events/messages/auth"}],
            },
            "receiveEvents": {
                "action": "receive",
                "channel": {"$ref": "#/channels/events"},
                "summary": "Receive ready, replayed or reset, then live events",
                "messages": [
                    {"$ref": f"#/channels/events/messages/{name}"}
                    for name in ("ready", "event", "reset")
                ],
            },
        },
        "components": {
            "messages": {
                name: {
                    "name": name,
                    "title": title_,
                    "summary": title_,
                    "description": description,
                    "contentType": "application/json",
                    "payload": {"$ref": _REF.format(model=model.__name__)},
                }
                for name, (model, title_, description) in _MESSAGES.items()
            },
            "schemas": _schemas(),
        },
    }
