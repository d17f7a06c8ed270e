"""The streams are documented: AsyncAPI 3 for the WebSocket, OpenAPI for SSE."""

from __future__ import annotations

from typing import Any

from httpx import AsyncClient


def _resolve(document: dict[str, Any], ref: str) -> Any:
    node: Any = document
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [ref for value in node.values() for ref in _refs(value)]
    if isinstance(node, list):
        return [ref for value in node for ref in _refs(value)]
    return []


async def test_asyncapi_describes_the_websocket_channel_and_its_messages(
    client: AsyncClient,
) -> None:
    response = await client.get("/asyncapi.json")
    assert response.status_code == 200
    document = response.json()
    assert document["asyncapi"] == "3.0.0"
    channel = document["channels"]["events"]
    assert channel["address"] == "/api/v1/events/ws"
    assert set(channel["messages"]) == {"auth", "ready", "event", "reset"}
    operations = document["operations"]
    assert operations["authenticate"]["action"] == "send"
    assert operations["receiveEvents"]["action"] == "receive"
    # Every reference resolves (no dangling $ref to a schema that is not there).
    for ref in _refs(document):
        assert _resolve(document, ref) is not None, ref
    schemas = document["components"]["schemas"]
    event = schemas["EventMessage"]
    assert set(event["required"]) >= {"type", "id", "event", "data", "at"}
    assert event["properties"]["event"]["enum"] == ["order.created", "order.status_changed"]
    assert event["properties"]["data"]["$ref"].endswith("/OrderOut")
    assert "OrderOut" in schemas
    auth = schemas["AuthMessage"]
    assert set(auth["required"]) == {"type", "access_token"}
    assert "4401" in document["info"]["description"]


async def test_the_openapi_document_describes_the_sse_stream(client: AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    operation = document["paths"]["/api/v1/events"]["get"]
    ok = operation["responses"]["200"]["content"]
    assert list(ok) == ["text/event-stream"]
    assert "id: " in ok["text/event-stream"]["example"]
    for status in ("401", "403", "503"):
        assert list(operation["responses"][status]["content"]) == ["application/problem+json"]
    headers = [p["name"] for p in operation["parameters"] if p["in"] == "header"]
    assert headers == ["Last-Event-ID"]
    assert operation["security"]
    # The WebSocket is not an HTTP operation: it is in the AsyncAPI document instead.
    assert "/api/v1/events/ws" not in document["paths"]
