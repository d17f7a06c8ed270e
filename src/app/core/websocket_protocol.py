"""uvicorn's WebSocket protocol for `saas serve` and `saas dev`: the one uvicorn picks by default
(websockets' sans-I/O binding), minus the handshake it keeps for the connection's whole life.

uvicorn holds the parsed upgrade request and the 101 response (their header maps) in the
protocol object after the handshake is done, about 4 KB per connection, and never reads them
again: they are dropped once the connection is accepted. Everything else is uvicorn's own.
"""

from __future__ import annotations

from uvicorn._types import ASGISendEvent
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

# What `saas serve` and `saas dev` hand uvicorn (`ws=`): an import string, as for the app.
WEBSOCKET_PROTOCOL = "app.core.websocket_protocol:WebSocketProtocol"


class WebSocketProtocol(WebSocketsSansIOProtocol):
    async def send(self, message: ASGISendEvent) -> None:
        await super().send(message)
        if self.handshake_complete and "response" in self.__dict__:
            # uvicorn reads both only until the handshake completes (the accept, or a denial).
            del self.request
            del self.response
